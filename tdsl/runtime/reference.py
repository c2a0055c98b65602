"""The living definition of every runtime kernel, in plain numpy (float64 unless stated).

The fast kernels (`gemm`, `conv2d`, `cuda_gemm`, `cuda_conv2d`) are tested against these
functions; when the two disagree, this file is right. Nothing here is fast.

Linear, on packed weights (layout: `tdsl.runtime.packing`, docs/PACKED_FORMAT.md):
    T = unpack(packed) in {-1, 0, +1}^[N, K],  s = per-output scale [N] (or a scalar)
    act_quant="float":  acc[b, n] = sum_k x[b, k] * T[n, k]                (float64)
                        y = acc * s[n]
    act_quant="int8":   xq, xs = quantize_activations(x)                   (per token)
                        acc[b, n] = sum_k xq[b, k] * T[n, k]               (exact integer)
                        y = acc * (xs[b] * s[n])
    then the epilogue:  y = act(y + bias[n] + residual[b, n])  with act in None/relu/relu6.
A folded batch-norm is only a per-channel scale and bias (`fold_batchnorm`).

Activation quantisation (per token = per row of x, symmetric absmax int8) is defined in
float32 so that every kernel, CPU or CUDA, reproduces the integers bit for bit:
    amax = max_k |x[b, k]|  (float32);   xs[b] = amax / 127;   inv = 127 / amax
    xq[b, k] = rint(x[b, k] * inv)       (float32 product, round half to even, |xq| <= 127)
and a row of zeros gives xs = 0, xq = 0. Its error: |x - xs*xq| <= xs/2 per element.

conv2d is im2col followed by the linear op, group by group: the packed weight of a conv
[O, C/g, kh, kw] is already the [O, C/g*kh*kw] matrix, and im2col row p of group g holds
x[c, y*sh - ph + i*dh, x*sw - pw + j*dw] for c in the group, in (c, i, j) order, zero outside
the image. So in the int8 path a "token" is one output position of one group. Depthwise
convolutions (groups == C == O) are defined in float (act_quant is ignored): with
K = kh*kw per output there is nothing for int8 to gain, and the direct kernel is exact.
"""
from __future__ import annotations

import numpy as np

from tdsl.runtime import activations
from tdsl.runtime.packing import unpack



def trits(packed: np.ndarray, K: int, format: str = "2bit") -> np.ndarray:
    """The int8 trits [N, K] held by a packed [N, bytes_per_row] weight."""
    return unpack(packed, (packed.shape[0], K), format)


def quantize_activations(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row absmax int8: (xq int8 [B, K], xs float32 [B]) with x ~ xs[:, None] * xq."""
    x = np.asarray(x, dtype=np.float32)
    amax = np.max(np.abs(x), axis=1) if x.shape[1] else np.zeros(x.shape[0], np.float32)
    amax = amax.astype(np.float32)
    safe = np.where(amax > 0, amax, np.float32(1))
    inv = np.where(amax > 0, np.float32(127) / safe, np.float32(0)).astype(np.float32)
    xq = np.clip(np.rint(x * inv[:, None]), -127, 127).astype(np.int8)
    xs = (amax / np.float32(127)).astype(np.float32)
    return xq, xs


def int8_accumulators(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The exact integer dot products sum_k xq[b, k] * t[n, k] (int64 [B, N])."""
    xq, _ = quantize_activations(x)
    return xq.astype(np.int64) @ t.astype(np.int64).T


def epilogue(y: np.ndarray, bias: np.ndarray | None = None, residual: np.ndarray | None = None,
             activation: str | None = None) -> np.ndarray:
    """act(y + bias[n] + residual[b, n]) in float64."""
    y = np.asarray(y, dtype=np.float64)
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64)
    if residual is not None:
        y = y + np.asarray(residual, dtype=np.float64)
    return activations.apply_array(y, activations.code_of(activation))


def ternary_linear(x: np.ndarray, packed: np.ndarray, scale: np.ndarray | float,
                   bias: np.ndarray | None = None, *, activation: str | None = None,
                   residual: np.ndarray | None = None, act_quant: str = "int8",
                   format: str = "2bit") -> np.ndarray:
    """y [B, N] (float64) for x [B, K] and a packed [N, bytes_per_row(K)] weight."""
    x = np.asarray(x)
    t = trits(packed, x.shape[1], format)
    s = np.broadcast_to(np.asarray(scale, dtype=np.float64), (t.shape[0],))
    if act_quant == "float":
        y = (x.astype(np.float64) @ t.astype(np.float64).T) * s
    else:
        _, xs = quantize_activations(x)
        y = int8_accumulators(x, t).astype(np.float64) * (xs.astype(np.float64)[:, None] * s)
    return epilogue(y, bias, residual, activation)


def conv_out_size(size: int, k: int, stride: int, pad: int, dilation: int) -> int:
    """Output length of one spatial axis (floor division, as in torch)."""
    return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def im2col(x: np.ndarray, kh: int, kw: int, stride: tuple[int, int], padding: tuple[int, int],
           dilation: tuple[int, int]) -> np.ndarray:
    """[C, H, W] -> [Ho*Wo, C*kh*kw], columns in (c, i, j) order, zeros outside the image."""
    C, H, W = x.shape
    Ho = conv_out_size(H, kh, stride[0], padding[0], dilation[0])
    Wo = conv_out_size(W, kw, stride[1], padding[1], dilation[1])
    xp = np.zeros((C, H + 2 * padding[0], W + 2 * padding[1]), dtype=x.dtype)
    xp[:, padding[0]:padding[0] + H, padding[1]:padding[1] + W] = x
    cols = np.empty((Ho, Wo, C, kh, kw), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            y0, x0 = i * dilation[0], j * dilation[1]
            cols[:, :, :, i, j] = xp[:, y0:y0 + stride[0] * (Ho - 1) + 1:stride[0],
                                     x0:x0 + stride[1] * (Wo - 1) + 1:stride[1]].transpose(1, 2, 0)
    return cols.reshape(Ho * Wo, C * kh * kw)


def ternary_conv2d(x: np.ndarray, packed: np.ndarray, weight_shape: tuple[int, int, int, int],
                   scale: np.ndarray | float, bias: np.ndarray | None = None, *,
                   stride: tuple[int, int] = (1, 1), padding: tuple[int, int] = (0, 0),
                   dilation: tuple[int, int] = (1, 1), groups: int = 1,
                   activation: str | None = None, residual: np.ndarray | None = None,
                   act_quant: str = "int8") -> np.ndarray:
    """NCHW conv2d (float64 result [Nimg, O, Ho, Wo]) on a packed [O, C/g*kh*kw] weight."""
    x = np.asarray(x, dtype=np.float32)
    Nimg, C, H, W = x.shape
    O, Cg, kh, kw = weight_shape
    Og = O // groups
    if groups == C == O:
        act_quant = "float"
    s = np.broadcast_to(np.asarray(scale, dtype=np.float64), (O,))
    Ho = conv_out_size(H, kh, stride[0], padding[0], dilation[0])
    Wo = conv_out_size(W, kw, stride[1], padding[1], dilation[1])
    y = np.empty((Nimg, O, Ho, Wo))
    for n in range(Nimg):
        for g in range(groups):
            cols = im2col(x[n, g * Cg:(g + 1) * Cg], kh, kw, stride, padding, dilation)
            rows = slice(g * Og, (g + 1) * Og)
            yg = ternary_linear(cols, packed[rows], s[rows], act_quant=act_quant)
            y[n, rows] = yg.T.reshape(Og, Ho, Wo)
    b = None if bias is None else np.asarray(bias, dtype=np.float64)[None, :, None, None]
    return epilogue(y, b, residual, activation)

