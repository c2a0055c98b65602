"""Every command that writes a file refuses to replace an existing one without --force, and
says which file and which flag; the refusal comes before any work, so nothing is touched."""
from __future__ import annotations

from pathlib import Path

import pytest

from tdsl.tools.tdsl_cli import main as tdsl
from tdsl.tools.tdsl_opt import main as tdsl_opt

GOOD = Path(__file__).resolve().parents[2] / "ir" / "shape-infer.mlir"


def refused(code: int, capsys: pytest.CaptureFixture[str], path: Path, flag: str = "-o") -> None:
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"{flag} {path}: the " in err and "already exists; pass --force to replace it" in err
    assert "Traceback" not in err
    assert path.read_text() == "precious"


@pytest.fixture
def existing(tmp_path: Path) -> Path:
    path = tmp_path / "out.txt"
    path.write_text("precious")
    return path


def test_tdsl_opt(existing: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refused(tdsl_opt([str(GOOD), "-o", str(existing)]), capsys, existing)
    assert tdsl_opt([str(GOOD), "-o", str(existing), "--force"]) == 0
    assert "tdsl.layer" in existing.read_text()


def test_tdsl_opt_stdout_and_new_files_need_no_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert tdsl_opt([str(GOOD), "-o", "-"]) == 0
    assert tdsl_opt([str(GOOD), "-o", str(tmp_path / "new.mlir")]) == 0


@pytest.mark.parametrize("argv, flag", [
    (["compile", "mlp", "-o", "{out}"], "-o"),
    (["quantize", "mlp", "-o", "{out}"], "-o"),
    (["quantize", "mlp", "--report", "{out}"], "--report"),
    (["export", "mlp", "--format", "onnx", "-o", "{out}"], "-o"),
    (["export", "mlp", "--format", "package", "-o", "{out}"], "-o"),
])
def test_tdsl_commands(existing: Path, argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    refused(tdsl([a.format(out=existing) for a in argv]), capsys, existing, flag)


def test_compile_with_force_replaces(existing: Path) -> None:
    assert tdsl(["compile", "mlp", "-o", str(existing), "--force"]) == 0
    assert "tdsl.layer" in existing.read_text()


def test_train_into_a_used_folder_needs_force_or_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("precious")
    code = tdsl(["train", "mlp", "--out", str(out), "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 1 and f"--out {out}: the folder already exists; pass --force to replace it" in err
    assert (out / "metrics.jsonl").read_text() == "precious"
