"""The calibrated QDQ form: onnxruntime fuses it into its int8 kernels (checked on the model
its optimiser writes), it agrees with the torch backend as closely as onnxruntime's own
`quantize_static` model of the same weights does, and it stores the trits in 2 bits."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import tdsl
from tdsl.backends.onnx import export_onnx
from tdsl.backends.onnx.qdq import minmax_params
from tdsl.backends.onnx.verify import run_onnx
from tdsl.errors import TdslError

MODELS = {
    "resnet18": {"num_classes": 10, "cifar_stem": True, "image_size": 32},
    "mobilenetv2": {"num_classes": 10, "width_mult": 0.5, "image_size": 32},
}
_FROZEN: dict[tuple[str, str], object] = {}


def frozen_model(model: str, policy: str = "default"):
    """`tdsl.quantize` of weights whose batch norms carry statistics measured on random
    inputs (fresh statistics would make every logit alike and the agreement checks vacuous)."""
    if (model, policy) not in _FROZEN:
        torch.manual_seed(0)
        net = tdsl.compile(model, params=MODELS[model], pipeline="shape-infer").to_torch()
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None
        net.train()
        with torch.no_grad():
            for _ in range(2):
                net(torch.randn(8, 3, 32, 32))
        _FROZEN[model, policy] = tdsl.quantize(model, precision="ternary", policy=policy, params=MODELS[model],
                                               weights=net.eval().state_dict())
    return _FROZEN[model, policy]


def batches(n: int = 4, seed: int = 100) -> list[np.ndarray]:
    return [np.random.default_rng([seed, i]).standard_normal((8, 3, 32, 32)).astype(np.float32) for i in range(n)]


def optimized_ops(path: Path, tmp_path: Path) -> Counter:
    """Op types of the model onnxruntime runs (default session options, CPU)."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)


@pytest.mark.parametrize("model", ["resnet18", pytest.param("mobilenetv2", marks=pytest.mark.slow)])
def test_onnxruntime_runs_every_conv_and_gemm_on_its_int8_kernels(model, tmp_path):
    exported = export_onnx(frozen_model(model), tmp_path / "m.onnx", calibrate=batches())
    ops = optimized_ops(exported.path, tmp_path)
    assert ops["QLinearConv"] == exported.op_types["Conv"] > 0
    assert ops["QGemm"] == exported.op_types["Gemm"] == 1
    assert ops["QLinearAdd"] == exported.op_types["Add"] > 0
    assert ops["QLinearGlobalAveragePool"] == 1
    assert not {"Conv", "FusedConv", "Gemm", "MatMul", "Add", "Relu", "Clip"} & set(ops), ops
    assert ops["QuantizeLinear"] == 1 and ops["DequantizeLinear"] == 1     # at the input and the output only


def ort_int8(model: str, frozen, tmp_path: Path, calib: list[np.ndarray]) -> Path:
    """onnxruntime's own QDQ model (quantize_static, its documented settings) of the same weights."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    fp32 = tdsl.quantize(model, precision="fp32", params=MODELS[model], weights=frozen.dequantized_state_dict())
    path = export_onnx(fp32, tmp_path / "fp32.onnx").path
    feeds = iter([{"x": x} for x in calib])

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict | None:
            return next(feeds, None)

    out = tmp_path / "int8.onnx"
    quantize_static(str(path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def rel_err(y: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(y.astype(np.float64) - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("policy", ["default", pytest.param("all", marks=pytest.mark.slow)])
def test_agrees_with_torch_as_closely_as_onnxruntimes_own_int8_model(policy, tmp_path):
    frozen = frozen_model("resnet18", policy)
    calib = batches()
    ours = export_onnx(frozen, tmp_path / "qdq.onnx", calibrate=calib).path
    theirs = ort_int8("resnet18", frozen, tmp_path, calib)
    x = np.random.default_rng(7).standard_normal((32, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = frozen.module(torch.from_numpy(x)).numpy().astype(np.float64)
    y_ours, y_theirs = run_onnx(ours, [x])[0], run_onnx(theirs, [x])[0]
    # measured: default 0.041 vs 0.041, all 0.016 vs 0.124 (max |diff| / max |ref|)
    assert rel_err(y_ours, ref) <= 1.25 * rel_err(y_theirs, ref) + 0.01
    agree = lambda y: float(np.mean(y.argmax(1) == ref.argmax(1)))  # noqa: E731
    assert agree(y_ours) >= agree(y_theirs) - 1 / 16
    assert rel_err(y_ours, ref) < 0.1


def test_trits_are_stored_in_two_bits_at_under_a_third_of_the_int8_file(tmp_path):
    frozen = frozen_model("resnet18", "all")
    calib = batches(2)
    ours = export_onnx(frozen, tmp_path / "qdq.onnx", calibrate=calib)
    assert set(ours.weight_types.values()) == {"UINT8"}                  # 2-bit codes, unpacked at load
    assert ours.metadata["tdsl.ternary_storage"].startswith("UINT8 2bit codes unpacked to INT8")
    theirs = ort_int8("resnet18", frozen, tmp_path, calib)
    assert ours.nbytes * 3 <= theirs.stat().st_size                       # measured 1/3.9


def test_scales_follow_onnxruntimes_minmax_rule():
    from onnxruntime.quantization.quant_utils import compute_scale_zp

    for low, high in [(-0.3, 2.0), (0.0, 6.0), (0.5, 3.0), (-4.0, -1.0), (0.0, 0.0), (-1e-3, 1e-3), (-7.1, 0.2)]:
        zp, scale = compute_scale_zp(np.array(low, np.float32), np.array(high, np.float32),
                                     np.array(0, np.uint8), np.array(255, np.uint8))
        p = minmax_params(low, high)
        assert (p.zero_point, p.scale) == (int(zp), float(scale)), (low, high)


def test_torch_batches_and_tuples_calibrate_as_numpy_does(tmp_path):
    frozen = frozen_model("mobilenetv2")
    calib = batches(2)
    a = export_onnx(frozen, tmp_path / "a.onnx", calibrate=calib)
    b = export_onnx(frozen, tmp_path / "b.onnx", calibrate=[(torch.from_numpy(x),) for x in calib])
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.opset == 21 and a.op_types["QuantizeLinear"] > 0


@pytest.mark.parametrize("kwargs,message", [
    ({"ternary_form": "qdq"}, "ternary_form 'qdq' needs calibrate=batches"),
    ({"ternary_form": "packed", "calibrate": [np.zeros((1, 3, 32, 32), np.float32)]},
     "calibrate applies to ternary_form 'qdq', not 'packed'"),
    ({"calibrate": []}, "calibration needs at least one input batch"),
    ({"calibrate": [np.zeros((1, 4, 32, 32), np.float32)]}, "calibration batch 0 {'x': (1, 4, 32, 32)} does not fit"),
    ({"calibrate": [(np.zeros((1, 3, 32, 32)), np.zeros(2))]}, "calibration batch 0 holds 2 array(s); the model takes 1"),
    ({"calibrate": [np.full((1, 3, 32, 32), np.nan, np.float32)]}, "input 'x' holds NaN or infinite values"),
    ({"calibrate": [[1, 2]]}, "calibration batch 0 holds 2 array(s)"),
    ({"calibrate": ["x"]}, "input 'x' must be a numpy array or torch tensor, got str"),
])
def test_bad_calibration_is_a_named_error_and_writes_nothing(kwargs, message, tmp_path):
    with pytest.raises(TdslError) as e:
        export_onnx(frozen_model("mobilenetv2"), tmp_path / "m.onnx", **kwargs)
    assert message in e.value.message
    assert not (tmp_path / "m.onnx").exists()


def test_cli_writes_the_calibrated_form_and_refuses_it_for_other_formats(tmp_path, capsys):
    from tdsl.package.export import calibration_batches
    from tdsl.tools.export import main

    out = tmp_path / "lenet.onnx"
    assert main(["lenet", "--format", "onnx", "--precision", "ternary", "--calibrate", "2", "-o", str(out)]) == 0
    assert "ok, max |diff| / max |ref| (int8 activations)" in capsys.readouterr().out
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node)
    assert main(["lenet", "--format", "torch-export", "--calibrate", "2", "-o", str(tmp_path / "l.pt2")]) == 1
    assert "--calibrate applies to --format onnx, not torch-export" in capsys.readouterr().err
    frozen = tdsl.quantize("lenet", precision="ternary")
    np.savez(tmp_path / "calib.npz", x=np.zeros((20, 1, 8, 8), np.float32))
    assert [b[0].shape[0] for b in calibration_batches(frozen, str(tmp_path / "calib.npz"), batch=8)] == [8, 8, 4]
    np.savez(tmp_path / "two.npz", x=np.zeros((4, 1, 8, 8)), y=np.zeros(3))
    with pytest.raises(TdslError, match="calibration data needs 1 array"):
        calibration_batches(frozen, str(tmp_path / "two.npz"))
    with pytest.raises(TdslError, match="a number of batches or an .npz file"):
        calibration_batches(frozen, "many")
