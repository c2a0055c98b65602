"""The static name check that runs before a layer without parameter values is refused
(issue "Hardening": `tdsl-opt` reported only the missing parameter and hid an unknown name)."""
from __future__ import annotations

from pathlib import Path

import pytest

import tdsl
from tdsl.errors import UnknownNameError
from tdsl.frontend.checks import unknown_names
from tdsl.frontend.irgen import Elaborator
from tdsl.frontend.parser import parse_program
from tdsl.frontend.prelude import prelude_program

REPO = Path(__file__).resolve().parents[3]
PROGRAMS = sorted([*REPO.glob("tdsl/models/*.tdsl"), *REPO.glob("examples/**/*.tdsl"),
                   *REPO.glob("examples/**/*.tri"), REPO / "tdsl/frontend/prelude.tdsl"])

NEEDS_N = """layer A(n: int) {
    let fc = Linear(n, n)
    fn forward(x: Tensor[float32, N, n]) -> Tensor[float32, N, n] {
        return relux(fc(x))
    }
}
"""


def _globals(program) -> set[str]:
    return set(Elaborator(program, prelude_program()).globals.vars)


@pytest.mark.parametrize("path", PROGRAMS, ids=lambda p: p.name)
def test_no_false_alarm_on_any_shipped_program(path: Path) -> None:
    program = parse_program(path.read_text(encoding="utf-8"), str(path))
    assert [(n.id, n.loc.line) for n, _ in unknown_names(program, _globals(program))] == []


def test_an_unknown_name_is_reported_before_the_missing_parameter() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown name 'relux' \(did you mean 'relu'\?\)") as info:
        tdsl.compile(NEEDS_N)
    assert (info.value.loc.line, info.value.loc.col) == (4, 16)
    fixed = NEEDS_N.replace("relux", "relu")
    with pytest.raises(tdsl.TdslError, match="needs a value for parameter 'n'"):
        tdsl.compile(fixed)
    assert tdsl.compile(fixed, params={"n": 4}).module is not None


def test_scopes_layer_names_fn_params_and_loop_variables() -> None:
    src = """fn helper(k: int) { return k + missing_a }
layer B(n: int) {
    let xs = []
    for i in range(n) { xs = xs + [Linear(n, n)] }
    if n > 2 { let extra = Linear(n, n) }
    fn forward(x: Tensor[float32, N, n]) -> Tensor[float32, N, n] {
        let y = xs(x)
        return extra(y) + missing_b
    }
}
"""
    program = parse_program(src, "s.tdsl")
    assert sorted(n.id for n, _ in unknown_names(program, _globals(program))) == ["missing_a", "missing_b"]
