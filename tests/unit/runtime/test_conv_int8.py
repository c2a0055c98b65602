"""The conv-shaped int8 kernel (tdsl.runtime.conv_int8) against the numpy reference.

Its integers must equal `reference.int8_accumulators` of the reference im2col exactly (the
kernel reorders k to (i, j, c) and takes the token absmax from an NHWC channel-max map;
neither may change a single integer), on every path; the float result must be bitwise the
same on every path and within float32 epilogue rounding of the reference. Shapes cover
what the micro-kernel blocks over: channel counts that are not multiples of 16 or of the
64-channel block (padding groups, 1-3 group remainders), positions that are not multiples
of MR or of a tile, K that is not a multiple of 16, several images, groups, tokens whose
whole window is zero (xs = 0), residual and activations.
"""
from __future__ import annotations

import numpy as np
import pytest

from tdsl.runtime import conv_int8 as CI
from tdsl.runtime import gemm
from tdsl.runtime import reference as R
from tdsl.runtime.cpu_features import has_avx2, has_avx512_vnni
from tdsl.runtime.activations import code_of
from tdsl.runtime.packing import pack

PATHS = ["portable",
         pytest.param("avx2", marks=pytest.mark.skipif(not has_avx2(), reason="this CPU has no AVX2")),
         pytest.param("vnni", marks=pytest.mark.skipif(
             not has_avx512_vnni(), reason="this CPU has no AVX-512 VNNI"))]

# (Nimg, C, H, W, O, k, stride, padding, dilation, groups)
CASES = [
    (1, 3, 8, 8, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),       # K = 27, one partial group
    (2, 4, 9, 7, 6, (3, 2), (2, 1), (1, 0), (1, 1), 1),       # strided, asymmetric, 2 images
    (1, 5, 11, 10, 3, (3, 3), (1, 2), (2, 3), (2, 3), 1),     # dilated and padded
    (2, 6, 7, 7, 4, (3, 3), (1, 1), (1, 1), (1, 1), 2),       # grouped
    (1, 64, 10, 9, 80, (3, 3), (1, 1), (1, 1), (1, 1), 1),    # 5 groups: a 4-block + 1
    (1, 32, 13, 11, 112, (1, 1), (1, 1), (0, 0), (1, 1), 1),  # 1x1, 7 groups: 4 + 3
    (3, 24, 7, 7, 40, (1, 1), (2, 2), (0, 0), (1, 1), 1),     # 1x1 strided, K = 24, 3 groups
    (1, 16, 20, 20, 200, (3, 3), (2, 2), (1, 1), (1, 1), 1),  # 13 groups, 100 positions
]


def make(case, seed=0):
    Nimg, C, H, W, O, k, st, pad, dil, g = case
    rng = np.random.default_rng(seed)
    t = rng.integers(-1, 2, size=(O, C // g, *k)).astype(np.int8)
    x = rng.standard_normal((Nimg, C, H, W)).astype(np.float32)
    x[0, :, : H // 2] = 0  # whole windows of zeros: xs = 0 tokens
    s = rng.uniform(0.5, 2.0, O).astype(np.float32)
    b = rng.standard_normal(O).astype(np.float32)
    return x, t, s, b, dict(stride=st, padding=pad, dilation=dil, groups=g)


def run(x, t, s, b, kw, path, residual=None, activation=None):
    O, Cg, kh, kwid = t.shape
    g = kw["groups"]
    shape = R.ternary_conv2d(x, pack(t), t.shape, s, **kw).shape
    panels = CI.conv_panels(pack(t), O, Cg, kh, kwid, g)
    y = np.empty(shape, np.float32)
    yi = np.empty(shape, np.int32)
    res = np.zeros((0, 0, 0, 0), np.float32) if residual is None else residual
    CI.conv2d_int8_into(y, x, panels, (kh, kwid), kw["stride"], kw["padding"], kw["dilation"], g, s, b,
                        res, code_of(activation), path, {}, yi)
    return y, yi


def reference_ints(x, t, kw) -> np.ndarray:
    O, Cg, kh, kwid = t.shape
    g = kw["groups"]
    Og = O // g
    out = []
    for n in range(x.shape[0]):
        per = []
        for gi in range(g):
            cols = R.im2col(x[n, gi * Cg:(gi + 1) * Cg], kh, kwid, kw["stride"], kw["padding"], kw["dilation"])
            per.append(R.int8_accumulators(cols, t[gi * Og:(gi + 1) * Og].reshape(Og, -1)).T)
        out.append(np.concatenate(per))
    return np.stack(out)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", CASES)
def test_integers_and_result_match_reference(case, path: str) -> None:
    x, t, s, b, kw = make(case)
    y, yi = run(x, t, s, b, kw, path)
    np.testing.assert_array_equal(yi.reshape(yi.shape[:2] + (-1,)), reference_ints(x, t, kw))
    ref = R.ternary_conv2d(x, pack(t), t.shape, s, b, **kw)
    pre = R.ternary_conv2d(x, pack(t), t.shape, s, None, **kw)
    np.testing.assert_array_less(np.abs(y - ref), 1e-6 * (np.abs(pre) + np.abs(b)[:, None, None]) + 1e-5)


@pytest.mark.parametrize("activation", [None, "relu", "relu6"])
@pytest.mark.parametrize("case", [CASES[1], CASES[4], CASES[6]])
def test_epilogue_and_paths_identical(case, activation) -> None:
    x, t, s, b, kw = make(case, seed=1)
    x *= 2
    shape = R.ternary_conv2d(x, pack(t), t.shape, s, **kw).shape
    res = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    y, _ = run(x, t, s, b, kw, "portable", res, activation)
    ref = R.ternary_conv2d(x, pack(t), t.shape, s, b, activation=activation, residual=res, **kw)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-4)
    for path, available in (("avx2", has_avx2()), ("vnni", has_avx512_vnni())):
        if available:
            v, _ = run(x, t, s, b, kw, path, res, activation)
            assert v.tobytes() == y.tobytes(), path


def test_panels_layout() -> None:
    """Byte 4*lane + kk of chunk c, bits 2j: code of channel lane at k' = 16c + 4j + kk,
    k' in (i, j, c) order; padding is code 1 (trit 0)."""
    rng = np.random.default_rng(5)
    t = rng.integers(-1, 2, size=(20, 3, 2, 3)).astype(np.int8)  # K = 18: two chunks
    panels = CI.conv_panels(pack(t), 20, 3, 2, 3)
    assert panels.shape == (2, 2, 64) and panels.dtype == np.uint8
    codes = (t.transpose(0, 2, 3, 1).reshape(20, 18) + 1)
    for o in range(32):
        for k in range(32):
            g, lane, c, j, kk = o // 16, o % 16, k // 16, (k % 16) // 4, k % 4
            got = (panels[g, c, 4 * lane + kk] >> (2 * j)) & 3
            want = codes[o, k] if o < 20 and k < 18 else 1
            assert got == want, (o, k)


# --------------------------------------------------------------------------- linear on panels


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("B,K,N", [(2, 64, 16), (7, 70, 33), (8, 256, 64), (13, 1000, 130)])
def test_linear_on_panels_equals_the_row_kernels_bit_for_bit(path: str, B: int, K: int, N: int) -> None:
    """The linear layer as a 1x1-conv GEMM (`linear_int8_into`) forms the same int32 sums and
    the same float epilogue as `gemm.linear_into`, including the bias, residual and activation;
    K = 70 and N = 33, 130 exercise the padded chunk and the partial channel groups."""
    rng = np.random.default_rng(B * K + N)
    trits = rng.integers(-1, 2, (N, K)).astype(np.int8)
    packed = pack(trits)
    x = rng.standard_normal((B, K)).astype(np.float32)
    x[1] = 0.0  # an all-zero token (scale 1, sum 0)
    s, bias = rng.random(N).astype(np.float32), rng.standard_normal(N).astype(np.float32)
    res = rng.standard_normal((B, N)).astype(np.float32)
    want, got = np.empty((B, N), np.float32), np.empty((B, N), np.float32)
    gemm.linear_into(want, x, packed, s, bias, res, 1, "int8", path)
    yi = np.empty((B, N), np.int32)
    CI.linear_int8_into(got, x, CI.linear_panels(packed, N, K), s, bias, res, 1, path, {}, yi)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(yi, gemm.int8_accumulators(x, packed, path=path))
    assert np.any(got != 0) and np.all(got >= 0)  # relu ran


@pytest.mark.parametrize("path", PATHS)
def test_extreme_values_do_not_saturate(path: str) -> None:
    """All trits +1 (or -1) against +-127 activations, K = 1000 (four full groups of 16
    chunks and a partial one): the largest i16 partial sums the AVX2 tile forms."""
    B, K, N = 7, 1000, 48
    trits = np.ones((N, K), np.int8)
    trits[16:32] = -1
    trits[32:, ::3] = 0
    x = np.ones((B, K), np.float32)
    x[1::2] = -1.0
    y, yi = np.empty((B, N), np.float32), np.empty((B, N), np.int32)
    one, zero = np.ones(N, np.float32), np.zeros(N, np.float32)
    CI.linear_int8_into(y, x, CI.linear_panels(pack(trits), N, K), one, zero, np.zeros((0, 0), np.float32),
                        0, path, {}, yi)
    np.testing.assert_array_equal(yi, R.int8_accumulators(x, trits))
