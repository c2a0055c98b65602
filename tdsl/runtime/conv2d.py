"""Ternary conv2d on packed weights, NCHW float32, CPU kernels.

Shapes: x float32 [Nimg, C, H, W]; packed uint8 [O, ceil(C/g*kh*kw / 4)] ("2bit" layout of
`tdsl.runtime.packing`: a conv weight [O, C/g, kh, kw] is packed as the row-major matrix
[O, C/g*kh*kw]); scale [O] or scalar; bias [O]; residual [Nimg, O, Ho, Wo]; result float32
[Nimg, O, Ho, Wo] with act(conv * scale + bias + residual). Semantics, including what a
"token" is for int8 activations (one output position of one group):
`tdsl.runtime.reference.ternary_conv2d`.

Why three kernels:
* act_quant="int8" (the default): `tdsl.runtime.conv_int8`, im2col fused with the per-token
  quantisation and a micro-kernel for conv shapes (thousands of positions, small K and N);
  the weight is re-laid out per call (`conv_panels`; the Numba backend does it once).
* act_quant="float": im2col + the GEMM of `tdsl.runtime.gemm` (one GEMM per group over all
  images, batch rows = Nimg*Ho*Wo output positions): the packed conv weight already is the
  GEMM's row layout, so the float GEMM and its epilogue are reused unchanged.
* a direct depthwise kernel (groups == C == O): im2col would build a K = kh*kw matrix per
  channel and run C GEMMs with a single output row each, mostly overhead. The direct kernel
  decodes the kh*kw trits of a channel once and adds/subtracts float activations, exact in
  fp32, so depthwise layers ignore act_quant (as the reference defines).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from tdsl.errors import TdslError
from tdsl.runtime import conv_int8, gemm
from tdsl.runtime.cpu_features import kernel_path
from tdsl.runtime.packing import bytes_per_row
from tdsl.runtime.reference import conv_out_size

Pair = tuple[int, int]
_F0 = np.float32(0.0)


def im2col_row(x, n, c0, Cg, kh, kw, iy0, ix0, dh, dw, cols, row):  # noqa: ANN001, ANN201
    """cols[row, (c*kh + i)*kw + j] = x[n, c0 + c, iy0 + i*dh, ix0 + j*dw] (0 outside the
    image): one row of the column matrix. Plain Python: compiled for the CPU here and as a
    CUDA device function by `cuda_conv2d` (one definition for both im2col kernels)."""
    H, W = x.shape[2], x.shape[3]
    k = 0
    for c in range(Cg):
        for i in range(kh):
            iy = iy0 + i * dh
            for j in range(kw):
                ix = ix0 + j * dw
                v = _F0
                if 0 <= iy < H and 0 <= ix < W:
                    v = x[n, c0 + c, iy, ix]
                cols[row, k] = v
                k += 1


_im2col_row = njit(inline="always", cache=True)(im2col_row)


@njit(cache=True, parallel=True)
def im2col(x, c0, Cg, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, cols):
    """cols[n*Ho*Wo + p, (c, i, j)] = x[n, c0 + c, iy, ix] (0 outside the image): the column
    matrix of channels c0..c0+Cg for the float GEMM path."""
    Nimg = x.shape[0]
    for r in prange(Nimg * Ho):
        n = r // Ho
        oy = r - n * Ho
        for ox in range(Wo):
            _im2col_row(x, n, c0, Cg, kh, kw, oy * sh - ph, ox * sw - pw, dh, dw, cols, r * Wo + ox)


@njit(cache=True, parallel=True)
def depthwise_conv(x, packed, kh, kw, sh, sw, ph, pw, dh, dw, s, bias, res, act, y):
    """One (image, channel) plane per task, one output row at a time: for each tap (i, j)
    in order, acc[ox] += x[iy, ox*sw - pw + j*dw] * t[i, j] over the ox range where that
    column is inside the image, i.e. every output adds its in-image terms in (i, j) order
    (exactly the sum a per-output loop forms) and the inner loop has no branch."""
    Nimg, C, H, W = x.shape
    Ho, Wo = y.shape[2], y.shape[3]
    for nc in prange(Nimg * C):
        n = nc // C
        c = nc - n * C
        taps = np.empty(kh * kw, np.float32)
        for k in range(kh * kw):
            code = (packed[c, k >> 2] >> np.uint8(2 * (k & 3))) & np.uint8(3)
            taps[k] = np.float32(np.uint8(code)) - np.float32(1.0)
        acc = np.empty(Wo, np.float32)
        phases = np.empty((sw, (W + sw - 1) // sw), np.float32)
        sc = s[c]
        bc = bias[c]
        for oy in range(Ho):
            acc[:] = np.float32(0.0)
            for i in range(kh):
                iy = oy * sh - ph + i * dh
                if iy < 0 or iy >= H:
                    continue
                xrow = x[n, c, iy]
                if sw > 1:  # phases[r, q] = xrow[q*sw + r]: strided taps become contiguous
                    for r in range(sw):
                        for q in range((W - r + sw - 1) // sw):
                            phases[r, q] = xrow[q * sw + r]
                for j in range(kw):
                    t = taps[i * kw + j]
                    off = j * dw - pw  # ix = ox*sw + off
                    lo, hi = conv_int8.tap_range(off, sw, Wo, W)
                    if hi <= lo:
                        continue
                    a = acc[lo:hi]  # slices: non-negative indices, so no wraparound checks
                    start = lo * sw + off
                    xr = xrow[start:] if sw == 1 else phases[start % sw, start // sw:]
                    for q in range(hi - lo):
                        a[q] += xr[q] * t
            yrow = y[n, c, oy]
            for ox in range(Wo):
                yrow[ox] = np.float32(acc[ox] * sc + bc)
            if res.shape[0] != 0:
                rrow = res[n, c, oy]
                for ox in range(Wo):
                    yrow[ox] = np.float32(yrow[ox] + rrow[ox])
            if act != 0:
                for ox in range(Wo):
                    yrow[ox] = gemm.activation(yrow[ox], act)


def _pair(value: int | Pair, name: str, minimum: int) -> Pair:
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                 and v >= minimum for v in pair):
        raise TdslError(f"{name} must be an integer or a pair of integers >= {minimum}, "
                        f"got {value!r}")
    return int(pair[0]), int(pair[1])


def conv_geometry(x: np.ndarray, packed: np.ndarray, kernel_size: int | Pair, stride: int | Pair,
                  padding: int | Pair, dilation: int | Pair, groups: int
                  ) -> tuple[Pair, Pair, Pair, Pair, int, int]:
    """Check a conv2d call's shapes; return (kernel, stride, padding, dilation, Ho, Wo).

    Shared with the CUDA conv2d so both reject the same inputs with the same messages.
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 4:
        desc = f"{x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise TdslError(f"conv2d input must be a float32 array [N, C, H, W], got a {desc}")
    if not isinstance(packed, np.ndarray) or packed.dtype != np.uint8 or packed.ndim != 2:
        raise TdslError("conv2d packed weights must be a uint8 array [O, ceil(C/groups*kh*kw/4)]")
    k, st = _pair(kernel_size, "kernel_size", 1), _pair(stride, "stride", 1)
    pad, dil = _pair(padding, "padding", 0), _pair(dilation, "dilation", 1)
    C, O = x.shape[1], packed.shape[0]
    if not isinstance(groups, (int, np.integer)) or groups < 1 or C % groups or O % groups:
        raise TdslError(f"groups={groups!r} must be a positive integer dividing both the "
                        f"{C} input and the {O} output channels")
    Kg = C // groups * k[0] * k[1]
    if packed.shape[1] != bytes_per_row(Kg):
        raise TdslError(f"packed weights have {packed.shape[1]} bytes per row, but a "
                        f"{k[0]}x{k[1]} kernel over {C // groups} channels per group needs "
                        f"ceil({Kg}/4)={bytes_per_row(Kg)}")
    Ho = conv_out_size(x.shape[2], k[0], st[0], pad[0], dil[0])
    Wo = conv_out_size(x.shape[3], k[1], st[1], pad[1], dil[1])
    if Ho < 1 or Wo < 1:
        raise TdslError(f"conv2d output would be empty ({Ho}x{Wo}) for an input of "
                        f"{x.shape[2]}x{x.shape[3]} with kernel {k}, padding {pad}, dilation {dil}")
    return k, st, pad, dil, Ho, Wo


def ternary_conv2d(x: np.ndarray, packed: np.ndarray, kernel_size: int | Pair,
                   scale: np.ndarray | float, bias: np.ndarray | None = None, *,
                   stride: int | Pair = 1, padding: int | Pair = 0, dilation: int | Pair = 1,
                   groups: int = 1, activation: str | None = None,
                   residual: np.ndarray | None = None, act_quant: str = "int8",
                   path: str | None = None) -> np.ndarray:
    """act(conv2d(x, scale * T) + bias + residual) as float32 [Nimg, O, Ho, Wo]."""
    k, st, pad, dil, Ho, Wo = conv_geometry(x, packed, kernel_size, stride, padding, dilation,
                                            groups)
    Nimg, C = x.shape[:2]
    O = packed.shape[0]
    Og, Cg, P = O // groups, C // groups, Nimg * Ho * Wo
    # validate scale/bias/activation/act_quant/residual once, through the GEMM's checker
    res4 = None
    if residual is not None:
        res4 = np.asarray(residual)
        if res4.shape != (Nimg, O, Ho, Wo):
            raise TdslError(f"residual has shape {res4.shape}, expected {(Nimg, O, Ho, Wo)}")
    dummy = np.zeros((1, Cg * k[0] * k[1]), np.float32)
    _, packed, s, b, _, act = gemm.check_linear_args(dummy, packed, scale, bias, activation,
                                                     None, act_quant)
    chosen = kernel_path(path)
    x = np.ascontiguousarray(x)
    y = np.empty((Nimg, O, Ho, Wo), np.float32)
    if groups == C == O:
        res = (np.zeros((0, 0, 0, 0), np.float32) if res4 is None
               else np.ascontiguousarray(res4, dtype=np.float32))
        depthwise_conv(x, packed, k[0], k[1], st[0], st[1], pad[0], pad[1], dil[0], dil[1], s, b,
                   res, act, y)
        return y
    if act_quant == "int8":  # the conv-shaped int8 kernel: same integers, same epilogue
        res = (np.zeros((0, 0, 0, 0), np.float32) if res4 is None
               else np.ascontiguousarray(res4, dtype=np.float32))
        panels = conv_int8.conv_panels(packed, O, Cg, k[0], k[1], groups)
        conv_int8.conv2d_int8_into(y, x, panels, k, st, pad, dil, groups, s, b, res, act, chosen)
        return y
    cols = np.empty((P, Cg * k[0] * k[1]), np.float32)
    yg = np.empty((P, Og), np.float32)
    for g in range(groups):
        rows = slice(g * Og, (g + 1) * Og)
        im2col(x, g * Cg, Cg, k[0], k[1], st[0], st[1], pad[0], pad[1], dil[0], dil[1],
                Ho, Wo, cols)
        res = (np.zeros((0, 0), np.float32) if res4 is None else np.ascontiguousarray(
            res4[:, rows].astype(np.float32).reshape(Nimg, Og, Ho * Wo).transpose(0, 2, 1)
        ).reshape(P, Og))
        gemm.linear_into(yg, cols, packed[rows], s[rows], b[rows], res, act, act_quant, chosen)
        y[:, rows] = yg.reshape(Nimg, Ho, Wo, Og).transpose(0, 3, 1, 2)
    return y


def warmup() -> None:
    """Compile (or load from cache) the im2col and depthwise kernels."""
    x = np.ones((1, 2, 5, 5), np.float32)
    ternary_conv2d(x, np.full((2, 5), 0x55, np.uint8), 3, 1.0, act_quant="float")
    ternary_conv2d(x, np.full((2, 3), 0x55, np.uint8), 3, 1.0, groups=2)
