"""`numba.cuda` kernels of the plan steps besides packed ternary conv and linear (those are
`cuda_conv2d` and `cuda_gemm`): float conv and linear, pooling, adaptive average pooling,
activations and binary ops, on NCHW float32 device arrays. `tdsl.backends.numba.gpu` launches
them (`kernel[blocks(n), TPB]`). One thread per output element: straightforward rather than
tuned, like the runtime's other CUDA kernels. Activations run through the CPU's one
definition (`cuda_gemm.activation`), with the CPU epilogue's float32 roundings.
"""
from __future__ import annotations

import math

import numpy as np
from numba import config, cuda, float32

from tdsl.runtime.cuda_conv2d import nchw_position
from tdsl.runtime.cuda_gemm import activation

TPB = 32 if config.ENABLE_CUDASIM else 128  # the simulator runs one Python thread per CUDA thread
F0 = np.float32(0.0)
ACTIVATION_FN = -1
"""The `fn` of `elementwise_kernel` that applies an activation (the binary ops are 0..3)."""


@cuda.jit
def conv_direct_kernel(x, w, sh, sw, ph, pw, dh, dw, groups, bias, res, has_res, act, y):
    """A float conv (w [O, C/groups, kh, kw]) with bias, residual and activation, direct."""
    idx = cuda.grid(1)
    if idx >= y.size:
        return
    n, o, oy, ox = nchw_position(idx, y)
    H, W = x.shape[2], x.shape[3]
    Cg, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    c0 = (o // (y.shape[1] // groups)) * Cg
    acc = F0
    for c in range(Cg):
        for i in range(kh):
            iy = oy * sh - ph + i * dh
            for j in range(kw):
                ix = ox * sw - pw + j * dw
                if 0 <= iy < H and 0 <= ix < W:
                    acc += x[n, c0 + c, iy, ix] * w[o, c, i, j]
    v = float32(acc + bias[o])
    if has_res:
        v = float32(v + res[n, o, oy, ox])
    y[n, o, oy, ox] = activation(v, act)


@cuda.jit
def linear_kernel(x, wt, bias, res, has_res, act, y):
    """y [B, N] = act(x [B, K] @ wt [K, N] + bias [+ res]): a float linear layer."""
    idx = cuda.grid(1)
    B, N = y.shape
    if idx >= B * N:
        return
    b = idx // N
    n = idx % N
    acc = F0
    for k in range(x.shape[1]):
        acc += x[b, k] * wt[k, n]
    v = float32(acc + bias[n])
    if has_res:
        v = float32(v + res[b, n])
    y[b, n] = activation(v, act)


@cuda.jit
def pool_kernel(x, kh, kw, sh, sw, ph, pw, is_max, y):
    """Max (padding never wins) or average (padding counted) pooling."""
    idx = cuda.grid(1)
    if idx >= y.size:
        return
    n, c, oy, ox = nchw_position(idx, y)
    H, W = x.shape[2], x.shape[3]
    m = -np.inf if is_max else F0
    for i in range(kh):
        iy = oy * sh - ph + i
        for j in range(kw):
            ix = ox * sw - pw + j
            if 0 <= iy < H and 0 <= ix < W:
                v = x[n, c, iy, ix]
                if is_max:
                    m = max(m, v)
                else:
                    m += v
    y[n, c, oy, ox] = m if is_max else m / float32(kh * kw)


@cuda.jit
def adaptive_avg_kernel(x, y):
    """Adaptive average pooling, windows [floor(i*H/Ho), ceil((i+1)*H/Ho)) as torch's."""
    idx = cuda.grid(1)
    if idx >= y.size:
        return
    n, c, oy, ox = nchw_position(idx, y)
    H, W, Ho, Wo = x.shape[2], x.shape[3], y.shape[2], y.shape[3]
    y0, y1 = (oy * H) // Ho, ((oy + 1) * H + Ho - 1) // Ho
    x0, x1 = (ox * W) // Wo, ((ox + 1) * W + Wo - 1) // Wo
    s = F0
    for iy in range(y0, y1):
        for ix in range(x0, x1):
            s += x[n, c, iy, ix]
    y[n, c, oy, ox] = s / float32((y1 - y0) * (x1 - x0))


@cuda.jit
def elementwise_kernel(a, b, fn, act, y):
    """Flat arrays: fn is a binary op's code (`tdsl.ops.elementwise.BINARY`) on a and b, or
    `ACTIVATION_FN` with `act` an activation code on a."""
    i = cuda.grid(1)
    if i >= y.shape[0]:
        return
    if fn == 0:
        y[i] = a[i] + b[i]
    elif fn == 1:
        y[i] = a[i] - b[i]
    elif fn == 2:
        y[i] = a[i] * b[i]
    elif fn == 3:
        y[i] = a[i] / b[i]
    else:
        y[i] = activation(a[i], act)


def blocks(n: int) -> int:
    """Blocks of TPB threads that cover n output elements (at least one)."""
    return max(1, math.ceil(n / TPB))
