"""Ternary conv2d on packed weights, `numba.cuda` kernels (CUDA twin of `conv2d`).

Same arguments and semantics as `tdsl.runtime.conv2d.ternary_conv2d` (NCHW float32,
`tdsl.runtime.reference.ternary_conv2d`): im2col on the device (one thread per output
position), then the CUDA GEMM of `cuda_gemm` per group with scale only, then one kernel that
scatters to NCHW and applies bias, residual and activation with the same float32 operations
as the CPU epilogue. Depthwise convolutions (groups == C == O) run a direct fp32 kernel, one
thread per output element, like the CPU. `ternary_conv2d_cuda` takes numpy arrays;
`ternary_conv2d_device` takes and returns device arrays.
"""
from __future__ import annotations

import math

import numpy as np
from numba import config, cuda, float32, int32

from tdsl.errors import TdslError
from tdsl.runtime.conv2d import Pair, conv_geometry, im2col_row
from tdsl.runtime.cuda_gemm import activation, ternary_linear_device
from tdsl.runtime.gemm import check_linear_args

TPB = 32 if config.ENABLE_CUDASIM else 128  # the simulator: one Python thread per CUDA thread
F0 = np.float32(0.0)
F1 = np.float32(1.0)
_im2col_row = cuda.jit(device=True, cache=True)(im2col_row)
"""`conv2d.im2col_row` as a CUDA device function: both im2col kernels fill a row alike."""


@cuda.jit(device=True, cache=True)
def nchw_position(idx, y):
    """(n, c, oy, ox) of flat index idx < y.size of y [N, C, Ho, Wo] (C order): the output
    element of thread idx in the one-thread-per-element kernels."""
    C, Ho, Wo = y.shape[1], y.shape[2], y.shape[3]
    return idx // (C * Ho * Wo), (idx // (Ho * Wo)) % C, (idx // Wo) % Ho, idx % Wo


@cuda.jit(cache=True)
def _im2col_kernel(x, c0, Cg, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, cols):
    row = cuda.grid(1)
    if row >= cols.shape[0]:
        return
    n = row // (Ho * Wo)
    oy = (row // Wo) % Ho
    ox = row % Wo
    _im2col_row(x, n, c0, Cg, kh, kw, oy * sh - ph, ox * sw - pw, dh, dw, cols, row)


@cuda.jit(cache=True)
def _scatter_kernel(yg, o0, bias, res, has_res, act, y):
    """y[n, o0 + o, oy, ox] = act(yg[p, o] + bias + residual) for p = (n*Ho + oy)*Wo + ox."""
    idx = cuda.grid(1)
    if idx >= yg.shape[0] * yg.shape[1]:
        return
    p = idx // yg.shape[1]
    o = idx % yg.shape[1]
    Ho, Wo = y.shape[2], y.shape[3]
    n = p // (Ho * Wo)
    oy = (p // Wo) % Ho
    ox = p % Wo
    v = float32(yg[p, o] + bias[o0 + o])
    if has_res:
        v = float32(v + res[n, o0 + o, oy, ox])
    y[n, o0 + o, oy, ox] = activation(v, act)


@cuda.jit(cache=True)
def _depthwise_kernel(x, packed, kh, kw, sh, sw, ph, pw, dh, dw, s, bias, res, has_res, act, y):
    idx = cuda.grid(1)
    if idx >= y.size:
        return
    n, c, oy, ox = nchw_position(idx, y)
    H, W = x.shape[2], x.shape[3]
    acc = F0
    for i in range(kh):
        iy = oy * sh - ph + i * dh
        for j in range(kw):
            ix = ox * sw - pw + j * dw
            if 0 <= iy < H and 0 <= ix < W:
                k = i * kw + j
                code = (int32(packed[c, k >> 2]) >> (2 * (k & 3))) & 3
                acc += x[n, c, iy, ix] * (float32(code) - F1)
    v = float32(acc * s[c] + bias[c])
    if has_res:
        v = float32(v + res[n, c, oy, ox])
    y[n, c, oy, ox] = activation(v, act)


def ternary_conv2d_device(x, packed, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair,
                          groups: int, s, bias, residual, act: int, act_quant: str = "int8"):
    """Device-array entry; geometry as checked by `conv2d.conv_geometry`, s/bias f32 [O],
    residual f32 [Nimg, O, Ho, Wo] or None. Returns y f32 [Nimg, O, Ho, Wo] on the device."""
    Nimg, C, H, W = x.shape
    O = packed.shape[0]
    Ho = (H + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    Wo = (W + 2 * padding[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    y = cuda.device_array((Nimg, O, Ho, Wo), np.float32)
    has_res = residual is not None
    res = residual if has_res else cuda.device_array((1, 1, 1, 1), np.float32)
    geo = (kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1], dilation[0],
           dilation[1])
    if groups == C == O:
        total = Nimg * C * Ho * Wo
        _depthwise_kernel[math.ceil(total / TPB), TPB](x, packed, *geo, s, bias, res, has_res,
                                                       act, y)
        return y
    Og, Cg, P = O // groups, C // groups, Nimg * Ho * Wo
    cols = cuda.device_array((P, Cg * kernel[0] * kernel[1]), np.float32)
    zeros = cuda.to_device(np.zeros(Og, np.float32))
    for g in range(groups):
        _im2col_kernel[math.ceil(P / TPB), TPB](x, g * Cg, Cg, *geo, Ho, Wo, cols)
        rows = slice(g * Og, (g + 1) * Og)
        yg = ternary_linear_device(cols, packed[rows], s[rows], zeros, None, 0, act_quant)
        _scatter_kernel[math.ceil(P * Og / TPB), TPB](yg, g * Og, bias, res, has_res, act, y)
    return y


def ternary_conv2d_cuda(x: np.ndarray, packed: np.ndarray, kernel_size: int | Pair,
                        scale: np.ndarray | float, bias: np.ndarray | None = None, *,
                        stride: int | Pair = 1, padding: int | Pair = 0,
                        dilation: int | Pair = 1, groups: int = 1,
                        activation: str | None = None, residual: np.ndarray | None = None,
                        act_quant: str = "int8") -> np.ndarray:
    """`conv2d.ternary_conv2d` on the GPU, numpy in and out (copies both ways)."""
    k, st, pad, dil, Ho, Wo = conv_geometry(x, packed, kernel_size, stride, padding, dilation,
                                            groups)
    Nimg, C = x.shape[:2]
    O = packed.shape[0]
    if residual is not None and np.shape(residual) != (Nimg, O, Ho, Wo):
        raise TdslError(f"residual has shape {np.shape(residual)}, expected {(Nimg, O, Ho, Wo)}")
    dummy = np.zeros((1, C // groups * k[0] * k[1]), np.float32)
    _, packed, s, b, _, act = check_linear_args(dummy, packed, scale, bias, activation, None,
                                                act_quant)
    d_res = None if residual is None else cuda.to_device(
        np.ascontiguousarray(residual, dtype=np.float32))
    y = ternary_conv2d_device(cuda.to_device(np.ascontiguousarray(x)), cuda.to_device(packed),
                              k, st, pad, dil, groups, cuda.to_device(s), cuda.to_device(b),
                              d_res, act, act_quant)
    return y.copy_to_host()
