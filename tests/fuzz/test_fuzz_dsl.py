"""Fuzzing `tdsl.compile`: every generated or mutated program compiles or fails with a located
`TdslError`. The smoke run is in the default suite; the long one (`-m slow`) runs 100,000."""
from __future__ import annotations

import random

import pytest
from fuzzing import GrammarGenerator, check_dsl, dsl_programs, run_dsl  # loaded by conftest.py

from tdsl.frontend.parser import parse_program


def _explain(tally) -> str:
    lines = [f"{len(tally.findings)} findings ({tally.report()}); reproduce with fuzzing.dsl_programs:"]
    for seed, what, source in tally.findings[:5]:
        lines.append(f"--- seed {seed}: {what}\n{source[:400]}")
    return "\n".join(lines)


def test_the_generators_are_deterministic() -> None:
    assert list(dsl_programs(30, seed=7)) == list(dsl_programs(30, seed=7))
    assert list(dsl_programs(5, seed=7)) != list(dsl_programs(5, seed=8))


def test_grammar_derivations_parse() -> None:
    """Most derivations are syntactically valid: the generator exercises more than the lexer."""
    gen = GrammarGenerator()
    parsed = 0
    for i in range(200):
        try:
            parse_program(gen.program(random.Random(i)) + "\n")
            parsed += 1
        except Exception:  # located errors from static checks; the oracle tests tell them apart
            pass
    assert parsed > 100


def test_oracle_tells_success_from_a_located_error() -> None:
    assert check_dsl("layer A {\n fn forward(x: Tensor[float32, N, 4]) { return x }\n}\n") == "ok"
    assert check_dsl("layer A(n: int) {\n fn forward(x) { return x }\n}\n") == "located"


def test_smoke_1500_programs() -> None:
    tally = run_dsl(1500, seed=1)
    assert tally.counts["programs"] == 1500
    assert tally.counts["ok"] > 0 and tally.counts["located"] > 0
    assert not tally.findings, _explain(tally)


@pytest.mark.slow
def test_long_100000_programs(capsys: pytest.CaptureFixture[str]) -> None:
    tally = run_dsl(100_000, seed=2)
    with capsys.disabled():
        print(f"\nDSL fuzz, 100,000 programs: {tally.report()}")
    assert not tally.findings, _explain(tally)
