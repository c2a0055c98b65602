"""Issue 22's generators: the two program signatures that still gave tracebacks (a scalar
literal meeting a typed tensor; a one-line source taken for a path), and the command line's
numeric options and output paths. Smoke runs here; the long ones are `-m slow`."""
from __future__ import annotations

from pathlib import Path

import pytest
from fuzzing import check_any_error, check_cli, cli_cases, run_cli, run_signatures, signature_programs


def _explain(tally) -> str:
    lines = [f"{len(tally.findings)} findings ({tally.report()}):"]
    for seed, what, case in tally.findings[:5]:
        lines.append(f"--- seed {seed}: {what}\n{case[:400]}")
    return "\n".join(lines)


def test_the_generators_are_deterministic(tmp_path: Path) -> None:
    assert list(signature_programs(20, seed=3)) == list(signature_programs(20, seed=3))
    first = [argv for _, argv in cli_cases(20, 3, tmp_path)]
    assert first == [argv for _, argv in cli_cases(20, 3, tmp_path)]


@pytest.mark.parametrize("source", [
    "layer T { fn forward(x: Tensor[trit, 4]) -> Tensor[trit, 4] { return x * 0.5 } }\n",
    "1" * 256, "x" * 300 + ".tdsl", "a/" * 200,
    "layer T { fn forward(x: Tensor[float32, 4]) -> Tensor[float32, 4] { return x + \udc80 } }\n",
])
def test_the_reported_tracebacks_are_errors(source: str) -> None:
    assert check_any_error(source) in ("located", "named")


@pytest.mark.parametrize("argv", [
    ["run", "mlp", "--batch", "-1"], ["run", "mlp", "--input-shape", "-2,4"],
    ["run", "mlp", "--input-shape", "100000000000,64"], ["train", "mlp", "--epochs", "nan"],
])
def test_the_reported_cli_tracebacks_are_errors(argv: list[str]) -> None:
    assert check_cli(argv) == "refused"


def test_smoke_400_signature_programs() -> None:
    tally = run_signatures(400, seed=1)
    assert tally.counts["located"] > 0 and tally.counts["named"] > 0
    assert not tally.findings, _explain(tally)


def test_smoke_40_command_lines(tmp_path: Path) -> None:
    tally = run_cli(40, seed=1, tmp=tmp_path)
    assert tally.counts["ok"] > 0 and tally.counts["refused"] > 0
    assert not tally.findings, _explain(tally)


@pytest.mark.slow
def test_long_signature_programs_and_command_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    programs, commands = run_signatures(20_000, seed=2), run_cli(1_000, seed=2, tmp=tmp_path)
    with capsys.disabled():
        print(f"\nsignature programs: {programs.report()}\ncommand lines: {commands.report()}")
    assert not programs.findings, _explain(programs)
    assert not commands.findings, _explain(commands)
