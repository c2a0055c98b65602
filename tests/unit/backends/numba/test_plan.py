"""The plan: handlers, errors with locations, shapes per batch, liveness-based buffer reuse,
and the executor's ternary conv driver against `tdsl.runtime.conv2d.ternary_conv2d`."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tdsl
from tdsl import deploy
from tdsl.backends.numba import build_plan
from tdsl.backends.numba.executor import _conv_ternary, _Ctx
from tdsl.backends.numba.plan import Step
from tdsl.errors import TdslError
from tdsl.lowering import kernel_level
from tdsl.runtime import activations
from tdsl.runtime import nchw_float as K
from tdsl.runtime.conv2d import ternary_conv2d
from tdsl.runtime.packing import pack


@pytest.fixture(scope="module")
def lenet():
    torch.manual_seed(0)
    return tdsl.quantize("lenet", precision="ternary")


def test_lenet_plan_steps_and_folded_weights(lenet) -> None:
    plan = deploy(lenet).plan
    kinds = [s.kind for s in plan.steps]
    assert kinds == ["conv2d_float", "max_pool2d", "conv2d_ternary", "max_pool2d", "view",
                     "linear_ternary", "linear_ternary", "linear_float"]
    conv2 = plan.steps[2]
    assert conv2.weights["packed"].dtype == np.uint8 and conv2.weights["packed"].shape == (16, 38)
    assert conv2.attrs["activation"] == activations.RELU and conv2.loc is not None
    # bn folded: scale' = alpha * gamma / sqrt(var + eps)
    sd = lenet.state_dict()
    k = sd["bn2.weight"].numpy() / np.sqrt(sd["bn2.running_var"].numpy() + 1e-5)
    np.testing.assert_allclose(conv2.weights["scale"], sd["conv2.weight_scale"].numpy() * k, rtol=1e-6)
    assert plan.weight_bytes > 0 and "conv2d_ternary" in plan.describe()


def test_schedule_per_batch_size_and_shape_errors(lenet) -> None:
    model = deploy(lenet)
    for batch in (1, 3):
        assert model(np.random.rand(batch, 1, 8, 8).astype(np.float32)).shape == (batch, 10)
    assert set(model.plan._schedules) == {((1, 1, 8, 8),), ((3, 1, 8, 8),)}
    with pytest.raises(TdslError, match=r"input 'x' of forward of 'LeNet' expects float32\[\?, 1, 8, 8\], "
                                        r"got float32\[2, 1, 9, 9\]: dim 2 is 9, not 8"):
        model(np.zeros((2, 1, 9, 9), np.float32))
    with pytest.raises(TdslError, match="takes 1 input"):
        model()


def test_liveness_keeps_resnet_peak_near_three_activations() -> None:
    """A residual block keeps its input, the inner activation and the output live: the
    arena must not exceed three of the largest activation (plus the small tail)."""
    torch.manual_seed(0)
    frozen = tdsl.quantize("resnet18", precision="ternary", params=dict(num_classes=10, cifar_stem=True,
                                                                        image_size=32))
    sched = deploy(frozen).schedule((2, 3, 32, 32))
    largest = 2 * 64 * 32 * 32 * 4
    assert sched.peak_activation_bytes <= 3 * largest
    assert len(sched.buffer_bytes) <= 4


def test_views_share_their_input_buffer(lenet) -> None:
    plan = deploy(lenet).plan
    sched = plan.schedule(((2, 1, 8, 8),))
    view = next(s for s in plan.steps if s.is_view)
    assert sched.buffer_of[view.output] == sched.buffer_of[view.inputs[0]]


def test_missing_weight_names_the_store_key(lenet) -> None:
    arrays = {k: v.numpy() for k, v in lenet.state_dict().items() if k != "conv2.weight_packed"}
    with pytest.raises(TdslError, match="parameter store has no 'conv2.weight_packed'") as info:
        build_plan(kernel_level(lenet.compiled.module), arrays)
    assert info.value.loc is not None


def test_op_without_a_handler_is_an_error_at_its_location() -> None:
    """A ternarized but unpacked program still holds tern.quantize: no kernel for it."""
    compiled = tdsl.compile("lenet", pipeline="shape-infer,ternarize")
    arrays = {k: v.detach().numpy() for k, v in compiled.to_torch().state_dict().items()}
    with pytest.raises(TdslError, match="the Numba backend has no kernel for 'tern.quantize': freeze or quantize") as info:
        compiled.with_weights(arrays).deploy()
    assert info.value.loc is not None and info.value.loc.file.endswith(".tdsl")


def test_unknown_device_and_act_quant(lenet) -> None:
    with pytest.raises(TdslError, match="unknown device 'tpu'"):
        deploy(lenet, device="tpu")
    with pytest.raises(TdslError, match="unknown act_quant 'int4'"):
        deploy(lenet, act_quant="int4")


@pytest.mark.parametrize("act_quant", ["int8", "float"])
@pytest.mark.parametrize("groups, residual", [(1, False), (1, True), (2, True), (6, False)])
def test_conv_driver_equals_runtime_ternary_conv2d(act_quant: str, groups: int, residual: bool) -> None:
    """The executor's driver (arena output, shared scratch) is the runtime's conv, bit for bit."""
    rng = np.random.default_rng(0)
    C, O, k = 6, 6, 3
    x = rng.standard_normal((2, C, 7, 7)).astype(np.float32)
    packed = pack(rng.integers(-1, 2, (O, C // groups * k * k)).astype(np.int8))
    s, b = rng.uniform(0.5, 2, O).astype(np.float32), rng.standard_normal(O).astype(np.float32)
    res = rng.standard_normal((2, O, 4, 4)).astype(np.float32) if residual else None
    kw = dict(stride=2, padding=1, groups=groups, activation="relu", act_quant=act_quant, path="portable")
    want = ternary_conv2d(x, packed, k, s, b, residual=res, **kw)
    step = Step("conv2d_ternary", (0,), 1, {"kernel": (k, k), "stride": (2, 2), "padding": (1, 1),
                                            "dilation": (1, 1), "groups": groups, "out_channels": O,
                                            "activation": activations.RELU, "residual": residual},
                {"packed": packed, "scale": s, "bias": b}, "kern.conv2d", None)
    y = np.empty_like(want)
    ws = {"cols": np.empty(2 * 16 * C * k * k, np.float32), "gemm": np.empty(2 * 16 * O, np.float32)}
    _conv_ternary(step, [x] + ([res] if residual else []), y, _Ctx(act_quant, "portable", ws))
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("kernel, stride, padding", [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1))])
def test_pool_kernels_match_torch(kernel, stride, padding) -> None:
    x = torch.randn(2, 3, 9, 9)
    for fn, ours in ((F.max_pool2d, K.max_pool2d), (F.avg_pool2d, K.avg_pool2d)):
        want = fn(x, kernel, stride=stride, padding=padding).numpy()
        y = np.empty_like(want)
        ours(x.numpy(), *kernel, *stride, *padding, y)
        np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("out", [(1, 1), (3, 2), (4, 4)])
def test_adaptive_avg_pool_matches_torch(out) -> None:
    x = torch.randn(2, 3, 7, 9)
    want = F.adaptive_avg_pool2d(x, out).numpy()
    y = np.empty_like(want)
    K.adaptive_avg_pool2d(x.numpy(), y)
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)


def test_gelu_matches_torch() -> None:
    x = torch.randn(1000)
    y = np.empty(1000, np.float32)
    K.activation_map(x.numpy(), activations.GELU, y)
    np.testing.assert_allclose(y, F.gelu(x).numpy(), rtol=1e-6, atol=1e-6)


def test_profile_reports_every_step_with_its_path(lenet) -> None:
    run = deploy(lenet, profile=True)
    with pytest.raises(TdslError, match="no call has been profiled"):
        run.profile()
    x = np.random.rand(2, 1, 8, 8).astype(np.float32)
    for _ in range(3):
        run(x)
    rows = run.profile()
    assert [r.kernel for r in rows] == [str(s.kind) for s in run.plan.steps if not s.is_view]
    assert abs(sum(r.share for r in rows) - 1) < 1e-6 and all(r.ms >= 0 for r in rows)
    paths = {r.kernel: r.path for r in rows}
    assert paths["conv2d_float"] == "fp16-kept" and paths["max_pool2d"] == "numba"
    assert paths["conv2d_ternary"].endswith("/int8")
    conv = rows[0]
    assert conv.rate_unit == "GOPS" and conv.inputs == ((2, 1, 8, 8),) and conv.rate > 0
    table = run.profile_table(top=3)
    assert "fp16-kept" in table or "portable/int8" in table or "vnni/int8" in table
    assert table.count("\n") == 3 + 2  # header, rule, 3 rows, total
    # the mean per step (at a tiny input size, what a step costs beyond its work)
    assert table.splitlines()[-1].startswith(f"total {sum(r.ms for r in rows):.3f} ms over {len(rows)} steps, "
                                             f"{1e3 * sum(r.ms for r in rows) / len(rows):.1f} us a step")


def test_profile_needs_profile_true_and_the_cpu(lenet) -> None:
    with pytest.raises(TdslError, match="deploy it with profile=True"):
        deploy(lenet).profile()
    with pytest.raises(TdslError, match="profile=True times the CPU runtime"):
        deploy(lenet, device="cuda", profile=True)


def test_cuda_without_a_gpu_is_refused_at_deploy_time(lenet) -> None:
    """Here the simulator is off and there is no GPU: the error comes at deploy, not at the first call."""
    from numba import cuda

    if cuda.is_available():
        pytest.skip("a CUDA device (or the simulator) is available in this process")
    with pytest.raises(TdslError, match="finds no usable CUDA GPU"):
        deploy(lenet, device="cuda")


def test_blas_runs_single_threaded_inside_a_call_and_is_restored(lenet, monkeypatch) -> None:
    from threadpoolctl import threadpool_info

    from tdsl.backends.numba import executor
    from tdsl.backends.numba.plan import Kernel

    def blas_threads() -> set[int]:  # numpy's BLAS, the one the runtime calls
        return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas" and "numpy" in p["filepath"]}

    seen: list[set[int]] = []
    inner = executor.CPU_RUNNERS[Kernel.LINEAR_FLOAT]

    def spy(*args):
        seen.append(blas_threads())
        return inner(*args)

    monkeypatch.setitem(executor.CPU_RUNNERS, Kernel.LINEAR_FLOAT, spy)
    before = blas_threads()
    deploy(lenet)(np.random.rand(2, 1, 8, 8).astype(np.float32))
    assert seen == [{1}] and blas_threads() == before


def test_matmul_with_a_weight_operand_matches_torch() -> None:
    src = """
layer P() {
    let w: Tensor[float32, 8, 3] = randn()
    fn forward(x: Tensor[float32, N, 4, 8]) -> Tensor[float32, N, 4, 3] {
        return x @ w
    }
}
"""
    compiled = tdsl.compile(src)
    net = compiled.to_torch()
    state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    x = np.random.default_rng(0).standard_normal((2, 4, 8)).astype(np.float32)
    run = compiled.with_weights(state).deploy()
    (step,) = run.plan.steps
    assert step.kind == "matmul" and step.attrs["order"] == ("in", "rhs") and step.weights["rhs"].shape == (8, 3)
    with torch.no_grad():
        np.testing.assert_allclose(run(x), net(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)
