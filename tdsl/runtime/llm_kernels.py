"""Numba kernels for decoding: RMSNorm, rotary embedding, attention over a key/value cache,
and an int8-per-row LM head GEMV.

The numpy meaning of each is elsewhere and the tests compare against it: `tdsl.ops.sequence
.rms_norm` (float64 there, float32 accumulation in float64 here), `tdsl.runtime.attention
.rope` and `.attention` (float32). Activations keep the heads packed in the last dim
([N, T, H*Dh]) as the projections write them. Why kernels: the numpy composites allocate
several temporaries per call and run on one core; in a decode step of a 2B-class model they
cost as much as a projection. Every kernel splits its outer loop with `prange` into
contiguous slices (rows, or (sequence, head, query) items).

The head: a decoder's LM head is its largest single read per token (vocab x d; 197 MB at
float32 for d 1536 and vocab 32000). `quantize_rows_int8` stores it as int8 with one float32
scale per row (absmax / 127, round half to even), a quarter of the float32 bytes; `gemv_int8_rows`
multiplies float32 activations by it (the activations are not quantised, so the only error
is the weight's rounding: |error| <= scale/2 per weight). It is an option of the generator
(`head="int8"`), not the default, because it changes the numerics; bench_llm reports it
apart.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from tdsl.errors import TdslError
from tdsl.runtime.attention import rope_tables


@njit(parallel=True, cache=True)
def _rms_norm(x, w, eps, y):
    rows, d = x.shape
    for r in prange(rows):
        s = 0.0
        for k in range(d):
            v = np.float64(x[r, k])
            s += v * v
        inv = 1.0 / np.sqrt(s / d + eps)
        for k in range(d):
            y[r, k] = np.float32(np.float64(x[r, k]) * inv * np.float64(w[k]))


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float, out: np.ndarray | None = None) -> np.ndarray:
    """x [..., D] float32 -> x / sqrt(mean(x^2) + eps) * weight, rows in parallel."""
    x2 = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, x.shape[-1])
    w = np.ascontiguousarray(weight, dtype=np.float32)
    if w.shape != (x2.shape[1],):
        raise TdslError(f"rms_norm: weight of shape {w.shape} for rows of {x2.shape[1]}")
    y = np.empty_like(x2) if out is None else out.reshape(x2.shape)
    _rms_norm(x2, w, float(eps), y)
    return y.reshape(x.shape)


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


def rope(x: np.ndarray, heads: int, base: float, offset: int = 0, out: np.ndarray | None = None) -> np.ndarray:
    """x [N, T, H*Dh] rotated for positions offset .. offset+T-1 (rotate-half, as `attention.rope`)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, t, features = x.shape
    if features % heads or (features // heads) % 2:
        raise TdslError(f"rope: {features} features do not split into {heads} heads of an even size")
    cos, sin = rope_tables(np.arange(offset, offset + t), features // heads, base)
    y = np.empty_like(x) if out is None else out
    _rope(x, np.ascontiguousarray(cos), np.ascontiguousarray(sin), heads, y)
    return y


@njit(parallel=True, cache=True, fastmath=False)
def _attention(q, k, v, heads, kv_heads, causal, scale, y):
    n, t, features = q.shape
    s_len = k.shape[1]
    dh = features // heads
    group = heads // kv_heads
    for item in prange(n * heads * t):
        b = item // (heads * t)
        h = (item // t) % heads
        i = item % t
        g = h // group
        qb, kb = h * dh, g * dh
        last = i + s_len - t if causal else s_len - 1
        scores = np.empty(last + 1, dtype=np.float32)
        top = np.float32(-np.inf)
        for s in range(last + 1):
            acc = np.float32(0.0)
            for j in range(dh):
                acc += q[b, i, qb + j] * k[b, s, kb + j]
            acc *= scale
            scores[s] = acc
            if acc > top:
                top = acc
        total = np.float32(0.0)
        for s in range(last + 1):
            e = np.float32(np.exp(scores[s] - top))
            scores[s] = e
            total += e
        for j in range(dh):
            y[b, i, qb + j] = 0.0
        for s in range(last + 1):
            w = scores[s] / total
            for j in range(dh):
                y[b, i, qb + j] += w * v[b, s, kb + j]


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
    _attention(q, k, v, heads, kv_heads, causal, np.float32(1.0 / np.sqrt(features // heads)), y)
    return y


def quantize_rows_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """w [R, K] float -> (int8 [R, K], float32 scale [R]) with w ~ scale[:, None] * q."""
    w = np.asarray(w, dtype=np.float32)
    amax = np.abs(w).max(axis=1)
    scale = np.where(amax > 0, amax / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


@njit(parallel=True, cache=True, fastmath=True)
def _gemv_int8_rows(x, w8, scale, y, chunks):
    rows, k = w8.shape
    batch = x.shape[0]
    per = (rows + chunks - 1) // chunks
    for c in prange(chunks):
        lo = c * per
        hi = min(rows, lo + per)
        row = np.empty(k, np.float32)
        for r in range(lo, hi):
            if batch == 1:
                acc = np.float32(0.0)
                for j in range(k):
                    acc += np.float32(w8[r, j]) * x[0, j]
                y[0, r] = acc * scale[r]
                continue
            for j in range(k):  # widen the row once for the whole batch
                row[j] = np.float32(w8[r, j])
            for b in range(batch):
                acc = np.float32(0.0)
                for j in range(k):
                    acc += row[j] * x[b, j]
                y[b, r] = acc * scale[r]


def gemv_int8_rows(x: np.ndarray, w8: np.ndarray, scale: np.ndarray, out: np.ndarray | None = None,
                   chunks: int = 64) -> np.ndarray:
    """y [B, R] = x [B, K] (float32) . (scale[:, None] * w8 [R, K])^T; each thread reads a
    contiguous slice of rows once for the whole batch."""
    x2 = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, x.shape[-1])
    if w8.dtype != np.int8 or w8.ndim != 2 or w8.shape[1] != x2.shape[1] or scale.shape != (w8.shape[0],):
        raise TdslError(f"gemv_int8_rows: x {x.shape}, int8 weight {w8.shape} {w8.dtype}, scale {scale.shape} "
                        "do not fit")
    y = np.empty((x2.shape[0], w8.shape[0]), np.float32) if out is None else out.reshape(x2.shape[0], w8.shape[0])
    _gemv_int8_rows(x2, w8, scale.astype(np.float32, copy=False), y, min(chunks, w8.shape[0]))
    return y.reshape(*x.shape[:-1], w8.shape[0])
