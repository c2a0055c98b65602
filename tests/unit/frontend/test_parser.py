"""Parser tests: source text -> AST shapes and locations, for both `.tri` dialects and tdsl."""
from __future__ import annotations

import logging

import pytest
from lark import Lark, logger

from tdsl.errors import SourceLoc
from tdsl.frontend import ast as A
from tdsl.frontend import parser as P
from tdsl.frontend.parser import parse_program, parse_program_or_file

ORIGINAL_PROGRAM = """\
# Triton DSL Test Program
let w: trit = 1
let x: trit = -1
let z: trit = 0

layer SimpleTernary(in_features: int, out_features: int) -> TernaryTensor {
    let W: TernaryTensor = random_ternary([out_features, in_features])

    fn forward(x: Tensor[float16]) -> Tensor[float16] {
        let output = ternary_matmul(x, W)
        return output
    }
}
"""


def loc(line: int, col: int, file: str = "<input>") -> SourceLoc:
    return SourceLoc(file, line, col)


def only(text: str) -> A.Stmt:
    """The single statement of a one-statement program."""
    (stmt,) = parse_program(text).body
    return stmt


def expr(text: str) -> A.Expr:
    """The expression `text`, parsed as `let v = text`."""
    stmt = only(f"let v = {text}")
    assert isinstance(stmt, A.Let) and stmt.value is not None
    return stmt.value


def test_one_line_original_program() -> None:
    program = parse_program("let x: trit = 1")
    assert program.loc == loc(1, 1)
    assert program.body == (A.Let(loc(1, 1), "x", A.ScalarType(loc(1, 8), "trit"),
                                  A.IntLit(loc(1, 15), 1)),)


def test_original_test_program() -> None:
    program = parse_program(ORIGINAL_PROGRAM, "simple.tri")
    w, x, z, layer = program.body
    assert [s.name for s in (w, x, z)] == ["w", "x", "z"]
    assert x.value == A.UnaryOp(loc(3, 15, "simple.tri"), "-",
                                A.IntLit(loc(3, 16, "simple.tri"), 1))
    assert isinstance(layer, A.LayerDef) and layer.loc == loc(6, 1, "simple.tri")
    assert [(p.name, p.type.name) for p in layer.params] == [("in_features", "int"),
                                                              ("out_features", "int")]
    assert layer.ret == A.TensorTypeExpr(loc(6, 61, "simple.tri"), "trit", None, ternary=True)
    weight, forward = layer.body
    assert isinstance(weight, A.Let) and weight.name == "W"
    assert isinstance(weight.value, A.Call) and weight.value.func.id == "random_ternary"
    assert isinstance(forward, A.FnDef) and forward.loc == loc(9, 5, "simple.tri")
    assert forward.params[0].type == A.TensorTypeExpr(loc(9, 19, "simple.tri"), "float16", None)
    let_out, ret = forward.body
    assert let_out.loc == loc(10, 9, "simple.tri")
    assert ret == A.Return(loc(11, 9, "simple.tri"), A.Name(loc(11, 16, "simple.tri"), "output"))
    assert program.layers == (layer,) and program.file == "simple.tri"


# Every example of shared/OLD_SYNTAX.md sections 1 and 2, with the statement kinds parsed.
OLD_SYNTAX_EXAMPLES = [
    ("let w: TernaryTensor = TernaryTensor[2, 2](1, 0, -1, 1)", [A.Let]),
    ("layer add(x: int8, y: int8) -> int8 { return x + y }", [A.LayerDef]),
    ("let z: float32 = A @ B", [A.Let]),
    ("let x: tensor<float32, [B, 784]>", [A.Let]),
    ("return", [A.Return]),
    ("x = [a, b, ...]", [A.Assign]),
    ("let a: int8 = 1 let b: int8 = 2", [A.Let, A.Let]),
    ("fn forward(x: TernaryTensor) -> TernaryTensor { return x; }", [A.FnDef]),
    ("fn f() { return x + y }", [A.FnDef]),
    ("layer DenseLayer { let weights: TernaryTensor[128, 256] = ...; "
     "fn forward(input: TernaryTensor[100, 128]) -> TernaryTensor[100, 256] "
     "{ return input @ weights } }", [A.LayerDef]),
    ("let output = x @ weights;", [A.Let]),
    ("let bias: TernaryTensor[256] = ...;", [A.Let]),
    ("fn forward(x: Tensor[float16]) -> Tensor[float16] { return x }", [A.FnDef]),
    ("let n: int = 3", [A.Let]),
    ("((1 + 2) + 3)", [A.ExprStmt]),
    ("1 + 2 * 3 - 4 / 5", [A.ExprStmt]),
    ("if (x > 0) { y = 1 } else { y = 0 }", [A.If]),
    ("TernaryTensor[2,2]([1, 0, -1, 1])", [A.ExprStmt]),
    ("TernaryTensor[[[1, 2], 3], 4]([1, 0, -1])", [A.ExprStmt]),
    ("x[0]", [A.ExprStmt]),
    ("matrix[10, 20]", [A.ExprStmt]),
    ("arr[...]", [A.ExprStmt]),
    ("let x: trit = -1\r\nlet y = x-1\r\n", [A.Let, A.Let]),
    ("", []),
]


@pytest.mark.parametrize(("source", "kinds"), OLD_SYNTAX_EXAMPLES)
def test_old_syntax_examples(source: str, kinds: list[type]) -> None:
    assert [type(s) for s in parse_program(source).body] == kinds


def test_ternary_literal_forms() -> None:
    flat = expr("TernaryTensor[2, 2](1, 0, -1, 1)")
    listed = expr("TernaryTensor[2,2]([1, 0, -1, 1])")
    for lit in (flat, listed):
        assert isinstance(lit, A.TernaryLiteral) and lit.loc == loc(1, 9)
        assert [d.value for d in lit.shape] == [2, 2]
        assert len(lit.values) == 4 and lit.values[2].op == "-"
    nested = expr("TernaryTensor[[[1, 2], 3], 4]([1, 0, -1])")
    assert isinstance(nested.shape[0], A.ListLit) and nested.shape[1] == A.IntLit(loc(1, 36), 4)


def test_old_tensor_type_keeps_shape() -> None:
    let = only("let x: tensor<float32, [B, 784]>")
    assert let.value is None
    assert let.type == A.TensorTypeExpr(loc(1, 8), "float32",
                                        (A.Name(loc(1, 25), "B"), A.IntLit(loc(1, 28), 784)))


def test_open_tail_list() -> None:
    assert expr("[a, b, ...]") == A.ListLit(loc(1, 9), (A.Name(loc(1, 10), "a"),
                                                        A.Name(loc(1, 13), "b")), open_tail=True)
    assert expr("[]") == A.ListLit(loc(1, 9), ())


def test_statements_on_one_line_and_semicolons() -> None:
    a, b = parse_program("let a: int8 = 1 let b: int8 = 2").body
    assert (a.name, a.loc, b.name, b.loc) == ("a", loc(1, 1), "b", loc(1, 17))
    c, d, e = parse_program("x = 1; y = 2;\n;\nz = 3").body
    assert [s.target.id for s in (c, d, e)] == ["x", "y", "z"]
    assert e.loc == loc(3, 1)


def test_minus_is_unary_or_binary() -> None:
    assert expr("x-1") == A.BinOp(loc(1, 9), "-", A.Name(loc(1, 9), "x"), A.IntLit(loc(1, 11), 1))
    assert expr("- -1") == A.UnaryOp(loc(1, 9), "-",
                                     A.UnaryOp(loc(1, 11), "-", A.IntLit(loc(1, 12), 1)))


def test_newline_ends_statement_outside_brackets() -> None:
    a, b = parse_program("let a = x\n-1").body
    assert a.value == A.Name(loc(1, 9), "x")
    assert b == A.ExprStmt(loc(2, 1), A.UnaryOp(loc(2, 1), "-", A.IntLit(loc(2, 2), 1)))


def test_carriage_returns_are_whitespace() -> None:
    program = parse_program("let a = 1\r\n\r\nlet b = 2\r\n")
    assert [(s.name, s.loc) for s in program.body] == [("a", loc(1, 1)), ("b", loc(3, 1))]


def test_layer_without_params_and_top_level_fn() -> None:
    program = parse_program("fn helper(a, b: int = 2) -> int { return a }\n"
                            "layer Net {\n  fn forward(x) { return helper(x) }\n}")
    helper, net = program.body
    assert program.functions == (helper,)
    assert [(p.name, p.type, p.default) for p in helper.params] == [
        ("a", None, None), ("b", A.ScalarType(loc(1, 17), "int"), A.IntLit(loc(1, 23), 2))]
    assert net == A.LayerDef(loc(2, 1), "Net", (), None, (net.body[0],))
    assert net.body[0].name == "forward" and net.body[0].loc == loc(3, 3)


def test_layer_params_defaults_and_trailing_comma() -> None:
    layer = only("layer Block(\n    cin: int,\n    stride: int = 1,\n) { }")
    assert [(p.name, p.loc) for p in layer.params] == [("cin", loc(2, 5)), ("stride", loc(3, 5))]
    assert layer.params[1].default == A.IntLit(loc(3, 19), 1)


def test_keyword_arguments_and_multiline_calls() -> None:
    call = expr("Conv2d(cin, cout,\n    kernel=3, stride=s,\n    padding=1)")
    assert isinstance(call, A.Call) and call.func == A.Name(loc(1, 9), "Conv2d")
    assert [a.id for a in call.args] == ["cin", "cout"]
    assert [(k.name, k.loc) for k in call.kwargs] == [
        ("kernel", loc(2, 5)), ("stride", loc(2, 15)), ("padding", loc(3, 5))]
    assert call.kwargs[1].value == A.Name(loc(2, 22), "s")


@pytest.mark.parametrize(("source", "dtype", "dims"), [
    ("Tensor[float32, N, 3, 32, 32]", "float32", ["N", 3, 32, 32]),
    ("Tensor[float16]", "float16", None),
    ("Tensor[trit, 4]", "trit", [4]),
    ("TernaryTensor[128, 256]", "trit", [128, 256]),
    ("TernaryTensor", "trit", None),
])
def test_tensor_types(source: str, dtype: str, dims: list | None) -> None:
    type_ = only(f"let w: {source}").type
    assert isinstance(type_, A.TensorTypeExpr) and type_.loc == loc(1, 8)
    assert type_.dtype == dtype and type_.ternary == source.startswith("TernaryTensor")
    got = None if type_.dims is None else [getattr(d, "id", getattr(d, "value", d))
                                            for d in type_.dims]
    assert got == dims


def test_tensor_type_dim_expressions() -> None:
    type_ = only("let w: Tensor[float32, cout, cin / groups, kernel, kernel]").type
    assert type_.dims[1] == A.BinOp(loc(1, 30), "/", A.Name(loc(1, 30), "cin"),
                                    A.Name(loc(1, 36), "groups"))


@pytest.mark.parametrize("source", [
    "@buffer let running_mean: Tensor[float32, c] = zeros([c])",
    "@buffer\nlet running_mean: Tensor[float32, c] = zeros([c])",
])
def test_buffer_annotation(source: str) -> None:
    let = only(source)
    assert let.loc == loc(1, 1) and let.name == "running_mean"
    assert let.annotations == (A.Annotation(loc(1, 1), "buffer"),)


def test_stacked_annotations_with_arguments() -> None:
    let = only("@fp16 @ternary\n@int8(8)\nlet w = ...")
    assert [a.name for a in let.annotations] == ["fp16", "ternary", "int8"]
    assert let.annotations[2] == A.Annotation(loc(2, 1), "int8", (A.IntLit(loc(2, 7), 8),))
    assert let.value == A.Ellipsis_(loc(3, 9))


def test_if_else_if_else_nests_in_orelse() -> None:
    stmt = only("if a { x = 1 } else if b {\n  x = 2\n}\nelse {\n  x = 3\n}")
    assert isinstance(stmt, A.If) and stmt.cond == A.Name(loc(1, 4), "a")
    (inner,) = stmt.orelse
    assert isinstance(inner, A.If) and inner.loc == loc(1, 21)
    assert inner.then[0].loc == loc(2, 3)
    assert inner.orelse == (A.Assign(loc(5, 3), A.Name(loc(5, 3), "x"), A.IntLit(loc(5, 7), 3)),)


def test_statement_after_block_on_same_line() -> None:
    first, second = parse_program("if a { x = 1 } y = 2").body
    assert isinstance(first, A.If) and first.orelse == ()
    assert second.loc == loc(1, 16)


def test_for_loops() -> None:
    loop = only("for i in range(n) {\n  x = x + i\n}")
    assert loop.var == "i" and loop.iterable.func == A.Name(loc(1, 10), "range")
    assert loop.body[0].value.op == "+"
    cfgs = only("for cfg in [[1, 16, 1, 1], [6, 24, 2, 2]] { }")
    assert [len(row.items) for row in cfgs.iterable.items] == [4, 4] and cfgs.body == ()


@pytest.mark.parametrize(("source", "shape"), [
    ("a or b and c", ("or", "a", ("and", "b", "c"))),
    ("not a == b", ("not", ("==", "a", "b"))),
    ("a < b + c * d", ("<", "a", ("+", "b", ("*", "c", "d")))),
    ("a - b - c", ("-", ("-", "a", "b"), "c")),
    ("a @ b % c / d", ("/", ("%", ("@", "a", "b"), "c"), "d")),
    ("-a * b", ("*", ("-", "a"), "b")),
    ("-a.b[0](x)", ("-", ("call", ("index", ("attr", "a", "b"), 0), "x"))),
    ("(a + b) * c", ("*", ("+", "a", "b"), "c")),
    ("a != b and c >= d or e <= f", ("or", ("and", ("!=", "a", "b"), (">=", "c", "d")),
                                     ("<=", "e", "f"))),
    ("x > 0", (">", "x", 0)),
])
def test_operator_precedence(source: str, shape: tuple) -> None:
    def sketch(e: A.Expr) -> object:
        if isinstance(e, A.Name):
            return e.id
        if isinstance(e, A.IntLit):
            return e.value
        if isinstance(e, A.BinOp):
            return (e.op, sketch(e.lhs), sketch(e.rhs))
        if isinstance(e, A.UnaryOp):
            return (e.op, sketch(e.operand))
        if isinstance(e, A.Attribute):
            return ("attr", sketch(e.value), e.name)
        if isinstance(e, A.Index):
            return ("index", sketch(e.value), *map(sketch, e.indices))
        assert isinstance(e, A.Call)
        return ("call", sketch(e.func), *map(sketch, e.args))

    assert sketch(expr(source)) == shape


def test_literals() -> None:
    lit = expr('[007, 0.5, 1e-5, 1.5e3, true, false, "zeros", "a\\"b", ...]')
    assert [type(v).__name__ for v in lit.items] == [
        "IntLit", "FloatLit", "FloatLit", "FloatLit", "BoolLit", "BoolLit", "StrLit", "StrLit"]
    assert [v.value for v in lit.items] == [7, 0.5, 1e-5, 1500.0, True, False, "zeros", 'a"b']
    assert lit.open_tail and lit.items[-1].loc == loc(1, 55)


def test_index_and_member_access() -> None:
    assert expr("matrix[10, 20]") == A.Index(loc(1, 9), A.Name(loc(1, 9), "matrix"),
                                             (A.IntLit(loc(1, 16), 10), A.IntLit(loc(1, 20), 20)))
    assert expr("arr[...]").indices == (A.Ellipsis_(loc(1, 13)),)
    assert expr("self.conv") == A.Attribute(loc(1, 9), A.Name(loc(1, 9), "self"), "conv")


def test_comments() -> None:
    program = parse_program("// RUN: tdsl-opt %s | filecheck %s\n"
                            "let a = 1  # trailing\n// CHECK: foo\nlet b = a // more\n")
    assert [(s.name, s.loc) for s in program.body] == [("a", loc(2, 1)), ("b", loc(4, 1))]


def test_expression_statement_and_index_assignment() -> None:
    call, assign = parse_program("relu(x)\nxs[0] = y").body
    assert call == A.ExprStmt(loc(1, 1), A.Call(loc(1, 1), A.Name(loc(1, 1), "relu"),
                                                (A.Name(loc(1, 6), "x"),)))
    assert isinstance(assign.target, A.Index) and assign.loc == loc(2, 1)


def test_language_md_example_block() -> None:
    source = """\
# A ResNet basic block, as in He et al. 2016
layer BasicBlock(cin: int, cout: int, stride: int = 1) {
    let conv1 = Conv2d(cin, cout, kernel=3, stride=stride, padding=1, bias=false)
    let downsample = stride != 1 or cin != cout
    if downsample {
        let down = Sequential(Conv2d(cin, cout, kernel=1, stride=stride, bias=false),
                              BatchNorm2d(cout))
    }

    fn forward(x: Tensor[float32, N, cin, H, W]) -> Tensor[float32, N, cout, H2, W2] {
        let out = relu(conv1(x))
        let identity = x
        if downsample {
            identity = down(x)
        }
        return relu(out + identity)
    }
}
"""
    (layer,) = parse_program(source).body
    conv1, downsample, branch, forward = layer.body
    assert conv1.value.kwargs[-1] == A.Keyword(loc(3, 71), "bias", A.BoolLit(loc(3, 76), False))
    assert downsample.value.op == "or"
    assert branch.then[0].value.args[1].loc == loc(7, 31)
    assert [type(s) for s in forward.body] == [A.Let, A.Let, A.If, A.Return]
    assert forward.ret.dims[-1] == A.Name(loc(10, 82), "W2")


def test_parse_program_or_file(tmp_path) -> None:
    path = tmp_path / "net.tri"
    path.write_text("\ufeff" + ORIGINAL_PROGRAM, encoding="utf-8")  # with a BOM
    from_file = parse_program_or_file(str(path))
    assert from_file.file == str(path) and from_file.body[3].loc == loc(6, 1, str(path))
    from_text = parse_program_or_file("let x: trit = 1", filename="t.tdsl")
    assert from_text.file == "t.tdsl" and from_text.body[0].loc == loc(1, 1, "t.tdsl")
    assert parse_program_or_file("missing.tdsl").body[0] == A.ExprStmt(
        loc(1, 1), A.Attribute(loc(1, 1), A.Name(loc(1, 1), "missing"), "tdsl"))


def test_grammar_has_no_lalr_conflicts(caplog: pytest.LogCaptureFixture) -> None:
    """lark resolves shift/reduce conflicts silently; debug mode logs them."""
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        with caplog.at_level(logging.DEBUG, logger="lark"):
            Lark(P._GRAMMAR.read_text(), parser="lalr", lexer="basic", debug=True,
                 postlex=P._StatementSeparators())
    finally:
        logger.setLevel(level)
    assert not [r for r in caplog.records if "conflict" in r.getMessage().lower()]


def test_parser_is_built_once() -> None:
    assert P._lark() is P._lark()


def test_200_line_file_parses() -> None:
    """A long file of many layers parses into all of them (speed is measured in benchmarks/)."""
    block = """\
layer Block{i}(cin: int, cout: int, stride: int = 1) {{
    let conv = Conv2d(cin, cout, kernel=3, stride=stride, padding=1, bias=false)
    let bn = BatchNorm2d(cout)
    @buffer let scale: Tensor[float32, cout] = ones([cout])
    fn forward(x: Tensor[float32, N, cin, H, W]) -> Tensor[float32, N, cout, H, W] {{
        let y = relu(bn(conv(x))) * scale
        if stride != 1 or cin != cout {{ return y }} else {{ return y + x }}
    }}
}}
"""
    text = "".join(block.format(i=i) for i in range(23))
    assert text.count("\n") >= 200
    program = parse_program(text)
    assert [layer.name for layer in program.layers] == [f"Block{i}" for i in range(23)]
