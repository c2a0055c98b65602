"""Freeze, the precision pipeline API, memory / sparsity reports and `tdsl quantize`."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

import tdsl
from tdsl.errors import TdslError
from tdsl.precision import expand_override, pipeline_for
from tdsl.quant import ternarize
from tdsl.tools.tdsl_cli import main


def _ternary_paths(frozen) -> list[str]:
    return sorted(s.weight for s in frozen.layout.values() if s.role == "packed")


@pytest.mark.parametrize("threshold, per_channel", [("twn", True), ("absmean", False), ("sparsity=0.5", True)])
def test_freeze_matches_qat_eval_and_the_numpy_rule(threshold: str, per_channel: bool) -> None:
    torch.manual_seed(0)
    compiled, net = tdsl.qat("lenet", "ternary", threshold=threshold, per_channel=per_channel)
    net.train()
    net(torch.randn(4, 1, 8, 8))  # move batch-norm statistics away from their init
    net.eval()
    frozen = compiled.freeze(net)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), net(x), rtol=1e-5, atol=1e-6)
    sd = frozen.state_dict()
    method, _, value = threshold.partition("=")
    for path, (trits, scale) in frozen.ternary_weights().items():
        assert set(trits.unique().tolist()) <= {-1, 0, 1}
        layer = path.rsplit(".", 1)[0]
        # Only packed trits and a scale remain of a ternary weight.
        assert sorted(k for k in sd if k.startswith(layer + ".weight")) == [layer + ".weight_packed",
                                                                              layer + ".weight_scale"]
        assert sd[layer + ".weight_packed"].dtype == torch.uint8
        ref = ternarize(net.state_dict()[path].numpy(), method, per_channel,
                        target_sparsity=float(value) if value else None)
        np.testing.assert_array_equal(trits.numpy(), ref.trits)
        np.testing.assert_array_equal(scale.numpy(), ref.scale)


def test_freeze_thresholds_and_errors() -> None:
    compiled, net = tdsl.qat("mlp", "ternary", policy="all")
    frozen = compiled.freeze(net, thresholds={"fc2.weight": 0.0, "fc1": 1e9})
    weights = frozen.ternary_weights()
    assert bool((weights["fc2.weight"][0] != 0).all())
    assert not weights["fc1.weight"][0].any()
    with pytest.raises(TdslError, match="thresholds name nope.weight"):
        compiled.freeze(net, thresholds={"nope.weight": 0.1})
    with pytest.raises(TdslError, match="no 'fc1.weight'"):
        compiled.freeze({k: v for k, v in net.state_dict().items() if k != "fc1.weight"})
    with pytest.raises(TdslError, match="format"):
        compiled.freeze(net, format="3bit")


def test_memory_report_is_exact_and_matches_safetensors(tmp_path) -> None:
    frozen = tdsl.quantize("lenet", precision="ternary", override="fc1=int8")
    report = frozen.memory_report()
    sd = frozen.state_dict()
    assert report.total == sum(t.numel() * t.element_size() for t in sd.values())
    path = tmp_path / "lenet.safetensors"
    frozen.save(str(path))
    raw = path.read_bytes()
    (header,) = struct.unpack("<Q", raw[:8])
    assert report.total == len(raw) - 8 - header
    fp32 = tdsl.compile("lenet").to_torch().state_dict()
    assert report.fp32_total == sum(t.numel() * 4 for t in fp32.values())
    kinds = report.by_kind()
    assert kinds["packed"] and kinds["scales"] and kinds["weights"] and kinds["biases"] and kinds["batchnorm"]
    data = json.loads(report.to_json())
    assert data["total_bytes"] == report.total and {r["layer"] for r in data["layers"]} >= {"conv2", "fc1"}
    assert "conv2" in report.table() and "smaller" in report.table()


def test_sparsity_report_counts_zero_trits() -> None:
    frozen = tdsl.quantize("mlp", precision="ternary", policy="all", threshold="sparsity=0.25")
    report = frozen.sparsity_report()
    assert [w for w, _, _ in report.layers] == ["fc1.weight", "fc2.weight", "fc3.weight"]
    for w, zeros, n in report.layers:
        trits, _ = frozen.ternary_weights()[w]
        assert zeros == int((trits == 0).sum()) and n == trits.numel()
        assert abs(zeros / n - 0.25) < 0.01
    assert json.loads(report.to_json())["trits"] == report.count
    assert "overall" in report.table()


def test_weights_are_loaded_and_checked() -> None:
    fp32 = tdsl.compile("mlp").to_torch()
    frozen = tdsl.quantize("mlp", precision="fp16", weights=fp32)
    torch.testing.assert_close(frozen.state_dict()["fc2.weight"], fp32.fc2.weight.detach().half())
    with pytest.raises(TdslError, match="missing fc1.weight"):
        tdsl.quantize("mlp", weights={k: v for k, v in fp32.state_dict().items() if k != "fc1.weight"})


def test_pipeline_strings() -> None:
    assert pipeline_for("int8") == "shape-infer,precision{default=int8}"
    assert pipeline_for("ternary", policy="all", per_channel=False) == \
        "shape-infer,ternarize{threshold=twn per-channel=false policy=all}"
    assert "keep=int8" in pipeline_for("mixed")
    assert 'override="conv1=ternary conv1.*=ternary *=fp16"' in pipeline_for("fp16", override="conv1=ternary")
    assert expand_override("conv1=fp16 layer4.*=int8") == "conv1=fp16 conv1.*=fp16 layer4.*=int8"
    with pytest.raises(TdslError, match="precision must be one of"):
        pipeline_for("int4")
    with pytest.raises(TdslError, match="unknown threshold"):
        pipeline_for("ternary", threshold="median")


def test_mixed_policy_from_override() -> None:
    frozen = tdsl.quantize("lenet", precision="ternary", override="conv1=int8 fc3=fp32 fc1=fp16")
    by_weight = {s.weight: s.precision for s in frozen.layout.values() if s.role in ("packed", "weight")}
    assert by_weight == {"conv1.weight": "int8", "conv2.weight": "ternary", "fc1.weight": "fp16",
                         "fc2.weight": "ternary", "fc3.weight": "fp32"}


def test_qat_then_freeze_round_trip() -> None:
    torch.manual_seed(0)
    compiled, net = tdsl.qat("mlp", "ternary")
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(16, 64), torch.randint(0, 10, (16,))
    before = net.fc2.weight.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    assert not torch.equal(before, net.fc2.weight)
    net.eval()
    frozen = compiled.freeze(net)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), net(x), rtol=1e-5, atol=1e-6)


def test_calibration_lowers_layer_output_error() -> None:
    torch.manual_seed(0)
    batches = [torch.randn(8, 1, 8, 8) for _ in range(2)]
    frozen = tdsl.quantize("lenet", precision="ternary", calibrate=batches)
    report = frozen.calibration
    assert set(report.layers) == set(_ternary_paths(frozen))
    for c in report.layers.values():
        assert c.error_after <= c.error_before
    assert report.error_after < report.error_before
    # The calibrated Δ is the one frozen.
    for path, (trits, _) in frozen.ternary_weights().items():
        assert abs((trits == 0).float().mean().item() - report.layers[path].sparsity) < 1e-6


def test_cli_quantize_report(tmp_path, capsys) -> None:
    out = tmp_path / "r.json"
    assert main(["quantize", "mlp", "--override", "fc2=int8", "--per-tensor", "--trit-format", "base3",
                 "--report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "memory (ternary, base3)" in text and "sparsity" in text
    data = json.loads(out.read_text())
    assert data["memory"]["total_bytes"] > 0 and data["sparsity"]["layers"] == []
    assert main(["quantize", "mlp", "--precision", "int4"]) == 1
    assert main(["quantize", "mlp", "--threshold", "nope"]) == 1


def test_memory_total_says_mixed_when_the_policy_kept_layers() -> None:
    import tdsl

    default = tdsl.quantize("lenet", precision="ternary").memory_report()
    assert default.stored_precision == "mixed" and default.layer_precisions() == {"fp16": 2, "ternary": 3}
    assert "\ntotal  mixed" in default.table() and "mixed: 2 fp16, 3 ternary layers" in default.table()
    everything = tdsl.quantize("lenet", precision="ternary", policy="all").memory_report()
    assert everything.stored_precision == "ternary" and "mixed" not in everything.table()
