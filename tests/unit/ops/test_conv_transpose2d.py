"""A ternary `conv_transpose2d` end to end: the DSL built-in, shape inference, the torch module
(training and frozen), the Numba CPU deployment and the ONNX export, each against
`torch.nn.functional.conv_transpose2d` on the frozen ternary weights.

The IR keeps the weight as w[O, C/groups, kh, kw] (conv2d's layout: scales and batch-norm folds
per output channel); torch takes the same numbers as [C, O/groups, kh, kw] (`torch_weight`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

import tdsl
from tdsl.backends.onnx import export_onnx
from tdsl.errors import TdslError

TERNARY = "shape-infer,ternarize{policy=all},canonicalize"

# (cin, cout, (kh, kw), input H x W, geometry): strides, paddings and output paddings apart
# and together, per-axis pairs, dilation, groups and a depthwise one without bias.
GEOMETRIES = [
    pytest.param((4, 6, (3, 3), (5, 7), {"stride": 2, "padding": 1, "output_padding": 1}), id="s2-p1-op1"),
    pytest.param((4, 6, (3, 2), (4, 6), {"stride": [2, 1], "padding": [1, 0], "output_padding": [1, 0]}),
                 id="pairs"),
    pytest.param((4, 6, (2, 2), (5, 5), {"dilation": 2, "groups": 2}), id="dilation-groups"),
    pytest.param((6, 6, (3, 3), (4, 5), {"stride": 3, "padding": 2, "output_padding": 2, "groups": 3}),
                 id="s3-p2-op2"),
    pytest.param((4, 4, (3, 3), (6, 6), {"stride": 2, "output_padding": 1, "groups": 4, "bias": False}),
                 id="depthwise-nobias"),
]


def _program(cin: int, cout: int, kernel: tuple[int, int], hw: tuple[int, int], geometry: dict) -> str:
    opts = {k: v for k, v in geometry.items() if k != "bias"}
    groups = opts.get("groups", 1)
    bias = geometry.get("bias", True)
    args = "".join(f", {k}={v}" for k, v in opts.items())
    return f"""layer Up() {{
    let weight: Tensor[float32, {cout}, {cin // groups}, {kernel[0]}, {kernel[1]}] = kaiming_uniform()
    {"let bias: Tensor[float32, " + str(cout) + "] = uniform(bound=0.5)" if bias else ""}
    fn forward(x: Tensor[float32, N, {cin}, {hw[0]}, {hw[1]}]) -> Tensor[float32, N, {cout}, OH, OW] {{
        return conv_transpose2d(x, weight{", bias" if bias else ""}{args})
    }}
}}
"""


def torch_weight(w: torch.Tensor, groups: int) -> torch.Tensor:
    """w[O, C/g, kh, kw] as F.conv_transpose2d's [C, O/g, kh, kw]."""
    out, per_group = w.shape[:2]
    return w.reshape(groups, out // groups, per_group, *w.shape[2:]).transpose(1, 2).reshape(
        groups * per_group, out // groups, *w.shape[2:])


def _frozen(case: tuple) -> tuple[object, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(frozen model, input, the torch module's output, F.conv_transpose2d on the frozen trits)."""
    cin, cout, kernel, hw, geometry = case
    compiled = tdsl.compile(_program(*case), pipeline=TERNARY)
    torch.manual_seed(0)
    module = compiled.to_torch().eval()
    frozen = compiled.freeze(module)
    trits, scale = frozen.ternary_weights()["weight"]
    assert set(trits.unique().tolist()) <= {-1, 0, 1} and scale.shape == (cout,)  # per output channel
    groups = geometry.get("groups", 1)
    w = trits.float() * scale.reshape(-1, 1, 1, 1)
    pair = lambda v: tuple(v) if isinstance(v, list) else (v, v)  # noqa: E731
    kwargs = {k: pair(geometry.get(k, d)) for k, d in (("stride", 1), ("padding", 0), ("output_padding", 0),
                                                       ("dilation", 1))}
    x = torch.randn(2, cin, *hw, generator=torch.Generator().manual_seed(1))
    bias = frozen.state_dict().get("bias")
    ref = F.conv_transpose2d(x, torch_weight(w, groups), bias, groups=groups, **kwargs)
    with torch.no_grad():
        y = module(x)
    return frozen, x, y, ref


@pytest.fixture(scope="module", params=GEOMETRIES)
def case(request: pytest.FixtureRequest) -> tuple:
    return _frozen(request.param)


def test_torch_training_and_frozen_modules_match_f_conv_transpose2d(case: tuple) -> None:
    frozen, x, y, ref = case
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(frozen(x), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act_quant", ["float", "int8", "int8-nhwc"])
def test_numba_deployment_matches_torch(case: tuple, act_quant: str) -> None:
    """The transposed conv runs as a float conv on every act_quant (int8-nhwc falls back to a
    float step for it, as for other ops without an NHWC kernel)."""
    frozen, x, _, ref = case
    y = frozen.deploy(act_quant=act_quant)(x.numpy())
    np.testing.assert_allclose(y, ref.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("form", ["packed", "int8"])
def test_onnx_export_matches_torch(case: tuple, form: str, tmp_path: Path) -> None:
    frozen, x, _, ref = case
    export_onnx(frozen, tmp_path / "up.onnx", ternary_form=form)
    graph = onnx.load(str(tmp_path / "up.onnx")).graph
    assert [n.op_type for n in graph.node].count("ConvTranspose") == 1
    session = ort.InferenceSession(str(tmp_path / "up.onnx"), providers=["CPUExecutionProvider"])
    y = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(y, ref.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("hw,geometry", [
    ((5, 7), {"stride": 2, "padding": 1, "output_padding": 1}),
    ((5, 7), {"stride": 2}),
    ((4, 4), {"stride": [3, 2], "padding": [2, 0], "output_padding": [1, 1]}),
    ((3, 3), {"padding": 1, "dilation": 3, "output_padding": 2}),
])
def test_shape_inference_gives_torchs_output_shape(hw: tuple[int, int], geometry: dict) -> None:
    case = (4, 8, (3, 3), hw, geometry)
    ir = tdsl.compile(_program(*case), pipeline="shape-infer").ir
    line = next(ln for ln in ir.splitlines() if "tdsl.conv_transpose2d" in ln)
    pair = lambda v: tuple(v) if isinstance(v, list) else (v, v)  # noqa: E731
    kwargs = {k: pair(geometry.get(k, d)) for k, d in (("stride", 1), ("padding", 0), ("output_padding", 0),
                                                       ("dilation", 1))}
    expected = F.conv_transpose2d(torch.zeros(1, 4, *hw), torch.zeros(4, 8, 3, 3), **kwargs).shape
    assert line.endswith(f"-> tensor<?x8x{expected[2]}x{expected[3]}xf32>")


def test_a_bad_output_padding_is_an_error_at_its_dsl_location(tmp_path: Path) -> None:
    source = tmp_path / "up.tdsl"
    source.write_text(_program(4, 6, (3, 3), (5, 5), {"stride": 2, "output_padding": 2}))
    with pytest.raises(TdslError) as info:
        tdsl.compile(source, pipeline="shape-infer")
    line = 5  # the forward's return; the column is the output_padding argument's
    col = source.read_text().splitlines()[line - 1].index("output_padding=2") + 1
    assert str(info.value).startswith(f"{source}:{line}:{col}: error: output_padding must be smaller than "
                                      "stride or dilation, got [2, 2] with stride [2, 2] and dilation [1, 1]")


def test_a_padding_that_leaves_no_output_is_a_located_shape_error() -> None:
    with pytest.raises(TdslError, match=r"padding 3x3 leaves no output for input 2x2 and kernel 3x3") as info:
        tdsl.compile(_program(4, 6, (3, 3), (2, 2), {"padding": 3}), pipeline="shape-infer")
    assert info.value.loc is not None and info.value.loc.line == 5


def test_int8_weights_are_refused_at_the_ops_location() -> None:
    """Kept-precision int8 is conv2d's and linear's (dynamic activation quantisation): torch and
    the Numba plan refuse it on conv_transpose2d, naming the DSL line."""
    compiled = tdsl.compile(_program(4, 6, (3, 3), (5, 5), {"stride": 2}),
                            pipeline='shape-infer,ternarize{override="weight=int8"},canonicalize')
    with pytest.raises(TdslError, match="int8 weights on conv2d and linear only, not on tdsl.conv_transpose2d") \
            as info:
        compiled.to_torch()
    assert info.value.loc is not None and info.value.loc.line == 5
    rng = np.random.default_rng(0)
    weights = {"weight": rng.standard_normal((6, 4, 3, 3)).astype(np.float32), "bias": np.zeros(6, np.float32)}
    with pytest.raises(TdslError, match="conv_transpose2d with ternary, fp32 or fp16 weights, not int8") as info:
        compiled.with_weights(weights).deploy()
    assert info.value.loc is not None and info.value.loc.line == 5


PRELUDE_NET = """layer Net() {
    let up = ConvTranspose2d(4, 8, kernel=3, stride=2, padding=1, output_padding=1)
    let bn = BatchNorm2d(8)
    fn forward(x: Tensor[float32, N, 4, 6, 6]) -> Tensor[float32, N, 8, 12, 12] {
        return relu(bn(up(x)))
    }
}
"""


def test_the_prelude_layer_trains_and_fuses_batch_norm_and_relu(tmp_path: Path) -> None:
    """`ConvTranspose2d` after a few QAT steps: the frozen model, the Numba deployment (bn folded
    into the per-channel scale, relu in the epilogue) and ONNX agree with the torch module."""
    compiled = tdsl.compile(PRELUDE_NET, pipeline=TERNARY)
    torch.manual_seed(0)
    module = compiled.to_torch()
    opt = torch.optim.SGD(module.parameters(), lr=0.05)
    x = torch.randn(3, 4, 6, 6, generator=torch.Generator().manual_seed(2))
    for _ in range(3):
        loss = module(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert module.up.weight.grad is not None and module.up.weight.grad.abs().sum() > 0
    module.eval()
    with torch.no_grad():
        y = module(x)
    frozen = compiled.freeze(module)
    torch.testing.assert_close(frozen(x), y, rtol=1e-5, atol=1e-5)
    deployed = frozen.deploy(act_quant="float")
    assert "conv_transpose2d" in deployed.plan.describe() and "affine" not in deployed.plan.describe()
    np.testing.assert_allclose(deployed(x.numpy()), y.numpy(), rtol=1e-4, atol=1e-5)
    export_onnx(frozen, tmp_path / "net.onnx")
    session = ort.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0], y.numpy(),
                               rtol=1e-4, atol=1e-5)
