"""CPU ternary linear kernels (tdsl.runtime.gemm) against the numpy reference.

Error bounds used below (x float32 [B, K], trits T, per-output scale s):

* int8 path vs the float64 reference of the *same integers* (`reference.ternary_linear`,
  act_quant="int8"): the integer sums are exact (asserted bit for bit), so the only error is
  the float32 epilogue: float32(acc) is exact (|acc| < 2^24 here), then one rounding each for
  xs*s, the product, + bias, + residual: <= 4 * 2^-24 relative to the largest term; we allow
  1e-6 * (|acc*xs*s| + |bias| + |residual|) per element.
* int8 path vs the float64 reference with float activations: absmax quantisation rounds
  x/xs to the nearest integer (|xq| <= 127 is never clipped since |x| <= amax), so each
  element is off by at most xs/2 = amax/254, and |y - y_float| <= |s[n]| * xs[b]/2 *
  sum_k |T[n, k]| exactly (+ the epilogue rounding). Statistically the errors are independent
  and uniform, std xs/sqrt(12) each, so for Gaussian x (amax ~ 4 sigma at K ~ 1e3) the relative
  error max|y - y_float| / max|y_float| is about (4/127)/sqrt(12) ~ 1e-2; the statistical test
  allows 3e-2.
* float path: recursive fp32 summation of K terms errs by at most about K * 2^-24 *
  sum_k |x*t| (Higham's gamma_K), plus the epilogue rounding; that is the per-element bound.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tdsl.errors import TdslError
from tdsl.runtime import reference as R
from tdsl.runtime.activations import NAMES
from tdsl.runtime.compile_stats import compile_seconds
from tdsl.runtime.cpu_features import (
    ENV_VAR,
    forced_kernel_path,
    has_avx2,
    has_avx512_vnni,
    kernel_path,
    set_kernel_path,
)
from tdsl.runtime.gemm import fold_batchnorm, int8_accumulators, row_kernel, ternary_linear, warmup
from tdsl.runtime.packing import pack
from tdsl.runtime.quant_act import quantize_deinterleave

PATHS = ["portable",
         pytest.param("avx2", marks=pytest.mark.skipif(not has_avx2(), reason="this CPU has no AVX2")),
         pytest.param("vnni", marks=pytest.mark.skipif(
             not has_avx512_vnni(), reason="this CPU has no AVX-512 VNNI"))]
SHAPES = [(1, 1), (7, 5), (70, 9), (129, 33), (300, 13), (513, 6)]  # (K, N): odd K, tails
BATCHES = [1, 3, 8, 17]


def make(B: int, K: int, N: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = rng.integers(-1, 2, size=(N, K)).astype(np.int8)
    x = rng.standard_normal((B, K)).astype(np.float32)
    s = rng.uniform(0.5, 2.0, N).astype(np.float32)
    return x, t, pack(t), s


def epilogue_tol(acc_scaled: np.ndarray, bias=None, residual=None) -> np.ndarray:
    mag = np.abs(acc_scaled)
    if bias is not None:
        mag = mag + np.abs(bias)
    if residual is not None:
        mag = mag + np.abs(residual)
    return 1e-6 * mag + 1e-30


def summation_tol(x: np.ndarray, t: np.ndarray, s: np.ndarray) -> np.ndarray:
    """K * 2^-24 * sum_k |x * t| * |s|: the fp32 summation bound of the float path."""
    sum_abs = (np.abs(x).astype(np.float64) @ np.abs(t).T.astype(np.float64)) * np.abs(s)
    return x.shape[1] * 2.0 ** -24 * sum_abs


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("K,N", SHAPES)
def test_int8_matches_reference(path: str, B: int, K: int, N: int) -> None:
    x, t, p, s = make(B, K, N)
    acc = int8_accumulators(x, p, path=path)
    assert acc.dtype == np.int32
    np.testing.assert_array_equal(acc, R.int8_accumulators(x, t))
    y = ternary_linear(x, p, s, path=path)
    assert y.dtype == np.float32 and y.shape == (B, N)
    ref = R.ternary_linear(x, p, s)
    assert np.all(np.abs(y - ref) <= epilogue_tol(ref))
    # the quantisation bound against float activations: |s| * xs/2 * nnz(T row)
    _, xs = R.quantize_activations(x)
    bound = np.abs(s)[None, :] * xs[:, None] / 2 * np.abs(t).sum(1)[None, :]
    ref_float = R.ternary_linear(x, p, s, act_quant="float")
    assert np.all(np.abs(y - ref_float) <= bound + epilogue_tol(ref_float))


@pytest.mark.parametrize("path", PATHS[1:])
@pytest.mark.parametrize("B", BATCHES + [64])
@pytest.mark.parametrize("K,N", [(129, 33), (1000, 18), (4096, 8)])
def test_paths_identical(path: str, B: int, K: int, N: int) -> None:
    """Same integers on every path, hence bitwise-identical floats (shared epilogue)."""
    x, t, p, s = make(B, K, N, seed=1)
    bias = np.linspace(-1, 1, N).astype(np.float32)
    out = {}
    for name in ("portable", path):
        with forced_kernel_path(name):
            out[name] = (int8_accumulators(x, p), ternary_linear(x, p, s, bias, activation="relu"))
    np.testing.assert_array_equal(out["portable"][0], out[path][0])
    assert out["portable"][1].tobytes() == out[path][1].tobytes()


@pytest.mark.parametrize("path", PATHS[1:])
def test_extreme_values_do_not_saturate(path: str) -> None:
    """All codes 2 (t = +1) against +-127 activations: the largest i16 partial sums the AVX2
    kernel forms (a full group of chunks, every pair at 2 * 2 * 127), and their negatives."""
    K, N = 4096, 3
    t = np.ones((N, K), np.int8)
    t[1] = -1
    t[2, ::2] = 0
    for sign in (1.0, -1.0):
        x = np.full((1, K), sign, np.float32)
        np.testing.assert_array_equal(int8_accumulators(x, pack(t), path=path), R.int8_accumulators(x, t))


@pytest.mark.skipif(not has_avx2(), reason="this CPU has no AVX2")
@pytest.mark.parametrize("K", [1536, 1540, 2056])
def test_gemv_avx2_groups_tasks_and_alignment(K: int) -> None:
    """The decode kernel over rows of a full group of 8 chunks plus a remainder (12, 12 + a
    partial chunk, 16 + 2), N = 70 rows (tasks of ROWS_PER_TASK, the last one short): the
    reference integers, and the same bits whatever the alignment of the codes it is given."""
    N = 70
    x, t, p, s = make(1, K, N, seed=4)
    np.testing.assert_array_equal(int8_accumulators(x, p, path="avx2"), R.int8_accumulators(x, t))
    xq, xs, sums = quantize_deinterleave(x)
    bias = np.linspace(-1, 1, N).astype(np.float32)
    outs = []
    for shift in (0, 16, 1):
        buf = np.zeros(xq.nbytes + 64, np.int8)
        start = (-buf.ctypes.data) % 64 + shift
        codes = buf[start:start + xq.nbytes].reshape(xq.shape)
        codes[...] = xq
        y, yi = np.empty((1, N), np.float32), np.empty((1, N), np.int32)
        row_kernel("avx2", 1)(codes, sums, xs, p, s, bias, np.zeros((0, 0), np.float32), 0, y, yi)
        outs.append((y.tobytes(), yi))
    np.testing.assert_array_equal(outs[0][1], R.int8_accumulators(x, t))
    assert all(o[0] == outs[0][0] and np.array_equal(o[1], outs[0][1]) for o in outs[1:])


def test_int8_statistical_error() -> None:
    """max|y - y_float| / max|y_float| ~ 1e-2 for Gaussian activations (see the docstring)."""
    x, t, p, s = make(4, 1024, 256, seed=2)
    ref = R.ternary_linear(x, p, s, act_quant="float")
    err = np.abs(ternary_linear(x, p, s) - ref).max() / np.abs(ref).max()
    assert 1e-4 < err < 3e-2


@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("K,N", SHAPES + [(4096, 4)])
def test_float_path(B: int, K: int, N: int) -> None:
    x, t, p, s = make(B, K, N, seed=3)
    y = ternary_linear(x, p, s, act_quant="float")
    ref = R.ternary_linear(x, p, s, act_quant="float")
    assert np.all(np.abs(y - ref) <= summation_tol(x, t, s) + epilogue_tol(ref))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("act_quant", ["int8", "float"])
@pytest.mark.parametrize("activation", [None, *NAMES[1:]])  # every code the kernels apply
@pytest.mark.parametrize("B", [1, 5])
def test_epilogues(path: str, act_quant: str, activation: str | None, B: int) -> None:
    x, t, p, s = make(B, 75, 11, seed=4)
    x *= 3  # so that relu6 clips
    bias = np.random.default_rng(5).standard_normal(11).astype(np.float32)
    res = np.random.default_rng(6).standard_normal((B, 11)).astype(np.float32)
    for b, r in [(None, None), (bias, None), (None, res), (bias, res)]:
        y = ternary_linear(x, p, s, b, activation=activation, residual=r, act_quant=act_quant,
                           path=path)
        ref = R.ternary_linear(x, p, s, b, activation=activation, residual=r, act_quant=act_quant)
        pre = R.ternary_linear(x, p, s, act_quant=act_quant)
        tol = epilogue_tol(pre, b, r) + (summation_tol(x, t, s) if act_quant == "float" else 0)
        if activation == "relu2":  # d(v^2)/dv = 2v: an error e before the square is about 2|v|e after it
            tol = tol * (2 * np.sqrt(np.abs(ref)) + 1) + 1e-6 * np.abs(ref)
        assert np.all(np.abs(y - ref) <= tol)
    if activation == "relu6":
        assert y.max() == 6.0 and y.min() == 0.0


def test_folded_batchnorm() -> None:
    """bn(s * x.T + b) computed by the reference equals the folded scale/bias in the kernel."""
    x, t, p, s = make(3, 40, 6, seed=7)
    rng = np.random.default_rng(8)
    bias, gamma, beta, mean = (rng.standard_normal(6).astype(np.float32) for _ in range(4))
    var = rng.uniform(0.5, 2, 6).astype(np.float32)
    s2, b2 = fold_batchnorm(s, bias, gamma, beta, mean, var, eps=1e-5)
    y = ternary_linear(x, p, s2, b2, act_quant="float")
    z = R.ternary_linear(x, p, s, bias, act_quant="float")
    ref = (z - mean) / np.sqrt(var.astype(np.float64) + 1e-5) * gamma + beta
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_zero_rows_and_scalar_scale() -> None:
    x = np.zeros((2, 9), np.float32)
    x[1] = 1.0
    t = np.ones((3, 9), np.int8)
    y = ternary_linear(x, pack(t), 0.5)
    np.testing.assert_array_equal(y, [[0, 0, 0], [4.5, 4.5, 4.5]])


@pytest.mark.parametrize("kwargs,match", [
    (dict(x=np.zeros((2, 8), np.float64)), "x must be a float32"),
    (dict(x=np.zeros(8, np.float32)), "x must be a float32"),
    (dict(packed=np.zeros((3, 2), np.int8)), "uint8"),
    (dict(packed=np.zeros((3, 3), np.uint8)), "bytes per row"),
    (dict(scale=np.ones(4, np.float32)), "scale has shape"),
    (dict(scale="a"), "scale must be a float"),
    (dict(bias=np.ones(2, np.float32)), "bias has shape"),
    (dict(residual=np.ones((3, 2), np.float32)), "residual has shape"),
    (dict(activation="swish"), "unknown activation"),
    (dict(act_quant="int4"), "unknown act_quant"),
    (dict(path="sse2"), "unknown kernel path"),
])
def test_bad_arguments(kwargs: dict, match: str) -> None:
    args = dict(x=np.zeros((2, 8), np.float32), packed=np.full((3, 2), 0x55, np.uint8),
                scale=1.0, bias=None, activation=None, residual=None, act_quant="int8",
                path=None)
    args.update(kwargs)
    x, packed, scale, bias = args.pop("x"), args.pop("packed"), args.pop("scale"), args.pop("bias")
    with pytest.raises(TdslError, match=match):
        ternary_linear(x, packed, scale, bias, **args)


def test_kernel_path_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    auto = "vnni" if has_avx512_vnni() else "avx2" if has_avx2() else "portable"
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert kernel_path() == auto
    monkeypatch.setenv(ENV_VAR, "portable")
    assert kernel_path() == "portable"
    assert kernel_path("auto") == auto  # the argument wins over the environment
    with forced_kernel_path("auto"):
        assert kernel_path() == auto  # forcing wins over the environment
    monkeypatch.setenv(ENV_VAR, "sse")
    with pytest.raises(TdslError, match=ENV_VAR):
        kernel_path()
    with pytest.raises(TdslError, match="set_kernel_path"):
        set_kernel_path("fast")
    if not has_avx512_vnni():
        with pytest.raises(TdslError, match="lacks AVX-512 VNNI"):
            kernel_path("vnni")
    if not has_avx2():
        with pytest.raises(TdslError, match="lacks AVX2"):
            kernel_path("avx2")


def test_warmup_and_compile_seconds() -> None:
    before = compile_seconds()
    assert warmup() >= 0.0
    assert compile_seconds() >= before


def run_python(code: str, env: dict | None = None) -> str:
    full_env = dict(os.environ, **(env or {}))
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=True,
                         capture_output=True, text=True, env=full_env)
    return out.stdout


def test_runtime_does_not_import_torch() -> None:
    out = run_python("""
        import sys
        import numpy as np
        import tdsl.runtime.gemm, tdsl.runtime.conv2d, tdsl.runtime.reference
        from tdsl.runtime.gemm import ternary_linear
        ternary_linear(np.ones((1, 8), np.float32), np.full((2, 2), 0x55, np.uint8), 1.0)
        print("torch" in sys.modules)
    """)
    assert out.strip() == "False"


@pytest.mark.slow
def test_second_process_loads_kernels_from_cache(tmp_path) -> None:
    """Run the same calls in two fresh processes sharing an empty cache directory: the first
    compiles (cache misses), the second must only load (hits, no misses, no compile time)."""
    code = """
        import numpy as np
        from tdsl.runtime import gemm
        from tdsl.runtime.compile_stats import cache_counts, compile_seconds
        gemm.warmup()
        hits, misses = cache_counts(gemm.kernels())
        print(hits, misses, compile_seconds())
    """
    env = {"NUMBA_CACHE_DIR": str(tmp_path)}
    first = run_python(code, env).split()
    second = run_python(code, env).split()
    assert int(first[1]) > 0
    assert int(second[0]) > 0 and int(second[1]) == 0
    assert float(second[2]) == 0.0
