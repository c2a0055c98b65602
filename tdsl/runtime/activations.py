"""Activation functions: the one definition every kernel applies.

A kernel takes an activation as an integer code (its index in `NAMES`, the spelling the IR
uses in `kern.* {activation = "relu6"}`). `apply(v, code)` is plain Python over one float32
scalar; Numba compiles this same function for the CPU (`tdsl.runtime.gemm.activation`) and as
a CUDA device function (`tdsl.runtime.cuda_gemm.activation`), and every fused epilogue and
elementwise step calls one of those two. `apply_array` is the numpy reference of the same
functions (float64 in, float64 out), what the kernels are tested against.

This module imports numpy only, so the dialects can read `NAMES` without loading Numba.
Which op class is which code is the op registry's business (`tdsl.ops.elementwise`).
Numba's on-disk cache keys a kernel on its own file, so `tdsl.runtime.kernel_cache` drops
the cached kernels when a kernel source file (this one included) changes.
"""
from __future__ import annotations

import math

import numpy as np

NAMES: tuple[str, ...] = ("none", "relu", "relu6", "gelu", "sigmoid", "tanh", "hardswish", "silu", "relu2")
"""Activation names by code."""
NONE, RELU, RELU6, GELU, SIGMOID, TANH, HARDSWISH, SILU, RELU2 = range(len(NAMES))

_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_F3 = np.float32(3.0)
_F6 = np.float32(6.0)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_HALF = np.float32(0.5)
LOG2E = np.float32(1.4426950408889634)
LN2_HI = np.float32(0.693359375)
LN2_LO = np.float32(-2.12194440e-4)
EXP_COEFFS = (np.float32(1.9875691500e-4), np.float32(1.3981999507e-3), np.float32(8.3334519073e-3),
              np.float32(4.1665795894e-2), np.float32(1.6666665459e-1), np.float32(5.0000001201e-1))
"""Cephes' float32 expf (x = n ln2 + r, r split as LN2_HI + LN2_LO): the one polynomial every
vectorised exp of the runtime evaluates (here and `llm_kernels._exp_shifted`)."""
EXP_LO, EXP_HI = np.float32(-87.0), np.float32(88.0)
"""The arguments' range: exp(-87) is still a normal float32, exp(88) finite."""
_POW2 = np.array([2.0 ** k for k in range(-126, 128)], dtype=np.float32)
"""2^k for k = -126 .. 127 (index k + 126): the sigmoid's exp scaled by a lookup, which a vector
loop does as a gather, where libm's expf is a call per element."""


def code_of(name: str | None) -> int:
    """The code of an activation name (`None` and "none" are `NONE`); ValueError if unknown."""
    if name is None:
        return NONE
    if name not in NAMES:
        raise ValueError(f"unknown activation {name!r}: valid are {', '.join(NAMES)}")
    return NAMES.index(name)


def apply(v, act):  # noqa: ANN001, ANN201 - compiled by Numba for float32 scalars
    """act(v) for one float32 scalar, rounded to float32 (GELU is evaluated in float64)."""
    if act == RELU:
        return max(v, _F0)
    if act == RELU6:
        return min(max(v, _F0), _F6)
    if act == GELU:
        return np.float32(0.5 * v * (1.0 + math.erf(v * _INV_SQRT2)))
    if act == SIGMOID or act == SILU:
        # exp(-v) as Cephes' float32 expf (x = n ln2 + r, a polynomial in r, times 2^n; within
        # 2 ulp on [-87, 88], tested): plain arithmetic, so a loop of it vectorises where the
        # kernel's error model allows (`nchw_float.activation_map`: SiLU over 64 x 2048 values
        # on one thread 257 -> 86 us). Outside that range exp(-v) stays at its ends: off by less
        # than 2e-38 |v| there.
        if v != v:
            return v  # NaN in, NaN out
        x = -v
        if x < EXP_LO:
            x = EXP_LO
        if x > EXP_HI:
            x = EXP_HI
        k = math.floor(x * LOG2E + _HALF)
        n = np.float32(k)
        r = (x - n * LN2_HI) - n * LN2_LO
        p0, p1, p2, p3, p4, p5 = EXP_COEFFS
        e = ((((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5) * (r * r) + r + _F1) * _POW2[k + 126]
        if act == SIGMOID:
            return np.float32(_F1 / (_F1 + e))
        return np.float32(v / (_F1 + e))
    if act == TANH:
        return np.float32(math.tanh(v))
    if act == HARDSWISH:
        return np.float32(v * min(max(v + _F3, _F0), _F6) / _F6)
    if act == RELU2:
        r = max(v, _F0)
        return np.float32(r * r)
    return v


def apply_array(x: np.ndarray, act: int) -> np.ndarray:
    """The numpy reference of `apply` on a whole array, in float64."""
    x = np.asarray(x, dtype=np.float64)
    if act == RELU:
        return np.maximum(x, 0.0)
    if act == RELU6:
        return np.clip(x, 0.0, 6.0)
    if act == GELU:
        erf = np.vectorize(math.erf, otypes=[np.float64])
        return 0.5 * x * (1.0 + erf(x * _INV_SQRT2))
    if act == SIGMOID:
        return 1.0 / (1.0 + np.exp(-x))
    if act == TANH:
        return np.tanh(x)
    if act == HARDSWISH:
        return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0
    if act == SILU:
        return x / (1.0 + np.exp(-x))
    if act == RELU2:
        return np.maximum(x, 0.0) ** 2
    if act == NONE:
        return x
    raise ValueError(f"unknown activation code {act}")
