"""How `tdsl` reads its model argument: a package folder, a .tdsl/.tri file, a zoo name, `-`
(stdin) or --source TEXT; anything else is a named error, never parsed as DSL text."""
from __future__ import annotations

import io
from pathlib import Path

import pytest

from tdsl.tools.tdsl_cli import main

PROGRAM = """layer Tiny(n: int = 4) {
    let fc = Linear(n, 2)
    fn forward(x: Tensor[float32, N, n]) -> Tensor[float32, N, 2] {
        return fc(x)
    }
}
"""


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    import tdsl

    torch.manual_seed(0)
    return Path(tdsl.save(tdsl.quantize("mlp", precision="ternary"), tmp_path_factory.mktemp("pkg") / "mlp"))


@pytest.mark.parametrize("arg, message", [
    ("runs/lenet", "runs/lenet: no such file or package, and not a zoo model name"),
    ("lenett", "lenett: no such file or package, and not a zoo model name (did you mean 'lenet'?)"),
    ("missing.tdsl", "missing.tdsl: no such file"),
    ("{folder}", "{folder}: a folder without config.json, so not a tdsl package (no such file or package)"),
    ("{text_file}", "{text_file}: not a .tdsl / .tri file or a package folder"),
])
def test_what_is_not_a_model_is_named(tmp_path: Path, arg: str, message: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("layer X {}")
    names = {"folder": tmp_path, "text_file": tmp_path / "notes.txt"}
    for command in ("compile", "export"):
        argv = [command, arg.format(**names)] + (["--format", "onnx", "-o", str(tmp_path / "x.onnx")]
                                                 if command == "export" else [])
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: " + message.format(**names)), err
        assert "unknown name" not in err and "Traceback" not in err


def test_source_text_and_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", "--source", PROGRAM]) == 0
    from_option = capsys.readouterr().out
    assert "tdsl.layer @Tiny" in from_option
    monkeypatch.setattr("sys.stdin", io.StringIO(PROGRAM))
    assert main(["compile", "-"]) == 0
    assert capsys.readouterr().out == from_option
    assert main(["compile", "mlp", "--source", PROGRAM]) == 1
    assert "either as MODEL ('mlp') or as --source TEXT, not both" in capsys.readouterr().err


def test_a_package_folder_is_a_package(package: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", str(package)]) == 0
    assert "tern.packed_param" in capsys.readouterr().out  # the stored, frozen program
    assert main(["run", str(package), "--input-shape", "2,64"]) == 0
    assert "output: shape [2, 10]" in capsys.readouterr().out
    assert main(["quantize", str(package)]) == 1
    assert "is a saved package (already frozen): `tdsl quantize` takes" in capsys.readouterr().err
    assert main(["compile", str(package), "--param", "hidden=8"]) == 1
    assert "its parameters, entry and pipeline are stored in it" in capsys.readouterr().err
