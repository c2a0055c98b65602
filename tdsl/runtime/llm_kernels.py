"""Numba kernels for decoding: RMSNorm (optionally writing the int8 codes the ternary
projections read), rotary embedding and attention over a key/value cache.

The numpy meaning of each is elsewhere and the tests compare against it: `tdsl.ops.sequence
.rms_norm` (float64 there, float32 accumulation in float64 here), `tdsl.runtime.attention
.rope` and `.attention` (float32), `tdsl.runtime.quant_act.quantize_deinterleave` for the
codes. Activations keep the heads packed in the last dim ([N, T, H*Dh]) as the projections
write them. Why kernels: the numpy composites allocate several temporaries per call and run
on one core; in a decode step of a 2B-class model they cost as much as a projection. Every
kernel splits its outer loop with `prange` into contiguous slices (rows, or (sequence, head,
query) items). The LM head kernels (fp16, int8) are `tdsl.runtime.lm_head`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from tdsl.errors import TdslError
from tdsl.runtime import gemm
from tdsl.runtime.activations import EXP_COEFFS, EXP_LO, LN2_HI, LN2_LO, LOG2E, SILU
from tdsl.runtime.attention import rope_tables
from tdsl.runtime.quant_act import PARALLEL_MIN_ROWS, plane_stride, write_codes

_NO_INT = np.zeros((0, 0), np.int32)


@njit(inline="always", cache=True)
def _abs_max(row):
    """max |row[k]| of a float32 row, NaNs ignored (as `a > amax` ignores them): on the bit
    patterns with the sign cleared, which order as the magnitudes do, so the loop is an
    integer max the compiler vectorises (a float compare-and-branch it does not)."""
    bits = row.view(np.int32)
    m = np.int32(0)
    for k in range(bits.shape[0]):
        b = bits[k] & np.int32(0x7FFFFFFF)
        if b > np.int32(0x7F800000):  # NaN
            b = np.int32(0)
        if b > m:
            m = b
    out = np.empty(1, np.int32)
    out[0] = m
    return out.view(np.float32)[0]


@njit(inline="always", cache=True)
def _rms_row(x, r, w, eps, y):
    """Normalise row r of x into y[r] and return the row's float32 absmax (for the int8 codes).
    The sum of squares stays one float64 chain in k order: summed in four interleaved chains
    (twice as fast) a code flipped in test_b158's trained decoder, off torch by 1e-2. The
    normalising loop has no reduction, so it vectorises, and `_abs_max` after it."""
    d = x.shape[1]
    s = 0.0
    for k in range(d):
        v = np.float64(x[r, k])
        s += v * v
    inv = 1.0 / np.sqrt(s / d + eps)
    for k in range(d):
        y[r, k] = np.float32(np.float64(x[r, k]) * inv * np.float64(w[k]))
    return _abs_max(y[r])


@njit(parallel=True, cache=True)
def _rms_norm(x, w, eps, y):
    for r in prange(x.shape[0]):
        _rms_row(x, r, w, eps, y)


_rms_norm_serial = njit(cache=True)(_rms_norm.py_func)
"""`_rms_norm` on one thread (below PARALLEL_MIN_ROWS rows, as the quantising norm): a decode
step's final norm is one row, less than a parallel region's start costs."""


@njit(inline="always", cache=True)
def _rms_quant_row(x, r, w, eps, y, xq, xs, sums, K4p):
    """`_rms_row`, then row r's per-token int8 codes in the de-interleaved layout of
    `quant_act.quantize_deinterleave`, by the same float32 arithmetic (so the same codes)."""
    write_codes(y, r, _rms_row(x, r, w, eps, y), xq, xs, sums, K4p)


@njit(cache=True)
def _rms_norm_quant_serial(x, w, eps, y, xq, xs, sums, K4p):
    for r in range(x.shape[0]):
        _rms_quant_row(x, r, w, eps, y, xq, xs, sums, K4p)


@njit(parallel=True, cache=True)
def _rms_norm_quant_parallel(x, w, eps, y, xq, xs, sums, K4p):
    for r in prange(x.shape[0]):
        _rms_quant_row(x, r, w, eps, y, xq, xs, sums, K4p)


@njit(cache=True)
def rms_norm_quant_into(x, w, eps, y, xq, xs, sums, K4p):
    """`_rms_norm_quant_serial` into codes reused from step to step (decode: no allocation,
    no Python wrapper per norm): a row whose absmax is 0 gets its codes zeroed here, since
    `write_codes` leaves them as they were (on a fresh zeroed array, the same codes)."""
    for r in range(x.shape[0]):
        amax = _rms_row(x, r, w, eps, y)
        if amax == np.float32(0.0):
            xq[r, :] = 0
        write_codes(y, r, amax, xq, xs, sums, K4p)


def _out_rows(out: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """`out` as rows to write in place (a reshape that copied would lose the result)."""
    if out.dtype != np.float32 or not out.flags.c_contiguous or out.size != shape[0] * shape[1]:
        raise TdslError(f"out must be a C-contiguous float32 array of {shape[0] * shape[1]} elements, got "
                        f"{out.dtype} {out.shape}")
    return out.reshape(shape)


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float, out: np.ndarray | None = None) -> np.ndarray:
    """x [..., D] float32 -> x / sqrt(mean(x^2) + eps) * weight, rows in parallel."""
    x2 = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, x.shape[-1])
    w = np.ascontiguousarray(weight, dtype=np.float32)
    if w.shape != (x2.shape[1],):
        raise TdslError(f"rms_norm: weight of shape {w.shape} for rows of {x2.shape[1]}")
    y = np.empty_like(x2) if out is None else _out_rows(out, x2.shape)
    (_rms_norm if x2.shape[0] >= PARALLEL_MIN_ROWS else _rms_norm_serial)(x2, w, float(eps), y)
    return y.reshape(x.shape)


@dataclass
class QuantizedRows:
    """Rows quantised per token to int8 for the ternary GEMV kernels (`tdsl.runtime.gemm`):
    xq int8 [Bp, 4*K4p] de-interleaved (`tdsl.runtime.quant_act`; rows B..Bp-1 and padding 0),
    xs float32 [B] with x ~ xs * xq, sums int32 [B] = sum_k xq."""

    xq: np.ndarray
    xs: np.ndarray
    sums: np.ndarray


def rms_norm_quant(x: np.ndarray, weight: np.ndarray, eps: float, out: np.ndarray | None = None,
                   batch_multiple: int = 1) -> tuple[np.ndarray, QuantizedRows]:
    """`rms_norm` that also yields the per-token int8 codes of its output, as
    `quant_act.quantize_deinterleave(rms_norm(x))` gives them bit for bit, from the one pass
    that normalises the row (the projections after a norm then read int8 directly). Rows are
    padded with zeros to a multiple of `batch_multiple` (the blocked VNNI kernel takes 4)."""
    x2 = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, x.shape[-1])
    w = np.ascontiguousarray(weight, dtype=np.float32)
    rows, d = x2.shape
    if w.shape != (d,):
        raise TdslError(f"rms_norm_quant: weight of shape {w.shape} for rows of {d}")
    if batch_multiple < 1:
        raise TdslError(f"rms_norm_quant: batch_multiple must be at least 1, got {batch_multiple}")
    y = np.empty_like(x2) if out is None else _out_rows(out, x2.shape)
    K4p = plane_stride(d)
    q = QuantizedRows(np.zeros((-(-rows // batch_multiple) * batch_multiple, 4 * K4p), np.int8),
                      np.empty(rows, np.float32), np.empty(rows, np.int32))
    kernel = _rms_norm_quant_parallel if rows >= PARALLEL_MIN_ROWS else _rms_norm_quant_serial
    kernel(x2, w, float(eps), y, q.xq, q.xs, q.sums, K4p)
    return y.reshape(x.shape), q


def batch_multiple(path: str, rows: int) -> int:
    """The row padding `ternary_linear_quantized` needs on a kernel path (as `gemm` pads)."""
    return 4 if path == "vnni" and rows > 1 else 1


def ternary_linear_quantized(y: np.ndarray, q: QuantizedRows, packed: np.ndarray, s: np.ndarray, bias: np.ndarray,
                             res: np.ndarray, act: int, path: str) -> None:
    """y [B, N] = act(xq . T^T * (xs s) + bias + res): `gemm.linear_into` for act_quant="int8"
    minus its quantisation, on rows already quantised (by `rms_norm_quant`). Same kernels,
    same integers, same epilogue, hence the same bits as the unfused call."""
    rows = y.shape[0]
    if q.xs.shape != (rows,) or q.xq.shape[0] % batch_multiple(path, rows) or packed.shape[0] != y.shape[1] \
            or q.xq.shape[1] != 4 * plane_stride(4 * packed.shape[1]):
        raise TdslError(f"ternary_linear_quantized: codes {q.xq.shape}, scales {q.xs.shape}, packed {packed.shape} "
                        f"and output {y.shape} do not fit (path {path!r})")
    gemm.row_kernel(path, rows)(q.xq, q.sums, q.xs, packed, s, bias, res, act, y, _NO_INT)


@njit(parallel=True, cache=True)
def _rope(x, cos, sin, heads, y):
    n, t, features = x.shape
    dh = features // heads
    half = dh // 2
    for item in prange(n * t * heads):
        b = item // (t * heads)
        i = (item // heads) % t
        h = item % heads
        base = h * dh
        for j in range(half):
            a = x[b, i, base + j]
            c = x[b, i, base + j + half]
            y[b, i, base + j] = a * cos[i, j] - c * sin[i, j]
            y[b, i, base + j + half] = c * cos[i, j + half] + a * sin[i, j + half]


_rope_serial = njit(cache=True)(_rope.py_func)
"""`_rope` on one thread, the same arithmetic: a decode step's one token rotates a few
thousand values, less than a parallel region's start costs."""


def rope(x: np.ndarray, heads: int, base: float, offset: int = 0, out: np.ndarray | None = None) -> np.ndarray:
    """x [N, T, H*Dh] rotated for positions offset .. offset+T-1 (rotate-half, as `attention.rope`)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, t, features = x.shape
    if features % heads or (features // heads) % 2:
        raise TdslError(f"rope: {features} features do not split into {heads} heads of an even size")
    cos, sin = _tables(offset, t, features // heads, float(base))
    y = np.empty_like(x) if out is None else out
    _rope(x, cos, sin, heads, y)
    return y


@functools.lru_cache(maxsize=8)
def _tables(offset: int, t: int, head_dim: int, base: float) -> tuple[np.ndarray, np.ndarray]:
    """`rope_tables` for positions offset .. offset+t-1, made once per decode step, not once
    per rotary op (2 per layer); read-only, since the cache hands out the same arrays."""
    cos, sin = (np.ascontiguousarray(a) for a in rope_tables(np.arange(offset, offset + t), head_dim, base))
    cos.flags.writeable = sin.flags.writeable = False
    return cos, sin




@njit(inline="always", cache=True, fastmath=False)
def _exp_shifted(scores, count, top, bits):
    """scores[s] = exp(scores[s] - top) for s < count (bits: int32 scratch of count), in vector
    registers: Cephes' float32 exp (x = n ln2 + r, |r| <= ln2 / 2, a polynomial in r, then
    times 2^n built in the exponent bits; within 2 ulp, tested), where `np.exp` called libm's
    expf one score at a time (24 heads x 80 positions on one thread, the 700M decode's
    attention: 4.8 -> 1.0 us). Shifted by the maximum, every argument is <= 0 and the largest
    term is 1, so a term floored at exp(-87) moves the softmax by less than 1e-37."""
    p0, p1, p2, p3, p4, p5 = EXP_COEFFS
    for s in range(count):
        x = scores[s] - top
        if x < EXP_LO:  # not max(): a NaN score must stay NaN
            x = EXP_LO
        n = np.floor(x * LOG2E + np.float32(0.5))
        r = (x - n * LN2_HI) - n * LN2_LO
        poly = (((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5) * (r * r) + r + np.float32(1.0)
        scores[s] = poly
        bits[s] = np.int32((np.int32(n) + np.int32(127)) << np.int32(23))
    scale = bits.view(np.float32)
    for s in range(count):
        scores[s] = scores[s] * scale[s]


@njit(inline="always", cache=True, fastmath=False)
def _softmax_values(scores, count, top, v, b, g, dh):
    """sum_s softmax(scores[:count])[s] * v[b, s, head g] (scores overwritten by exp(score - top)):
    the tail both attention kernels share, in one order, so they give the same bits."""
    _exp_shifted(scores, count, top, np.empty(count, np.int32))
    total = np.float32(0.0)
    for s in range(count):
        total += scores[s]
    out = np.zeros(dh, np.float32)
    for s in range(count):
        w = scores[s] / total
        vr = v[b, s, g * dh:(g + 1) * dh]
        for j in range(dh):
            out[j] += w * vr[j]
    return out


@njit(parallel=True, cache=True, fastmath=False)
def _attention(q, k, v, heads, kv_heads, causal, scale, y):
    """One item per (sequence, head, query); each head's rows taken as 1-D slices, so the value
    sum (elementwise over the head dim) vectorises; the same operations in the same order as
    the indexed loops, hence the same bits."""
    n, t, features = q.shape
    s_len = k.shape[1]
    dh = features // heads
    group = heads // kv_heads
    for item in prange(n * heads * t):
        b = item // (heads * t)
        h = (item // t) % heads
        i = item % t
        g = h // group
        qr = q[b, i, h * dh:(h + 1) * dh]
        last = i + s_len - t if causal else s_len - 1
        scores = np.empty(last + 1, dtype=np.float32)
        top = np.float32(-np.inf)
        for s in range(last + 1):
            kr = k[b, s, g * dh:(g + 1) * dh]
            acc = np.float32(0.0)
            for j in range(dh):
                acc += qr[j] * kr[j]
            acc *= scale
            scores[s] = acc
            if acc > top:
                top = acc
        y[b, i, h * dh:(h + 1) * dh] = _softmax_values(scores, last + 1, top, v, b, g, dh)


@njit(parallel=True, cache=True)
def _transpose_keys(k, kv_heads, kt):
    """kt[b, g, j, s] = k[b, s, g*dh + j]: each key dimension one contiguous run over positions."""
    n, s_len, features = k.shape
    dh = features // kv_heads
    for item in prange(n * kv_heads):
        b = item // kv_heads
        g = item - b * kv_heads
        for s in range(s_len):
            for j in range(dh):
                kt[b, g, j, s] = k[b, s, g * dh + j]


@njit(parallel=True, cache=True, fastmath=False)
def _attention_rows(q, kt, v, heads, kv_heads, causal, scale, y):
    """`_attention` for many queries (prefill), the keys transposed (`_transpose_keys`): the
    scores of all positions are summed over the head dim together, one vector loop over
    positions per dim, instead of one serial dot product per position (whose dependent adds
    ran at one element per add latency). Each score is still 0 + q0*k0 + q1*k1 + ... in order,
    then times scale: the same bits as `_attention`."""
    n, t, features = q.shape
    s_len = kt.shape[3]
    dh = features // heads
    group = heads // kv_heads
    for item in prange(n * heads * t):
        b = item // (heads * t)
        h = (item // t) % heads
        i = item % t
        g = h // group
        count = (i + s_len - t if causal else s_len - 1) + 1
        scores, top = _scaled_scores(q[b, i, h * dh:(h + 1) * dh], kt[b, g], count, scale)
        y[b, i, h * dh:(h + 1) * dh] = _softmax_values(scores, count, top, v, b, g, dh)


@njit(inline="always", cache=True, fastmath=False)
def _scaled_scores(qr, keys, count, scale):
    """(scores, their max): scores[s] = (0 + q0*k[0, s] + q1*k[1, s] + ...) * scale for the first
    `count` positions of keys [dh, positions] (transposed keys: one vector loop over positions
    per head dim, in the order `_attention` sums), the two attention kernels' shared head."""
    scores = np.zeros(count, dtype=np.float32)
    for j in range(qr.shape[0]):
        qj = qr[j]
        kj = keys[j, :count]
        for s in range(count):
            scores[s] += qj * kj[s]
    top = np.float32(-np.inf)
    for s in range(count):
        scores[s] *= scale
        if scores[s] > top:
            top = scores[s]
    return scores, top


@njit(parallel=True, cache=True, fastmath=False)
def attention_cached(q, kt, v, heads, kv_heads, count, scale, y):
    """One query per sequence (decode) over `count` cached positions, the keys kept transposed
    by the cache (kt [N, Hkv*Dh, capacity], `KVCache.keys_t`): `_attention_rows` for t = 1
    without its per-call transpose, one item per (sequence, head). Scores summed over the
    head dim for all positions at once (a vector loop over positions), each still
    0 + q0*k0 + q1*k1 + ... in order, times scale: the same bits as `_attention`."""
    n, t, features = q.shape
    dh = features // heads
    group = heads // kv_heads
    for item in prange(n * heads):
        b = item // heads
        h = item - b * heads
        g = h // group
        scores, top = _scaled_scores(q[b, 0, h * dh:(h + 1) * dh], kt[b, g * dh:(g + 1) * dh], count, scale)
        y[b, 0, h * dh:(h + 1) * dh] = _softmax_values(scores, count, top, v, b, g, dh)


@njit(cache=True, error_model="numpy")
def member_slice(src, lo, bias, act, epilogue, y):
    """y [B, n] = src[:, lo:lo+n], then (`epilogue`) act(float32(y + bias)) as
    `kernels.bias_residual_act` computes it without a residual: a sibling projection's share
    of a fused call in one serial pass (a decode step's slice is a few thousand values). SiLU
    has a loop of its own that vectorises (as `nchw_float.activation_map`'s)."""
    if epilogue and act == SILU:
        n = y.shape[1]
        for b in range(y.shape[0]):
            row, out = src[b, lo:lo + n], y[b]
            for i in range(n):
                out[i] = gemm.activation(np.float32(row[i] + bias[i]), SILU)
        return
    for b in range(y.shape[0]):
        for i in range(y.shape[1]):
            v = src[b, lo + i]
            if epilogue:
                v = gemm.activation(np.float32(v + bias[i]), act)
            y[b, i] = v


ATTENTION_ROWS_MIN_QUERIES = 4
"""From this many queries a call (prefill) transposes the keys once and runs `_attention_rows`;
a decode step (one query) reads the cache as it is (a transpose per step would copy it)."""


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, heads: int, kv_heads: int, causal: bool,
              out: np.ndarray | None = None) -> np.ndarray:
    """Scaled dot-product attention as `attention.attention` (q [N, T, H*Dh], k/v [N, S, Hkv*Dh],
    causal mask aligned to the end), one parallel item per (sequence, head, query)."""
    q = np.ascontiguousarray(q, dtype=np.float32)
    k = np.ascontiguousarray(k, dtype=np.float32)
    v = np.ascontiguousarray(v, dtype=np.float32)
    n, t, features = q.shape
    if heads % kv_heads or features % heads or k.shape != v.shape or k.shape[0] != n \
            or k.shape[2] != kv_heads * (features // heads) or (causal and k.shape[1] < t):
        raise TdslError(f"attention: q {q.shape}, k {k.shape}, v {v.shape} do not fit {heads} heads and "
                        f"{kv_heads} key/value heads")
    y = np.empty_like(q) if out is None else out
    scale = np.float32(1.0 / np.sqrt(features // heads))
    if t >= ATTENTION_ROWS_MIN_QUERIES:
        kt = np.empty((n, kv_heads, features // heads, k.shape[1]), np.float32)
        _transpose_keys(k, kv_heads, kt)
        _attention_rows(q, kt, v, heads, kv_heads, causal, scale, y)
    else:
        _attention(q, k, v, heads, kv_heads, causal, scale, y)
    return y
