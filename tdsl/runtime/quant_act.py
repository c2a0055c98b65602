"""Per-token int8 activation quantisation fused with the de-interleave the GEMM kernels read.

Semantics: `tdsl.runtime.reference.quantize_activations` (float32 absmax per row, round half
to even, |xq| <= 127). Layout: the packed weight byte i of a row holds trits k = 4i .. 4i+3
(docs/PACKED_FORMAT.md), so the kernels want activation k = 4i + j at plane j, position i:

    xd[b, j*K4p + i] = q(x[b, 4i + j])         K4p = 64 * ceil(ceil(K/4) / 64)

i.e. four contiguous planes, each padded with zeros to whole 64-byte chunks. A packed byte
then lines up with byte i of every plane and the weights need no shuffles (KERNELS.md,
technique e). Padding positions (k >= K, and the tail of each plane) hold 0, so the padding
trits of a packed row contribute nothing. Rows B .. Bp-1 (batch padding for register
blocking) are zero too.

Also returned: the per-row scale xs (x ~ xs * xq) and sum_k xq[b, k], which the kernels
subtract once per output because they multiply by the codes c = t + 1.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

PARALLEL_MIN_ROWS = 16  # below this a prange launch costs more than it saves


def plane_stride(K: int) -> int:
    """K4p: the length of one de-interleaved plane (ceil(K/4) rounded up to 64)."""
    nb = -(-K // 4)
    return max(64, -(-nb // 64) * 64)


@njit(inline="always", cache=True)
def token_scale(amax, xs, sums, t):
    """Store token t's scale xs[t] = amax/127 (x ~ xs * xq) and return (127/amax, True), the
    multiplier that maps the token to int8; an all-zero token (amax == 0) gets xs[t] =
    sums[t] = 0 and (0, False): its xq is all zero. Shared with `conv_int8`."""
    if amax == np.float32(0.0):
        xs[t] = np.float32(0.0)
        sums[t] = 0
        return np.float32(0.0), False
    xs[t] = amax / np.float32(127.0)
    return np.float32(127.0) / amax, True


@njit(cache=True)
def _quantize_row(x, b, xq, xs, sums, K4p):
    amax = np.float32(0.0)
    for k in range(x.shape[1]):
        a = abs(x[b, k])
        if a > amax:
            amax = a
    write_codes(x, b, amax, xq, xs, sums, K4p)


@njit(inline="always", cache=True)
def write_codes(x, b, amax, xq, xs, sums, K4p):
    """Row b's int8 codes (scale from its absmax `amax`) into xq in the de-interleaved layout,
    its scale into xs[b] and its code sum into sums[b]: the one definition of the per-token
    codes (`_quantize_row`; `llm_kernels.rms_norm_quant` after normalising)."""
    inv, nonzero = token_scale(amax, xs, sums, b)
    if not nonzero:
        return
    total = np.int32(0)
    for k in range(x.shape[1]):
        q = np.rint(x[b, k] * inv)
        if q > np.float32(127.0):
            q = np.float32(127.0)
        elif q < np.float32(-127.0):
            q = np.float32(-127.0)
        qi = np.int8(q)
        xq[b, (k & 3) * K4p + (k >> 2)] = qi
        total += np.int32(qi)
    sums[b] = total


@njit(cache=True)
def _quantize_serial(x, xq, xs, sums, K4p):
    for b in range(x.shape[0]):
        _quantize_row(x, b, xq, xs, sums, K4p)


@njit(cache=True, parallel=True)
def _quantize_parallel(x, xq, xs, sums, K4p):
    for b in prange(x.shape[0]):
        _quantize_row(x, b, xq, xs, sums, K4p)


def quantize_deinterleave(x: np.ndarray, batch_multiple: int = 1
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x float32 C-contiguous [B, K] -> (xq int8 [Bp, 4*K4p], xs float32 [B], sums int32 [B]).

    Bp is B rounded up to `batch_multiple`; the extra rows are zero. The caller has checked
    x (dtype, contiguity); rows are quantised in a prange when B >= PARALLEL_MIN_ROWS.
    """
    B, K = x.shape
    K4p = plane_stride(K)
    Bp = -(-B // batch_multiple) * batch_multiple
    xq = np.zeros((Bp, 4 * K4p), dtype=np.int8)
    xs = np.empty(B, dtype=np.float32)
    sums = np.empty(B, dtype=np.int32)
    if B >= PARALLEL_MIN_ROWS:
        _quantize_parallel(x, xq, xs, sums, K4p)
    else:
        _quantize_serial(x, xq, xs, sums, K4p)
    return xq, xs, sums


@njit(cache=True)
def _deinterleave_float(x, xd, K4p):
    B, K = x.shape
    for b in range(B):
        for k in range(K):
            xd[b, (k & 3) * K4p + (k >> 2)] = x[b, k]


def deinterleave_float(x: np.ndarray) -> np.ndarray:
    """The float path's layout: xd float32 [B, 4*K4p], xd[b, j*K4p + i] = x[b, 4i + j], zero padded."""
    K4p = plane_stride(x.shape[1])
    xd = np.zeros((x.shape[0], 4 * K4p), dtype=np.float32)
    _deinterleave_float(x, xd, K4p)
    return xd
