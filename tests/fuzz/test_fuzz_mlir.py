"""Fuzzing `tdsl-opt` (in-process) on mutated `.mlir` files from tests/ir: every run exits 0 or
exits 1 with a diagnostic; nothing escapes `main` as an exception."""
from __future__ import annotations

from pathlib import Path

import pytest
from fuzzing import MLIR_SEEDS, check_mlir, run_mlir  # loaded by conftest.py


def _explain(tally) -> str:
    lines = [f"{len(tally.findings)} findings ({tally.report()}); reproduce with fuzzing.run_mlir:"]
    for seed, what, source in tally.findings[:5]:
        lines.append(f"--- seed {seed}: {what}\n{source[:400]}")
    return "\n".join(lines)


def test_the_seed_files_run(tmp_path: Path) -> None:
    assert len(MLIR_SEEDS) >= 10
    outcomes = {check_mlir(p, "") for p in MLIR_SEEDS}
    assert "ok" in outcomes


def test_smoke_200_mutated_files(tmp_path: Path) -> None:
    tally = run_mlir(200, seed=1, tmp=tmp_path)
    assert tally.counts["programs"] == 200 and tally.counts["located"] > 0
    assert not tally.findings, _explain(tally)


@pytest.mark.slow
def test_long_20000_mutated_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tally = run_mlir(20_000, seed=2, tmp=tmp_path)
    with capsys.disabled():
        print(f"\ntdsl-opt fuzz, 20,000 files: {tally.report()}")
    assert not tally.findings, _explain(tally)
