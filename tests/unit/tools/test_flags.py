"""One flag name, one meaning: --format is the file format (export), --trit-format the packing
of ternary weights (quantize and export); the old spellings still work with a warning; and
both commands default to the same precision."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tdsl.tools.tdsl_cli import main


def test_quantize_trit_format_and_its_old_spelling(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quantize", "mlp", "--trit-format", "base3", "--report", str(tmp_path / "a.json")]) == 0
    out, err = capsys.readouterr()
    assert "memory (ternary, base3)" in out and "deprecated" not in err
    assert json.loads((tmp_path / "a.json").read_text())["trit_format"] == "base3"
    assert main(["quantize", "mlp", "--format", "base3"]) == 0
    out, err = capsys.readouterr()
    assert "memory (ternary, base3)" in out
    assert "warning: `tdsl quantize --format` is deprecated" in err and "--trit-format now" in err
    assert main(["quantize", "mlp", "--format", "base3", "--trit-format", "2bit"]) == 1
    assert "disagree; give --trit-format only" in capsys.readouterr().err


def test_export_format_is_the_file_and_trit_format_the_packing(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import tdsl

    assert main(["export", "mlp", "--format", "package", "--trit-format", "base3", "--no-verify",
                 "-o", str(tmp_path / "a")]) == 0
    assert tdsl.load(tmp_path / "a").format == "base3"
    assert "deprecated" not in capsys.readouterr().err
    assert main(["export", "mlp", "--format", "package", "--packed-format", "base3", "--no-verify",
                 "-o", str(tmp_path / "b")]) == 0
    assert "`tdsl export --packed-format` is deprecated" in capsys.readouterr().err
    assert tdsl.load(tmp_path / "b").format == "base3"


def test_quantize_and_export_default_to_the_same_precision(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import tdsl

    assert main(["export", "mlp", "--format", "package", "--no-verify", "-o", str(tmp_path / "p")]) == 0
    assert main(["quantize", "mlp"]) == 0
    out = capsys.readouterr().out
    assert tdsl.load(tmp_path / "p").precision == "ternary" and "memory (ternary, 2bit)" in out
    for command in ("quantize", "export"):
        assert main([command, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "default ternary, in tdsl quantize and tdsl export alike" in text
        assert "--trit-format" in text
