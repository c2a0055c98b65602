"""Threshold rules Δ for ternarisation: a weight w becomes sign(w) where |w| > Δ, else 0.

numpy only: the deployment runtime imports this module, which must never pull in torch.
`tdsl.quant.torch_ste` implements the same rules on tensors and is tested to agree on
every trit.

Conventions shared by every rule (and by the torch port):
- Per tensor, Δ has shape (); per output channel it has shape [out] (axis 0 of a
  [out, in] or [out, in, kh, kw] weight, one Δ per row).
- Reductions run in float64 and Δ is rounded to float32 once, so that numpy and torch,
  which sum in different orders, still produce the same float32 Δ.
- A weight is zero iff |w| <= Δ (float32 comparison).
- The mean of an empty set is 0, so an empty tensor or row gets Δ = 0.
"""
from __future__ import annotations

import numpy as np

from tdsl.errors import TdslError

METHODS = ("twn", "absmean", "fixed", "sparsity", "optimal")
"""Threshold rules:
- `twn`: Δ = 0.7·mean|W| (Li & Liu 2016, the approximate optimum for Gaussian weights).
- `absmean`: Δ = γ/2 with γ = mean|W| (BitNet b1.58's clip(round(W/γ), -1, 1); a weight
  exactly at |W| = γ/2 rounds half-to-even to 0 there as well).
- `fixed`: the caller's Δ, a scalar or one value per output channel.
- `sparsity`: the lower `target_sparsity` quantile of |W|: with n weights (per row when
  per channel), Δ is the k-th smallest |w| for k = round(target_sparsity·n), so exactly
  k weights are zero unless |W| has ties at Δ (then slightly more); k = 0 gives Δ = 0.
  Per channel each row rounds on its own, so short rows (n < 50) can miss the target by
  up to 1/(2n) per row, and so overall.
- `optimal`: the Δ that minimises ‖W − α·T‖² with α the mean |w| of the kept weights (the
  `mean_nonzero` scale), found exactly: with |w| sorted decreasingly, keeping the k largest
  leaves an error of Σ|w|² − (Σ_{i<=k} |w|_(i))²/k, so k is the argmax of the second term and
  Δ = |w|_(k+1), the largest magnitude zeroed (0 when all are kept). TWN's 0.7·mean|W|
  approximates this for Gaussian weights; on short rows (a 5-tap filter) it can be far off.
  A cut is only made between distinct magnitudes, so the rule keeps exactly k weights.
"""

TWN_FACTOR = 0.7


def check_weight(w: np.ndarray, per_channel: bool) -> np.ndarray:
    """A float32 copy-or-view of `w`, after the checks every rule needs."""
    w = np.asarray(w)
    if not (np.issubdtype(w.dtype, np.floating) or np.issubdtype(w.dtype, np.integer)):
        raise TdslError(f"weights must be a real numeric array, got dtype {w.dtype}")
    if w.ndim == 0:
        raise TdslError("weights must have at least one dimension, got a scalar")
    if per_channel and w.ndim < 2:
        raise TdslError(f"per-channel quantisation needs a weight of rank >= 2 "
                        f"([out, in, ...]), got shape {tuple(w.shape)}")
    w = w.astype(np.float32, copy=False)
    if not np.all(np.isfinite(w)):
        bad = int(np.size(w) - np.count_nonzero(np.isfinite(w)))
        raise TdslError(f"weights must be finite, found {bad} NaN or infinite value(s)")
    return w


def check_options(method: str, target_sparsity: float | None, threshold: object) -> None:
    """Validate a rule name and its argument; shared with the torch port."""
    if method not in METHODS:
        raise TdslError(f"unknown ternary threshold method '{method}'; "
                        f"valid methods are {', '.join(METHODS)}")
    if method == "sparsity":
        if target_sparsity is None:
            raise TdslError("method 'sparsity' needs target_sparsity, a fraction in [0, 1)")
        try:
            s = float(target_sparsity)
        except (TypeError, ValueError):
            raise TdslError(f"target_sparsity must be a number in [0, 1), got {target_sparsity!r}") from None
        if not 0.0 <= s < 1.0:
            raise TdslError(f"target_sparsity must be in [0, 1), got {target_sparsity}")
    elif target_sparsity is not None:
        raise TdslError(f"target_sparsity is only used by method 'sparsity', not '{method}'")
    if method == "fixed":
        if threshold is None:
            raise TdslError("method 'fixed' needs a threshold (a scalar or one per output channel)")
    elif threshold is not None:
        raise TdslError(f"threshold is only used by method 'fixed', not '{method}'")


def check_fixed_threshold(threshold: object, per_channel: bool, out: int) -> np.ndarray:
    """The user's Δ as float32 of shape () or [out]."""
    try:
        d = np.asarray(threshold, dtype=np.float64)
    except (TypeError, ValueError):
        raise TdslError(f"threshold must be a number or an array of numbers, got {threshold!r}") from None
    if not np.all(np.isfinite(d)):
        raise TdslError(f"threshold must be finite, got {threshold}")
    if np.any(d < 0):
        raise TdslError(f"threshold must be non-negative, got {threshold}")
    if d.ndim == 0:
        return np.full((out,) if per_channel else (), d, dtype=np.float32)
    if not per_channel:
        raise TdslError(f"a per-tensor threshold must be a scalar, got shape {d.shape}")
    if d.shape != (out,):
        raise TdslError(f"a per-channel threshold needs shape ({out},), got shape {d.shape}")
    return d.astype(np.float32)


def as_rows(a: np.ndarray, per_channel: bool) -> np.ndarray:
    """`a` with one row per Δ: shape [1, size] per tensor, [out, size/out] per channel."""
    if per_channel:
        return a.reshape(a.shape[0], int(np.prod(a.shape[1:])))
    return a.reshape(1, a.size)


def mean_abs(w: np.ndarray, per_channel: bool) -> np.ndarray:
    """mean|W| in float64, shape () or [out]; 0 for an empty set."""
    rows = as_rows(np.abs(w.astype(np.float64)), per_channel)
    n = rows.shape[1]
    m = rows.sum(axis=1) / n if n else np.zeros(rows.shape[0])
    return m if per_channel else m[0]


def compute_threshold(w: np.ndarray, method: str = "twn", per_channel: bool = False,
                      target_sparsity: float | None = None,
                      threshold: float | np.ndarray | None = None) -> np.ndarray:
    """Δ for `w` under `method` (see METHODS): float32 of shape () or [out]."""
    check_options(method, target_sparsity, threshold)
    w = check_weight(w, per_channel)
    if method == "fixed":
        return check_fixed_threshold(threshold, per_channel, w.shape[0])
    if method == "twn":
        return np.asarray(TWN_FACTOR * mean_abs(w, per_channel), dtype=np.float32)
    if method == "absmean":
        return np.asarray(mean_abs(w, per_channel) / 2, dtype=np.float32)
    if method == "optimal":
        d = optimal_rows(as_rows(np.abs(w.astype(np.float64)), per_channel))
        return d if per_channel else np.asarray(d[0], dtype=np.float32)
    rows = as_rows(np.abs(w), per_channel)
    k = sparsity_rank(float(target_sparsity), rows.shape[1])  # type: ignore[arg-type]
    if k == 0:
        d = np.zeros(rows.shape[0], dtype=np.float32)
    else:
        d = np.partition(rows, k - 1, axis=1)[:, k - 1]
    return d if per_channel else np.asarray(d[0], dtype=np.float32)


def optimal_rows(a: np.ndarray) -> np.ndarray:
    """The `optimal` Δ (float32 [rows]) of each row of magnitudes `a` (float64 [rows, n])."""
    if a.shape[1] == 0:
        return np.zeros(a.shape[0], dtype=np.float32)
    s = -np.sort(-a, axis=1)
    k = np.arange(1, s.shape[1] + 1, dtype=np.float64)
    gain = np.cumsum(s, axis=1) ** 2 / k
    nxt = np.concatenate([s[:, 1:], np.zeros((s.shape[0], 1))], axis=1)
    gain[:, :-1][s[:, :-1] == nxt[:, :-1]] = -1.0  # no cut inside a run of equal magnitudes
    best = np.argmax(gain, axis=1)
    return nxt[np.arange(s.shape[0]), best].astype(np.float32)


def sparsity_rank(target_sparsity: float, n: int) -> int:
    """How many of n weights the `sparsity` rule zeroes: round(target·n), half to even."""
    return int(round(target_sparsity * n))
