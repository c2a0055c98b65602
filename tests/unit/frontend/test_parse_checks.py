"""Static literal checks run by `parse_program` (tdsl/frontend/checks.py)."""
from __future__ import annotations

import pytest

from tdsl.errors import ParseError, SourceLoc, TdslError
from tdsl.frontend import ast as A
from tdsl.frontend.parser import parse_program


@pytest.mark.parametrize(("source", "col", "message"), [
    ("let x: trit = 2", 15, "trit literal must be -1, 0 or 1, got 2"),
    ("let x: trit = -2", 15, "trit literal must be -1, 0 or 1, got -2"),
    ("let x: trit = 1.0", 15, "trit literal must be -1, 0 or 1, got 1.0"),
    ("let x: trit = true", 15, "trit literal must be -1, 0 or 1, got true"),
    ('let x: trit = "1"', 15, "trit literal must be -1, 0 or 1, got '1'"),
    ("fn f(t: trit = 5) { }", 16, "trit literal must be -1, 0 or 1, got 5"),
    ("let w = TernaryTensor[2, 2](1, 0, -1)", 9, "TernaryTensor[2, 2] needs 4 values, got 3"),
    ("let w = TernaryTensor[3]([1, 0, -1, 1])", 9, "TernaryTensor[3] needs 3 values, got 4"),
    ("let w = TernaryTensor[2, 2](1, 0, 3, 1)", 35,
     "TernaryTensor values must be -1, 0 or 1, got 3"),
    ("let w = TernaryTensor[2]([-2, 0])", 27, "TernaryTensor values must be -1, 0 or 1, got -2"),
    ("let w = TernaryTensor[n](a, 1)", 26, "TernaryTensor values must be the literals -1, 0 or 1"),
])
def test_literal_errors(source: str, col: int, message: str) -> None:
    with pytest.raises(TdslError) as info:
        parse_program(source, "lit.tri")
    assert not isinstance(info.value, ParseError)
    assert info.value.message == message
    assert info.value.loc == SourceLoc("lit.tri", 1, col)


def test_check_reaches_nested_statements() -> None:
    source = "layer L {\n  fn forward() {\n    if c { let t: trit = 7 }\n  }\n}"
    with pytest.raises(TdslError, match="got 7") as info:
        parse_program(source)
    assert info.value.loc == SourceLoc("<input>", 3, 26)


@pytest.mark.parametrize("source", [
    "let x: trit = -1\nlet y: trit = 0\nlet z: trit = 1",
    "let x: trit = y",  # not a literal: checked when evaluated
    "let x: int8 = 5",
    "let w = TernaryTensor[n, 2](1, 0, -1, 1, 0, 0)",  # shape not all literals
    "let w = TernaryTensor[[[1, 2], 3], 4]([1, 0, -1])",
])
def test_valid_literals_pass(source: str) -> None:
    assert all(isinstance(s, A.Let) for s in parse_program(source).body)
