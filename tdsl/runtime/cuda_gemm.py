"""Ternary linear layers on packed weights, `numba.cuda` kernels (CUDA twin of `gemm`).

Same arguments, semantics (`tdsl.runtime.reference.ternary_linear`) and packed layout
(`tdsl.runtime.packing`, "2bit") as `tdsl.runtime.gemm.ternary_linear`. A straightforward,
correct kernel rather than a tuned one:
* activations are quantised on the device, one thread block per batch row (shared-memory
  absmax and sum reductions), with the same float32 formula as the CPU, so the int8 values
  and the int32 accumulators equal the CPU kernels' bit for bit;
* the GEMM runs one thread per output row n and one grid row per batch row b; each block
  stages TILE packed bytes' worth of activations (4*TILE values) in shared memory and every
  thread decodes its own row's 2-bit codes with shifts and masks (integer ops only);
* act_quant="float" stages fp32 activations and multiplies by t = c - 1 in fp32.
The float epilogue is the CPU's (float32(acc) * (xs*s) + bias + residual, then the
activation); a real GPU may fuse that multiply-add (FMA), so floats agree to about 1e-7
relative, integers exactly. `ternary_linear_cuda` takes numpy arrays (copies in and out);
`ternary_linear_device` takes and returns device arrays.
"""
from __future__ import annotations

import math

import numpy as np
from numba import config, cuda, float32, int32

from tdsl.runtime import activations
from tdsl.runtime.gemm import check_linear_args

# threads per block: output rows per block in the GEMM, lanes in the quantiser. The
# simulator runs one Python thread per CUDA thread, so it gets small blocks.
TPB = 32 if config.ENABLE_CUDASIM else 128
TILE = 64 if config.ENABLE_CUDASIM else 256  # packed bytes per shared-memory activation tile (4*TILE activations)
F0 = np.float32(0.0)
F1 = np.float32(1.0)
F127 = np.float32(127.0)


@cuda.jit(cache=True)
def _quantize_kernel(x, xq, xs, sums):
    """Block b: xq[b, k] = rint(x[b, k] * 127/amax), xs[b] = amax/127, sums[b] = sum xq."""
    b = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    K = x.shape[1]
    red = cuda.shared.array(TPB, float32)
    ired = cuda.shared.array(TPB, int32)
    m = F0
    for k in range(tid, K, TPB):
        a = abs(x[b, k])
        if a > m:
            m = a
    red[tid] = m
    cuda.syncthreads()
    step = TPB // 2
    while step > 0:
        if tid < step and red[tid + step] > red[tid]:
            red[tid] = red[tid + step]
        cuda.syncthreads()
        step //= 2
    amax = red[0]
    inv = F0
    if amax > F0:
        inv = F127 / amax
    total = 0
    for k in range(tid, K, TPB):
        q = round(x[b, k] * inv)  # round half to even, as np.rint on the CPU
        q = min(max(q, -127), 127)
        xq[b, k] = q
        total += q
    ired[tid] = total
    cuda.syncthreads()
    step = TPB // 2
    while step > 0:
        if tid < step:
            ired[tid] += ired[tid + step]
        cuda.syncthreads()
        step //= 2
    if tid == 0:
        xs[b] = amax / F127
        sums[b] = ired[0]


activation = cuda.jit(device=True, cache=True)(activations.apply)
"""`tdsl.runtime.activations.apply` as a CUDA device function: every CUDA kernel's epilogue."""


@cuda.jit(device=True, cache=True)
def _finish(v, b, n, bias, res, has_res, act, y):
    v = float32(v + bias[n])
    if has_res:
        v = float32(v + res[b, n])
    y[b, n] = activation(v, act)


@cuda.jit(cache=True)
def _gemm_int8_kernel(xq, sums, xs, packed, s, bias, res, has_res, act, y, yi, want_int):
    n = cuda.blockIdx.x * TPB + cuda.threadIdx.x
    b = cuda.blockIdx.y
    N, nb = packed.shape
    K = xq.shape[1]
    tile = cuda.shared.array(4 * TILE, int32)
    acc = 0
    for i0 in range(0, nb, TILE):
        for e in range(cuda.threadIdx.x, 4 * TILE, TPB):
            k = 4 * i0 + e
            tile[e] = xq[b, k] if k < K else 0
        cuda.syncthreads()
        if n < N:
            for i in range(i0, min(i0 + TILE, nb)):
                c = int32(packed[n, i])
                e = 4 * (i - i0)
                acc += ((c & 3) * tile[e] + ((c >> 2) & 3) * tile[e + 1]
                        + ((c >> 4) & 3) * tile[e + 2] + (c >> 6) * tile[e + 3])
        cuda.syncthreads()
    if n < N:
        acc = int32(acc - sums[b])
        if want_int:
            yi[b, n] = acc
        _finish(float32(acc) * (xs[b] * s[n]), b, n, bias, res, has_res, act, y)


@cuda.jit(cache=True)
def _gemm_float_kernel(x, packed, s, bias, res, has_res, act, y):
    n = cuda.blockIdx.x * TPB + cuda.threadIdx.x
    b = cuda.blockIdx.y
    N, nb = packed.shape
    K = x.shape[1]
    tile = cuda.shared.array(4 * TILE, float32)
    acc = F0
    for i0 in range(0, nb, TILE):
        for e in range(cuda.threadIdx.x, 4 * TILE, TPB):
            k = 4 * i0 + e
            tile[e] = x[b, k] if k < K else F0
        cuda.syncthreads()
        if n < N:
            for i in range(i0, min(i0 + TILE, nb)):
                c = int32(packed[n, i])
                e = 4 * (i - i0)
                for j in range(4):
                    acc += tile[e + j] * (float32((c >> (2 * j)) & 3) - F1)
        cuda.syncthreads()
    if n < N:
        _finish(float32(acc * s[n]), b, n, bias, res, has_res, act, y)


def ternary_linear_device(x, packed, s, bias, residual, act: int, act_quant: str = "int8",
                          y=None, yi=None):
    """Device-array entry: x f32 [B, K], packed u8 [N, nb], s f32 [N], bias f32 [N] device
    arrays (already of the right shapes, as `check_linear_args` makes them on the host),
    residual f32 [B, N] or None, act 0/1/2 (none/relu/relu6). Returns y f32 [B, N] on the
    device; if `yi` (int32 [B, N]) is given, the int8 path also stores its accumulators."""
    B, K = x.shape
    N = packed.shape[0]
    if y is None:
        y = cuda.device_array((B, N), np.float32)
    if B == 0 or N == 0:
        return y
    has_res = residual is not None
    res = residual if has_res else cuda.device_array((1, 1), np.float32)
    grid = (math.ceil(N / TPB), B)
    if act_quant == "float":
        _gemm_float_kernel[grid, TPB](x, packed, s, bias, res, has_res, act, y)
        return y
    xq = cuda.device_array((B, max(K, 1)), np.int8)
    xs = cuda.device_array(B, np.float32)
    sums = cuda.device_array(B, np.int32)
    _quantize_kernel[B, TPB](x, xq, xs, sums)
    want_int = yi is not None
    yi_arg = yi if want_int else cuda.device_array((1, 1), np.int32)
    _gemm_int8_kernel[grid, TPB](xq, sums, xs, packed, s, bias, res, has_res, act, y, yi_arg,
                                 want_int)
    return y


def ternary_linear_cuda(x: np.ndarray, packed: np.ndarray, scale: np.ndarray | float,
                        bias: np.ndarray | None = None, *, activation: str | None = None,
                        residual: np.ndarray | None = None, act_quant: str = "int8"
                        ) -> np.ndarray:
    """`gemm.ternary_linear` on the GPU, numpy in and out (copies both ways)."""
    x, packed, s, b, res, act = check_linear_args(x, packed, scale, bias, activation, residual,
                                                  act_quant)
    d_res = cuda.to_device(res) if residual is not None else None
    y = ternary_linear_device(cuda.to_device(x), cuda.to_device(packed), cuda.to_device(s),
                              cuda.to_device(b), d_res, act, act_quant)
    return y.copy_to_host()


def int8_accumulators_cuda(x: np.ndarray, packed: np.ndarray) -> np.ndarray:
    """The int32 sums sum_k xq[b, k] * t[n, k] the CUDA kernel forms (for exact tests)."""
    x, packed, s, b, _, act = check_linear_args(x, packed, 1.0, None, None, None, "int8")
    yi = cuda.device_array((x.shape[0], packed.shape[0]), np.int32)
    ternary_linear_device(cuda.to_device(x), cuda.to_device(packed), cuda.to_device(s),
                          cuda.to_device(b), None, act, "int8", yi=yi)
    return yi.copy_to_host()
