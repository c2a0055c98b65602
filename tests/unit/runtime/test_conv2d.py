"""CPU ternary conv2d (tdsl.runtime.conv2d) against the numpy reference.

Error bounds, per output element (the GEMM test module derives them in detail):
* int8 activations vs the float64 reference of the same integers: only the float32 epilogue
  rounds, <= 1e-6 relative to |acc*xs*s| + |bias| + |residual|; the integers themselves are
  exact because im2col only copies values and zero-pads (no arithmetic).
* int8 vs float activations: each im2col element is off by at most xs/2 (absmax rounding),
  so |y - y_float| <= |s[o]| * xs[token]/2 * nnz(T[o]); we check the looser and simpler
  max relative error <= 3e-2 (about 1e-2 expected for Gaussian inputs).
* float path and the direct depthwise kernel: fp32 summation of K = C/g*kh*kw terms, at most
  K * 2^-24 * sum |x*t| * |s|; with |x| < 5 and K <= 36 here, 1e-5 absolute is above it.
"""
from __future__ import annotations

import numpy as np
import pytest

from tdsl.errors import TdslError
from tdsl.runtime import reference as R
from tdsl.runtime.activations import NAMES
from tdsl.runtime.conv2d import ternary_conv2d
from tdsl.runtime.cpu_features import has_avx512_vnni
from tdsl.runtime.packing import pack

PATHS = ["portable", pytest.param("vnni", marks=pytest.mark.skipif(
    not has_avx512_vnni(), reason="this CPU has no AVX-512 VNNI"))]

# (Nimg, C, H, W, O, k, stride, padding, dilation, groups)
CASES = [
    (1, 3, 8, 8, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),     # K = 27: a 7-byte row
    (2, 4, 9, 7, 6, (3, 2), (2, 1), (1, 0), (1, 1), 1),     # strided, asymmetric
    (1, 5, 11, 10, 3, (3, 3), (1, 2), (2, 3), (2, 3), 1),   # dilated and padded
    (2, 6, 7, 7, 4, (3, 3), (1, 1), (1, 1), (1, 1), 2),     # grouped
    (1, 8, 6, 6, 8, (1, 1), (1, 1), (0, 0), (1, 1), 4),     # grouped 1x1
    (2, 6, 8, 9, 6, (3, 3), (2, 2), (1, 1), (1, 1), 6),     # depthwise, strided
    (1, 4, 7, 7, 4, (5, 3), (1, 1), (2, 1), (2, 1), 4),     # depthwise, dilated
]


def make(case, seed=0):
    Nimg, C, H, W, O, k, st, pad, dil, g = case
    rng = np.random.default_rng(seed)
    t = rng.integers(-1, 2, size=(O, C // g, *k)).astype(np.int8)
    x = rng.standard_normal((Nimg, C, H, W)).astype(np.float32)
    s = rng.uniform(0.5, 2.0, O).astype(np.float32)
    b = rng.standard_normal(O).astype(np.float32)
    kw = dict(stride=st, padding=pad, dilation=dil, groups=g)
    return x, t, pack(t), s, b, kw


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("act_quant", ["int8", "float"])
@pytest.mark.parametrize("case", CASES)
def test_conv_matches_reference(case, act_quant: str, path: str) -> None:
    x, t, p, s, b, kw = make(case)
    y = ternary_conv2d(x, p, t.shape[2:], s, b, act_quant=act_quant, path=path, **kw)
    ref = R.ternary_conv2d(x, p, t.shape, s, b, act_quant=act_quant, **kw)
    assert y.dtype == np.float32 and y.shape == ref.shape
    pre = R.ternary_conv2d(x, p, t.shape, s, None, act_quant=act_quant, **kw)
    np.testing.assert_array_less(np.abs(y - ref), 1e-6 * (np.abs(pre) + np.abs(b)[:, None, None]) + 1e-5)
    ref_float = R.ternary_conv2d(x, p, t.shape, s, b, act_quant="float", **kw)
    assert np.abs(y - ref_float).max() <= 3e-2 * np.abs(ref_float).max()


@pytest.mark.parametrize("activation", [None, *NAMES[1:]])  # every code the kernels apply
@pytest.mark.parametrize("case", [CASES[1], CASES[3], CASES[5]])
def test_conv_epilogues(case, activation: str | None) -> None:
    x, t, p, s, b, kw = make(case, seed=1)
    x *= 2
    shape = R.ternary_conv2d(x, p, t.shape, s, **kw).shape
    res = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    y = ternary_conv2d(x, p, t.shape[2:], s, b, activation=activation, residual=res, **kw)
    ref = R.ternary_conv2d(x, p, t.shape, s, b, activation=activation, residual=res, **kw)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-4)


def test_paths_identical() -> None:
    if not has_avx512_vnni():
        pytest.skip("this CPU has no AVX-512 VNNI")
    x, t, p, s, b, kw = make(CASES[3], seed=3)
    a = ternary_conv2d(x, p, t.shape[2:], s, b, path="portable", **kw)
    v = ternary_conv2d(x, p, t.shape[2:], s, b, path="vnni", **kw)
    assert a.tobytes() == v.tobytes()


@pytest.mark.parametrize("kwargs,match", [
    (dict(x=np.zeros((1, 3, 5), np.float32)), "float32 array \\[N, C, H, W\\]"),
    (dict(groups=2), "groups=2"),
    (dict(kernel_size=(3, 2)), "bytes per row"),
    (dict(stride=0), "stride"),
    (dict(padding=-1), "padding"),
    (dict(kernel_size=7), "bytes per row|empty"),
    (dict(residual=np.zeros((1, 4, 2, 2), np.float32)), "residual has shape"),
    (dict(activation="swish"), "unknown activation"),
])
def test_bad_arguments(kwargs: dict, match: str) -> None:
    args = dict(x=np.zeros((1, 3, 5, 5), np.float32), packed=np.full((4, 7), 0x55, np.uint8),
                kernel_size=3)
    args.update(kwargs)
    with pytest.raises(TdslError, match=match):
        ternary_conv2d(args.pop("x"), args.pop("packed"), args.pop("kernel_size"), 1.0, **args)
