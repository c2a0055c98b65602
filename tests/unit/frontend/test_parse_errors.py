"""Syntax errors: every failure is a located `ParseError` with a readable message."""
from __future__ import annotations

import pytest

from tdsl.errors import ParseError, SourceLoc, TdslError
from tdsl.frontend.limits import LimitError
from tdsl.frontend.parser import parse_program

# (source, line, col, message)
ERRORS = [
    ("let x = }", 1, 9, "unexpected '}', expected an expression"),
    ("let $x = 1", 1, 5, "unexpected character '$'"),
    ("let é = 1", 1, 5, "unexpected character 'é'"),
    ('let s = "abc', 1, 9, "unterminated string"),
    ("layer A {\n  let x = 1\n", 2, 12, "unexpected end of input, expected a statement or '}'"),
    ("layer A {\n  fn f() { }\n}\n}", 4, 1, "unexpected '}', expected a statement"),
    ("let x = f(a, b\n", 1, 15, "unexpected end of input, expected ')', ',' or '='"),
    ("let x = f(a\nlet y = 2", 2, 1, "unexpected 'let', expected ')', ',' or '='"),
    ("if (x > 0 { y = 1 }", 1, 11, "unexpected '{', expected ')'"),
    ("let x = 1 2", 1, 11, "unexpected '2', expected a newline or ';'"),
    ("let x =\n1", 1, 8, "unexpected newline, expected an expression"),
    ("let = 3", 1, 5, "unexpected '=', expected a name"),
    ("for i range(3) { }", 1, 7, "unexpected 'range', expected 'in'"),
    ("@buffer x = 1", 1, 9, "unexpected 'x', expected 'let'"),
    ("else { }", 1, 1, "unexpected 'else', expected a statement"),
    ("let x = 1\nelse { }", 2, 1, "unexpected 'else', expected a statement"),
    ("layer { }", 1, 7, "unexpected '{', expected a name"),
    ("let x = [...]", 1, 9, "'...' in a list must follow at least one element"),
    ("f(a) = 3", 1, 1, "can only assign to a name or an element `x[i]`"),
    ("f(k=1, 2)", 1, 8, "positional argument after a keyword argument"),
    ("f(k=1, k=2)", 1, 8, "keyword argument 'k' given twice"),
    ("fn f(a, a) { }", 1, 9, "duplicate parameter 'a'"),
    ("let x: flaot32 = 1", 1, 8, "unknown type 'flaot32' (did you mean 'float32'?)"),
    ("let x: Tensor[float64, 3]", 1, 15,
     "Tensor dtype must be one of float32, float16, int8, int32, trit"),
    ("let x: int8[4]", 1, 8, "'int8' takes no [...]: only Tensor and TernaryTensor do"),
    ("let x: tensor", 1, 8, "'tensor' needs a dtype and shape: tensor<float32, [B, 784]>"),
    ("let x = TernaryTensor[2]([1, ...])", 1, 26,
     "a TernaryTensor literal lists every value; '...' is not allowed"),
]


@pytest.mark.parametrize(("source", "line", "col", "message"), ERRORS)
def test_syntax_error_message_and_location(source: str, line: int, col: int,
                                           message: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_program(source, "bad.tdsl")
    assert info.value.message == message
    assert info.value.loc == SourceLoc("bad.tdsl", line, col)


@pytest.mark.parametrize(("source", "rendered"), [
    ("let x = 1\nlet y = (x + 2\n", (
        "bad.tdsl:2:15: error: unexpected end of input, expected ')'\n"
        "let y = (x + 2\n"
        "              ^")),
    ("layer A {\n    let w = $\n}", (
        "bad.tdsl:2:13: error: unexpected character '$'\n"
        "    let w = $\n"
        "            ^")),
    ("fn f() {\n\treturn }\n}", (
        "bad.tdsl:3:1: error: unexpected '}', expected a statement\n"
        "}\n"
        "^")),
])
def test_render(source: str, rendered: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_program(source, "bad.tdsl")
    assert str(info.value) == rendered


def test_deep_nesting_is_a_located_limit_error() -> None:
    with pytest.raises(LimitError, match="nests more than 200 levels") as info:
        parse_program("let x = " + "-(" * 5000 + "1" + ")" * 5000)
    assert info.value.loc is not None and info.value.loc.line == 1 and info.value.loc.col > 200


SOURCE = """\
layer Block(cin: int, cout: int = 4,) {
    @buffer let mean: Tensor[float32, cout] = zeros([cout])
    let w = TernaryTensor[2, 2]([1, 0, -1, 1])
    fn forward(x: Tensor[float32, N, cin]) -> tensor<float32, [N, 4]> {
        if x.shape[0] > 1 and not false { return relu(x @ w + mean) } else { return x }
    }
}
"""


@pytest.mark.parametrize("end", range(len(SOURCE) + 1))
def test_every_prefix_parses_or_raises_tdsl_error(end: int) -> None:
    """No lark exception escapes, whatever point the text is cut at."""
    try:
        parse_program(SOURCE[:end])
    except TdslError as err:
        assert err.loc is not None and err.loc.line >= 1 and err.loc.col >= 1
