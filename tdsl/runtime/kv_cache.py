"""A key/value cache for decoding: the keys and values each attention layer has seen.

Decoding one token at a time must attend over every earlier position without recomputing
it; the cache keeps, per attention step, the keys and values of all positions so far
(float32 [N, capacity, features], heads packed as the projections write them). Capacity
doubles when full, so a generation of unknown length costs amortised O(1) copies per token.
The keys are also kept transposed (`keys_t`, [N, features, capacity]): a decode step's
attention then sums each score over the head dim as one vector loop over positions
(`llm_kernels.attention_cached`) with no transpose per step. Imports numpy only.
"""
from __future__ import annotations

import numpy as np

from tdsl.errors import TdslError


class KVCache:
    """Keys and values by layer (the attention step's index among the plan's attention steps)."""

    def __init__(self, layers: int, capacity: int = 256):
        if layers < 1 or capacity < 1:
            raise TdslError(f"a KV cache needs at least one layer and one position, got {layers} and {capacity}")
        self.layers = layers
        self.capacity = capacity
        self.length = 0
        """Positions stored (every layer has the same count once a step has run)."""
        self.keys: list[np.ndarray | None] = [None] * layers
        self.values: list[np.ndarray | None] = [None] * layers
        self.keys_t: list[np.ndarray | None] = [None] * layers
        """Per layer the keys as [N, features, capacity] (position last), written by `append`."""

    def reset(self) -> None:
        """Forget every position (the arrays are kept for the next sequence)."""
        self.length = 0

    def nbytes(self) -> int:
        """Bytes the stored positions take (keys and values of every layer)."""
        return sum(int(a[:, :self.length].nbytes) for a in (*self.keys, *self.values) if a is not None)

    def append(self, layer: int, start: int, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Store `k`, `v` ([N, T, F]) at positions start..start+T-1 of `layer`; the keys and
        values of positions 0..start+T-1 (views, valid until the next append)."""
        n, t, f = k.shape
        end = start + t
        keys, values, keys_t = self.keys[layer], self.values[layer], self.keys_t[layer]
        if keys is None or keys.shape[0] != n or keys.shape[2] != f or values.shape[2] != v.shape[2]:
            self.capacity = max(self.capacity, end)
            keys = np.zeros((n, self.capacity, f), np.float32)
            values = np.zeros((n, self.capacity, v.shape[2]), np.float32)
            keys_t = np.zeros((n, f, self.capacity), np.float32)
        elif end > keys.shape[1]:
            grown = max(end, 2 * keys.shape[1])
            keys = np.concatenate([keys, np.zeros((n, grown - keys.shape[1], f), np.float32)], axis=1)
            values = np.concatenate([values, np.zeros((n, grown - values.shape[1], v.shape[2]), np.float32)], axis=1)
            keys_t = np.concatenate([keys_t, np.zeros((n, f, grown - keys_t.shape[2]), np.float32)], axis=2)
        keys[:, start:end] = k
        values[:, start:end] = v
        keys_t[:, :, start:end] = k.transpose(0, 2, 1)
        self.keys[layer], self.values[layer], self.keys_t[layer] = keys, values, keys_t
        return keys[:, :end], values[:, :end]
