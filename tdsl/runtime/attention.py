"""The numpy meaning of the sequence-model ops: rotary embedding and causal attention.

Both the op registry's composite rows (`tdsl.ops.sequence`, full sequences) and the
key/value-cached generation (`tdsl.runtime.kv_cache`, one token at a time) call these, so
a decode step computes exactly what the whole-sequence forward computes. Heads are packed
in the last dim ([N, T, H*Dh]), as the projections write them. Imports numpy only.
"""
from __future__ import annotations

import numpy as np


def rope_tables(positions: np.ndarray, head_dim: int, base: float) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin) [T, head_dim] of the rotate-half rotary embedding at these positions; the
    angles are formed in float32, as the torch emission forms them."""
    inv_freq = (1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))).astype(np.float32)
    angles = positions.astype(np.float32)[:, None] * inv_freq[None, :]
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles), np.sin(angles)


def rope(x: np.ndarray, heads: int, base: float, offset: int = 0) -> np.ndarray:
    """x[N, T, H*Dh] rotated for positions offset..offset+T-1 (float32)."""
    n, t, features = x.shape
    dh = features // heads
    cos, sin = rope_tables(np.arange(offset, offset + t), dh, base)
    h = np.asarray(x, np.float32).reshape(n, t, heads, dh)
    half = dh // 2
    rotated = np.concatenate([-h[..., half:], h[..., :half]], axis=-1)
    out = h * cos[None, :, None, :] + rotated * sin[None, :, None, :]
    return out.reshape(n, t, features)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, heads: int, kv_heads: int,
              causal: bool) -> np.ndarray:
    """Scaled dot-product attention, q[N, T, H*Dh], k/v[N, S, Hkv*Dh] -> [N, T, H*Dh] (float32).
    Query head h reads key/value head h // (H / Hkv); causal: query t sees keys 0..t + S - T."""
    n, t, features = q.shape
    s = k.shape[1]
    dh = features // heads
    group = heads // kv_heads
    qh = np.asarray(q, np.float32).reshape(n, t, heads, dh).transpose(0, 2, 1, 3)
    kh = np.repeat(np.asarray(k, np.float32).reshape(n, s, kv_heads, dh).transpose(0, 2, 1, 3), group, axis=1)
    vh = np.repeat(np.asarray(v, np.float32).reshape(n, s, kv_heads, dh).transpose(0, 2, 1, 3), group, axis=1)
    scores = (qh @ kh.transpose(0, 1, 3, 2)) * np.float32(1.0 / np.sqrt(dh))
    if causal:
        allowed = np.arange(s)[None, :] <= np.arange(t)[:, None] + (s - t)
        scores = np.where(allowed, scores, np.float32(-np.inf))
    scores = scores - scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores)
    weights /= weights.sum(axis=-1, keepdims=True)
    return (weights @ vh).transpose(0, 2, 1, 3).reshape(n, t, features)
