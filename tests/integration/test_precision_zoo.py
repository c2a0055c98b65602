"""Every zoo model through the precision pipeline (fp32 -> fp16 -> int8 -> ternary -> mixed),
checked against the plain fp32 module holding the dequantised weights, and the memory
figures of ResNet-18 / MobileNetV2 at 1000 classes."""
from __future__ import annotations

import pytest
import torch

import tdsl
from tdsl.precision import PIPELINE_ALL, quantize_all, summary_table
from tdsl.tools.tdsl_cli import main

ZOO = {
    "resnet18-cifar": ("resnet18", dict(num_classes=10, cifar_stem=True, image_size=32), (2, 3, 32, 32)),
    "resnet18-imagenet-stem": ("resnet18", dict(num_classes=10, image_size=32), (2, 3, 32, 32)),
    "mobilenetv2": ("mobilenetv2", dict(num_classes=10, image_size=32), (2, 3, 32, 32)),
    "mlp": ("mlp", {}, (2, 64)),
    "lenet": ("lenet", {}, (2, 1, 8, 8)),
}


def _reference(model: str, params: dict, frozen, int8_qat: bool) -> torch.nn.Module:
    """The fp32 module (or, for int8 activations, the int8 QAT module) loaded with the
    frozen model's dequantised weights: the same numbers the frozen module computes with."""
    pipeline = "shape-infer,precision{default=int8}" if int8_qat else "shape-infer"
    ref = tdsl.compile(model, params=params, pipeline=pipeline).to_torch()
    ref.load_state_dict(frozen.dequantized_state_dict(), strict=True)
    return ref.eval()


FAST = {("mlp", p) for p in PIPELINE_ALL} | {("lenet", p) for p in PIPELINE_ALL} | {
    ("resnet18-cifar", "ternary"), ("resnet18-cifar", "int8"), ("mobilenetv2", "mixed")}
"""Cases in the default run; the other zoo x precision cases (a few seconds each on large
models) are marked slow."""

CASES = [pytest.param(n, p, marks=() if (n, p) in FAST else pytest.mark.slow) for n in ZOO for p in PIPELINE_ALL]


@pytest.mark.parametrize("name, precision", CASES)
def test_zoo_precision_matches_dequantised_reference(name: str, precision: str) -> None:
    model, params, shape = ZOO[name]
    torch.manual_seed(0)
    frozen = tdsl.quantize(model, precision=precision, params=params)
    x = torch.randn(*shape)
    sd = frozen.state_dict()
    for s in frozen.layout.values():
        if s.role == "packed":
            assert sd[s.key].dtype == torch.uint8
    for trits, _ in frozen.ternary_weights().values():
        assert set(trits.unique().tolist()) <= {-1, 0, 1}
    has_int8 = any(s.precision == "int8" for s in frozen.layout.values())
    with torch.no_grad():
        out = frozen(x)
        # Plain fp32 module on the dequantised weights: the same numbers, so a tight match.
        # With int8 weights, activations are quantised at run time too: compare with the
        # int8 QAT module on the dequantised weights (it re-derives the same int8 values).
        ref = _reference(model, params, frozen, has_int8 and precision == "int8")
        if not has_int8 or precision == "int8":
            torch.testing.assert_close(out, ref(x), rtol=1e-4, atol=1e-5)
        else:
            assert out.shape == ref(x).shape and torch.isfinite(out).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_pipeline_all_shrinks(name: str) -> None:
    model, params, _ = ZOO[name]
    frozen_all = quantize_all(model, params=params)
    print(f"\n{name}\n{summary_table(frozen_all)}")
    sizes = {p: f.memory_report().total for p, f in frozen_all.items()}
    assert sizes["fp32"] > sizes["fp16"] > sizes["int8"] > sizes["ternary"]
    assert sizes["mixed"] < sizes["fp16"]


@pytest.mark.slow
def test_mixed_override_on_resnet_matches_reference() -> None:
    model, params, shape = ZOO["resnet18-cifar"]
    frozen = tdsl.quantize(model, params=params, override="conv1=fp32 layer1.0.conv1=fp16 layer4.*=ternary fc=fp16",
                           policy="all", format="base3")
    kinds = {s.weight: s.precision for s in frozen.layout.values() if s.role in ("packed", "weight")}
    assert kinds["conv1.weight"] == "fp32" and kinds["layer1.0.conv1.weight"] == "fp16"
    assert kinds["layer1.1.conv1.weight"] == "ternary" and kinds["fc.weight"] == "fp16"
    x = torch.randn(*shape)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), _reference(model, params, frozen, False)(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_cli_pipeline_all(name: str, capsys) -> None:
    model, params, _ = ZOO[name]
    args = ["quantize", model, "--pipeline-all"] + [f"--param={k}={v}" for k, v in params.items()]
    assert main(args) == 0
    out = capsys.readouterr().out
    for precision in PIPELINE_ALL:
        assert f"\n{precision} " in out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18-cifar", "resnet18-imagenet-stem", "mobilenetv2"])
def test_cli_pipeline_all_large(name: str, capsys) -> None:
    model, params, _ = ZOO[name]
    args = ["quantize", model, "--pipeline-all", "--param", f"num_classes={params['num_classes']}"]
    assert main(args) == 0
    assert "mixed" in capsys.readouterr().out


def _figures(model: str, labels: tuple[str, ...] | None = None) -> dict[str, tuple[int, int, float]]:
    """Stored bytes, fp32 bytes and ratio at 1000 classes, for the precisions and formats."""
    weights = tdsl.compile(model, pipeline="shape-infer").to_torch().state_dict()
    out = {}
    for label, kw in {
        "fp16": dict(precision="fp16"), "int8": dict(precision="int8"),
        "ternary-all-2bit": dict(precision="ternary", policy="all", format="2bit"),
        "ternary-all-base3": dict(precision="ternary", policy="all", format="base3"),
        "ternary-default-2bit": dict(precision="ternary", format="2bit"),
        "ternary-default-base3": dict(precision="ternary", format="base3"),
    }.items():
        if labels is not None and label not in labels:
            continue
        r = tdsl.quantize(model, weights=weights, **kw).memory_report()
        out[label] = (r.total, r.fp32_total, r.ratio)
    for label, (total, fp32, ratio) in out.items():
        print(f"{model:12s} {label:22s} {total:>12,} B of {fp32:>12,} B fp32: {ratio:6.2f}x")
    return out


@pytest.mark.slow
def test_resnet18_imagenet_memory_ratios() -> None:
    figures = _figures("resnet18", ("ternary-all-2bit", "ternary-all-base3", "ternary-default-2bit"))
    assert figures["ternary-all-2bit"][2] >= 15
    assert figures["ternary-all-base3"][2] >= 18
    assert figures["ternary-default-2bit"][2] >= 11


@pytest.mark.slow
def test_resnet18_imagenet_memory_figures_all_precisions() -> None:
    figures = _figures("resnet18")
    assert 1.99 < figures["fp16"][2] <= 2.0 and 3.9 < figures["int8"][2] <= 4.0


@pytest.mark.slow
def test_mobilenetv2_memory_figures() -> None:
    figures = _figures("mobilenetv2")
    assert figures["ternary-all-2bit"][2] > figures["int8"][2]
