"""`tdsl export`: every format is written, reloaded and compared; errors exit 1."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import tdsl
from tdsl.tools.tdsl_cli import main


def test_package_from_zoo_model(tmp_path, capsys):
    out = tmp_path / "lenet"
    assert main(["export", "lenet", "--precision", "ternary", "--format", "package", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    table = captured.out
    assert "package" in table and "ok, max |diff| 0" in table and "x smaller" in table
    assert tdsl.load(out).config["precision"]["precision"] == "ternary"
    # no --weights: said on stderr and in the card, so nobody mistakes it for a trained model
    assert "warning: no --weights given: the export holds a random initialisation (seed 0)" in captured.err
    assert "The weights are a random initialisation (seed 0)" in (out / "README.md").read_text()


def test_torch_export_from_a_package_and_no_verify(lenet_package, tmp_path, capsys):
    assert main(["export", str(lenet_package), "--format", "torch-export", "-o", str(tmp_path / "m.pt2")]) == 0
    assert "ok, max |diff| 0" in capsys.readouterr().out
    assert main(["export", str(lenet_package), "--format", "torch-export", "--no-verify",
                 "-o", str(tmp_path / "n.pt2")]) == 0
    assert "skipped" in capsys.readouterr().out


def test_torchscript_says_it_is_deprecated(tmp_path, capsys):
    assert main(["export", "mlp", "--precision", "int8", "--format", "torchscript", "-o", str(tmp_path / "m.pt")]) == 0
    captured = capsys.readouterr()
    assert "TorchScript is deprecated" in captured.err and "ok, max |diff| 0" in captured.out


def test_onnx_uses_the_onnx_backend_or_says_it_is_missing(tmp_path, capsys):
    code = main(["export", "mlp", "--format", "onnx", "-o", str(tmp_path / "m.onnx")])
    captured = capsys.readouterr()
    if importlib.util.find_spec("tdsl.backends.onnx") is None:
        assert code == 1 and "needs the ONNX backend" in captured.err
    else:
        assert code == 0 and "onnx" in captured.out and "ok, max |diff|" in captured.out


def test_weights_are_quantised(tmp_path):
    torch.manual_seed(3)
    fp32 = tdsl.compile("mlp", pipeline="shape-infer").to_torch().state_dict()
    save_file(fp32, str(tmp_path / "w.safetensors"))
    out = tmp_path / "pkg"
    assert main(["export", "mlp", "--precision", "ternary", "--weights", str(tmp_path / "w.safetensors"),
                 "--format", "package", "--no-verify", "-o", str(out)]) == 0
    expected = tdsl.quantize("mlp", precision="ternary", weights=fp32).state_dict()
    assert "random initialisation" not in (out / "README.md").read_text()
    arrays = tdsl.load(out).arrays
    assert all(np.array_equal(arrays[k], v.numpy()) for k, v in expected.items())


def test_policy_precision_round_trips(tmp_path):
    out = tmp_path / "pkg"
    assert main(["export", "mlp", "--precision", "fc1=ternary fc3=int8", "--format", "package", "-o", str(out)]) == 0
    weights = tdsl.load(out).config["precision"]["weights"]
    assert weights == {"fc1.weight": "ternary", "fc2.weight": "fp32", "fc3.weight": "int8"}


@pytest.mark.parametrize("argv,message", [
    (["--precision", "int4"], "--precision must be one of"),
    (["--param", "hidden=8"], "is a package"),
])
def test_user_errors_exit_1(lenet_package, tmp_path, capsys, argv, message):
    model = str(lenet_package) if "hidden=8" in argv else "mlp"
    assert main(["export", model, "--format", "package", "-o", str(tmp_path / "x"), *argv]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_registration_imports_no_torch():
    code = "import sys; from tdsl.tools.tdsl_cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
