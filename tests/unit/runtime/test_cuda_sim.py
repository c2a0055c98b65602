"""CUDA kernels (cuda_gemm, cuda_conv2d) against the CPU kernels, in the CUDA simulator.

The simulator must be switched on before `numba.cuda` is first imported and must not leak
into other tests, so each check runs in a fresh subprocess with NUMBA_ENABLE_CUDASIM=1.
Tolerances: the int8 path must give the CPU's int32 accumulators exactly (same float32
quantisation formula, integer sums); float outputs may differ where a GPU fuses the
epilogue's multiply-add (one rounding, <= 2^-24 relative: we allow 1e-6 relative, 1e-5
absolute) or, in the float path, sums fp32 activations in another order. Both orders are within
K * 2^-24 * sum|x*t| of the exact value; for random signs the errors add like a random walk,
about sqrt(K) * 2^-24 * |y| ~ 2e-6 |y| at K = 300, so the float path allows 1e-5 relative and
1e-4 absolute (outputs here are O(10)). The same scripts run on a real GPU under the `gpu` marker.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

GEMM_CHECK = """
    import numpy as np
    from tdsl.runtime import gemm
    from tdsl.runtime.cuda_gemm import int8_accumulators_cuda, ternary_linear_cuda
    from tdsl.runtime.packing import pack
    rng = np.random.default_rng(0)
    for B, K, N in [(1, 7, 5), (3, 37, 9), (2, 300, 40)]:  # tail bytes; 2 tiles, 2 blocks (sim)
        t = rng.integers(-1, 2, (N, K)).astype(np.int8)
        p = pack(t)
        x = rng.standard_normal((B, K)).astype(np.float32)
        s = rng.uniform(0.5, 2, N).astype(np.float32)
        bias = rng.standard_normal(N).astype(np.float32)
        res = rng.standard_normal((B, N)).astype(np.float32)
        assert (int8_accumulators_cuda(x, p) == gemm.int8_accumulators(x, p)).all()
        for aq, act, tol in [("int8", "relu", 1e-6), ("float", "relu6", 1e-5)]:
            kw = dict(activation=act, residual=res, act_quant=aq)
            y = ternary_linear_cuda(x, p, s, bias, **kw)
            np.testing.assert_allclose(y, gemm.ternary_linear(x, p, s, bias, **kw),
                                       rtol=tol, atol=10 * tol)
    print("ok")
"""

CONV_CHECK = """
    import numpy as np
    from tdsl.runtime.conv2d import ternary_conv2d
    from tdsl.runtime.cuda_conv2d import ternary_conv2d_cuda
    from tdsl.runtime.packing import pack
    rng = np.random.default_rng(1)
    cases = CASES  # (Nimg, C, H, W, O, k, stride, padding, dilation, groups)
    for Nimg, C, H, W, O, k, st, pad, dil, g in cases:
        t = rng.integers(-1, 2, (O, C // g, *k)).astype(np.int8)
        p = pack(t)
        x = rng.standard_normal((Nimg, C, H, W)).astype(np.float32)
        s = rng.uniform(0.5, 2, O).astype(np.float32)
        b = rng.standard_normal(O).astype(np.float32)
        kw = dict(stride=st, padding=pad, dilation=dil, groups=g)
        ref = ternary_conv2d(x, p, k, s, b, **kw)
        res = rng.standard_normal(ref.shape).astype(np.float32)
        for aq, tol in [("int8", 1e-6), ("float", 1e-5)]:
            kw.update(act_quant=aq, residual=res, activation="relu")
            np.testing.assert_allclose(ternary_conv2d_cuda(x, p, k, s, b, **kw),
                                       ternary_conv2d(x, p, k, s, b, **kw), rtol=tol, atol=10 * tol)
    print("ok")
"""


# strided + padded + dilated; depthwise (one line each: they are pasted into the scripts)
SMALL_CONVS = ("[(1, 3, 5, 5, 2, (3, 3), (2, 1), (1, 1), (1, 2), 1), "
               "(1, 2, 5, 5, 2, (3, 3), (2, 2), (1, 1), (1, 1), 2)]")
GROUPED_CONVS = "[(2, 4, 4, 4, 4, (3, 3), (1, 1), (1, 1), (1, 1), 2)]"


def run_check(code: str, simulator: bool) -> None:
    env = dict(os.environ)
    if simulator:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    else:
        env.pop("NUMBA_ENABLE_CUDASIM", None)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, env=env)
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stdout.strip().endswith("ok")


@pytest.mark.parametrize("code", [GEMM_CHECK, CONV_CHECK.replace("CASES", SMALL_CONVS)],
                         ids=["gemm", "conv2d"])
def test_cuda_simulator_matches_cpu(code: str) -> None:
    run_check(code, simulator=True)


@pytest.mark.slow
def test_cuda_simulator_grouped_conv() -> None:
    """The simulator runs one Python thread per CUDA thread: a grouped conv takes ~10 s."""
    run_check(CONV_CHECK.replace("CASES", GROUPED_CONVS), simulator=True)


def test_simulator_did_not_leak() -> None:
    assert os.environ.get("NUMBA_ENABLE_CUDASIM", "0") in ("", "0")


@pytest.mark.gpu
@pytest.mark.parametrize("code", [GEMM_CHECK, CONV_CHECK.replace("CASES", SMALL_CONVS),
                                  CONV_CHECK.replace("CASES", GROUPED_CONVS)],
                         ids=["gemm", "conv2d", "grouped-conv2d"])
def test_real_gpu_matches_cpu(code: str) -> None:
    from numba import cuda

    if not cuda.is_available():
        pytest.skip("no CUDA device")
    run_check(code, simulator=False)
