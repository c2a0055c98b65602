"""NCHW float32 CPU kernels of the plan steps that are not packed ternary GEMMs or convs:
epilogues, float depthwise convs, pooling, standalone activations. The Numba backend
(`tdsl.backends.numba.executor`, `generate`) calls them; they live here so that the backend
runs plans and the runtime holds the kernels.

All NCHW float32 (kept-precision int8 convolutions run the same column kernels in float64
when their integer sums could exceed float32's exact range). Semantics are torch's eval
mode: max pooling pads with -inf, average pooling counts the padding (`count_include_pad`),
adaptive average pooling uses the windows [floor(i*H/oh), ceil((i+1)*H/oh)). Activation
codes are those of `tdsl.runtime.activations` (one definition, `gemm.activation`); every epilogue
rounds like the runtime's (`float32(v + bias)`, then `+ residual`, then the activation), so
a ternary convolution through `scatter_epilogue` equals `tdsl.runtime.conv2d.ternary_conv2d`.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from tdsl.runtime.conv_int8 import tap_range
from tdsl.runtime.activations import SILU
from tdsl.runtime.gemm import activation

_TILE = 32  # positions per task in scatter_epilogue: 32 rows of the GEMM result stay in L1


@njit(inline="always", cache=True)
def image_channel(nc, C):
    """(n, c) of task nc of a prange over the N*C planes of an NCHW array."""
    n = nc // C
    return n, nc - n * C


@njit(cache=True, parallel=True)
def scatter_epilogue(yg, o0, res, act, y):
    """y[n, o0+o, p] = act(yg[n*HW + p, o] + res[n, o0+o, p]) for y viewed as [N, O, HW]."""
    N, _, HW = y.shape
    Og = yg.shape[1]
    tiles = (HW + _TILE - 1) // _TILE
    for task in prange(N * tiles):
        n = task // tiles
        p0 = (task - n * tiles) * _TILE
        p1 = min(HW, p0 + _TILE)
        for o in range(Og):
            for p in range(p0, p1):
                v = yg[n * HW + p, o]
                if res.shape[0] != 0:
                    v = np.float32(v + res[n, o0 + o, p])
                y[n, o0 + o, p] = activation(v, act)


@njit(cache=True, parallel=True)
def bias_residual_act(y, bias, res, act):
    """In place on y [N, C, L]: act(float32(y + bias[c]) + res[n, c, l])."""
    N, C, L = y.shape
    for nc in prange(N * C):
        n, c = image_channel(nc, C)
        b = bias[c]
        for i in range(L):
            v = np.float32(y[n, c, i] + b)
            if res.shape[0] != 0:
                v = np.float32(v + res[n, c, i])
            y[n, c, i] = activation(v, act)


@njit(cache=True, nogil=True)
def bias_residual_act_band(y, bias, res, act):
    """`bias_residual_act` on y [C, L] (a band of one image: any strides), serial, no GIL."""
    C, L = y.shape
    for c in range(C):
        b = bias[c]
        for i in range(L):
            v = np.float32(y[c, i] + b)
            if res.shape[0] != 0:
                v = np.float32(v + res[c, i])
            y[c, i] = activation(v, act)


@njit(cache=True, parallel=True)
def scale_bias_residual_act(acc, scale, bias, res, act, y):
    """y[n, c, l] = act(float32(acc * scale[c]) + bias[c] + res[n, c, l]) (int8 epilogue)."""
    N, C, L = y.shape
    for nc in prange(N * C):
        n, c = image_channel(nc, C)
        for i in range(L):
            v = np.float32(np.float32(acc[n, c, i] * scale[c]) + bias[c])
            if res.shape[0] != 0:
                v = np.float32(v + res[n, c, i])
            y[n, c, i] = activation(v, act)


@njit(cache=True, parallel=True)
def depthwise_float(x, w, kh, kw, sh, sw, ph, pw, dh, dw, y):
    """y[n, c] = conv(x[n, c], w[c]) for a depthwise conv (w [C, kh*kw] float)."""
    N, C, H, W = x.shape
    Ho, Wo = y.shape[2], y.shape[3]
    for nc in prange(N * C):
        n, c = image_channel(nc, C)
        for oy in range(Ho):
            iy0 = oy * sh - ph
            i0, i1 = tap_range(iy0, dh, kh, H)
            for ox in range(Wo):
                ix0 = ox * sw - pw
                j0, j1 = tap_range(ix0, dw, kw, W)
                acc = 0.0 * w[0, 0]
                for i in range(i0, i1):
                    iy = iy0 + i * dh
                    for j in range(j0, j1):
                        acc += x[n, c, iy, ix0 + j * dw] * w[c, i * kw + j]
                y[n, c, oy, ox] = acc


@njit(cache=True, parallel=True)
def max_pool2d(x, kh, kw, sh, sw, ph, pw, y):
    """Row-wise like the depthwise conv: for each window tap (i, j), a branch-free loop over
    the output columns whose input column is inside the image, reading strided columns from
    per-row phase buffers. Same comparisons in the same order as a per-output loop (a NaN
    never replaces the running max; an all-padding window gives -inf)."""
    N, C, H, W = x.shape
    Ho, Wo = y.shape[2], y.shape[3]
    for nc in prange(N * C):
        n, c = image_channel(nc, C)
        phases = np.empty((sw, (W + sw - 1) // sw), x.dtype)
        for oy in range(Ho):
            m = y[n, c, oy]
            m[:] = -np.inf
            for i in range(kh):
                iy = oy * sh - ph + i
                if iy < 0 or iy >= H:
                    continue
                xrow = x[n, c, iy]
                if sw > 1:
                    for r in range(sw):
                        for q in range((W - r + sw - 1) // sw):
                            phases[r, q] = xrow[q * sw + r]
                for j in range(kw):
                    off = j - pw  # ix = ox*sw + off
                    lo, hi = tap_range(off, sw, Wo, W)
                    if hi <= lo:
                        continue
                    a = m[lo:hi]
                    start = lo * sw + off
                    xr = xrow[start:] if sw == 1 else phases[start % sw, start // sw:]
                    for q in range(hi - lo):
                        v = xr[q]
                        a[q] = v if v > a[q] else a[q]


@njit(cache=True, parallel=True)
def avg_pool2d(x, kh, kw, sh, sw, ph, pw, y):
    N, C, H, W = x.shape
    Ho, Wo = y.shape[2], y.shape[3]
    inv = np.float32(1.0) / np.float32(kh * kw)
    for nc in prange(N * C):
        n, c = image_channel(nc, C)
        for oy in range(Ho):
            for ox in range(Wo):
                s = np.float32(0.0)
                for i in range(kh):
                    iy = oy * sh - ph + i
                    if iy < 0 or iy >= H:
                        continue
                    for j in range(kw):
                        ix = ox * sw - pw + j
                        if 0 <= ix < W:
                            s += x[n, c, iy, ix]
                y[n, c, oy, ox] = s * inv


@njit(cache=True, parallel=True)
def adaptive_avg_pool2d(x, y):
    N, C, H, W = x.shape
    Ho, Wo = y.shape[2], y.shape[3]
    for nc in prange(N * C):
        n, c = image_channel(nc, C)
        for oy in range(Ho):
            y0 = (oy * H) // Ho
            y1 = ((oy + 1) * H + Ho - 1) // Ho
            for ox in range(Wo):
                x0 = (ox * W) // Wo
                x1 = ((ox + 1) * W + Wo - 1) // Wo
                s = np.float32(0.0)
                for iy in range(y0, y1):
                    for ix in range(x0, x1):
                        s += x[n, c, iy, ix]
                y[n, c, oy, ox] = s / np.float32((y1 - y0) * (x1 - x0))


@njit(cache=True, parallel=True, error_model="numpy")
def activation_map(x, act, y):
    """y = act(x) on flat float32 arrays: an activation that no kernel absorbed. SiLU (the gated
    MLPs' gate: prefill runs it over rows x hidden values) has a loop of its own: with the code
    constant and no zero-division check (numpy's error model; its divisor 1 + exp(-v) is >= 1)
    the loop vectorises."""
    if act == SILU:
        for i in prange(x.size):
            y[i] = activation(x[i], SILU)
        return
    for i in prange(x.size):
        y[i] = activation(x[i], act)


