"""Symmetric int8 quantisation in numpy: the rule freeze stores and the runtime applies.

Values are in [-127, 127] (the -128 code is not used). Weights are quantised per output
channel (dim 0) once; kept-precision int8 layers quantise their activations per tensor at
run time. `tdsl.backends.torch.runtime.int8_weight` / `int8_activation` are the torch twins
used in training (same formulas; a test holds them equal).
"""
from __future__ import annotations

import numpy as np

INT8_MAX = 127


def int8_weight(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 values shaped like `w`, float32 scale [out]): scale = max|w_row| / 127 (1 for an
    all-zero row), values round(w / scale) clipped to +-127."""
    rows = np.asarray(w, np.float32).reshape(w.shape[0], -1)
    amax = np.abs(rows).max(axis=1) if rows.shape[1] else np.zeros(rows.shape[0], np.float32)
    scale = np.where(amax > 0, amax / np.float32(INT8_MAX), np.float32(1)).astype(np.float32)
    q = np.clip(np.round(rows / scale[:, None]), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q.reshape(w.shape), scale


def int8_activation(x: np.ndarray, dtype: type = np.float32) -> tuple[np.ndarray, np.float32]:
    """(integer values in `dtype`, scale ()) of `x`: symmetric per tensor, amax / 127."""
    amax = np.float32(np.abs(x).max()) if x.size else np.float32(0)
    scale = np.float32(amax / np.float32(INT8_MAX)) if amax > 0 else np.float32(1)
    q = np.clip(np.round(x / scale), -INT8_MAX, INT8_MAX)
    return q.astype(dtype), scale
