"""Ternarisation W ≈ α·T, T ∈ {-1, 0, +1}, in numpy (the definition the torch port and the
runtime are tested against; never imports torch).

Scales (`scale=`):
- `mean_nonzero`: α = mean |W| over the weights kept non-zero, the TWN optimum of
  ‖W − α·T‖² for a fixed T; an all-zero tensor or row gets α = 0, not NaN.
- `absmean`: α = γ = mean |W| over all weights (BitNet b1.58).

Rounding (`rounding=`):
- `deterministic`: t = sign(w) where |w| > Δ, else 0.
- `stochastic`: α is taken from the deterministic rule above, then each t is drawn
  independently: t = sign(w) with probability min(|w|/α, 1), else 0. For |w| <= α this is
  unbiased, E[α·t] = w; weights beyond α are clipped to ±α (no value in {-α, 0, α} can be
  unbiased for them), so E[α·T] = clip(W, -α, α). Δ is still reported but does not decide
  the trits, so the `sparsity` rule's target only holds for deterministic rounding.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tdsl.errors import TdslError
from tdsl.quant.thresholds import as_rows, check_weight, compute_threshold, mean_abs

SCALES = ("mean_nonzero", "absmean")
ROUNDINGS = ("deterministic", "stochastic")


@dataclass(frozen=True)
class TernaryWeight:
    """Trits and scales of one weight; per channel when `scale` has shape [out]."""

    trits: np.ndarray
    """int8, the weight's shape, values in {-1, 0, 1}."""
    scale: np.ndarray
    """float32, shape () per tensor or [out] per output channel (axis 0)."""
    threshold: np.ndarray
    """float32 Δ, same shape as `scale`."""

    @property
    def per_channel(self) -> bool:
        return self.scale.ndim == 1

    @property
    def sparsity(self) -> float:
        """Fraction of zero trits; 0.0 for an empty weight."""
        n = self.trits.size
        return float(n - np.count_nonzero(self.trits)) / n if n else 0.0

    def dequantize(self) -> np.ndarray:
        """α·T as float32 in the weight's shape."""
        return (self.trits.astype(np.float32) * broadcast_rows(self.scale, self.trits.ndim))


def broadcast_rows(v: np.ndarray, ndim: int) -> np.ndarray:
    """Reshape a per-channel vector [out] to [out, 1, ...] to broadcast against a weight."""
    return v.reshape(v.shape + (1,) * (ndim - 1)) if v.ndim == 1 else v


def ternarize(w: np.ndarray, method: str = "twn", per_channel: bool = False,
              target_sparsity: float | None = None,
              threshold: float | np.ndarray | None = None,
              scale: str = "mean_nonzero", rounding: str = "deterministic",
              rng: np.random.Generator | int | None = None) -> TernaryWeight:
    """Quantise `w` to α·T with Δ from `method` (see `tdsl.quant.thresholds.METHODS`).

    `rng` (a Generator or an integer seed) drives stochastic rounding; the same seed gives
    the same trits. It is unused by deterministic rounding.
    """
    if scale not in SCALES:
        raise TdslError(f"unknown ternary scale '{scale}'; valid scales are {', '.join(SCALES)}")
    if rounding not in ROUNDINGS:
        raise TdslError(f"unknown rounding '{rounding}'; valid roundings are {', '.join(ROUNDINGS)}")
    delta = compute_threshold(w, method, per_channel, target_sparsity, threshold)
    w = check_weight(w, per_channel)
    d = broadcast_rows(delta, w.ndim)
    trits = (np.sign(w) * (np.abs(w) > d)).astype(np.int8)
    alpha = compute_scale(w, trits, scale, per_channel)
    if rounding == "stochastic":
        trits = stochastic_trits(w, alpha, np.random.default_rng(rng))
    return TernaryWeight(trits=trits, scale=alpha, threshold=delta)


def compute_scale(w: np.ndarray, trits: np.ndarray, scale: str, per_channel: bool) -> np.ndarray:
    """α (float32, shape () or [out]) for float32 `w` and its deterministic trits."""
    if scale == "absmean":
        return np.asarray(mean_abs(w, per_channel), dtype=np.float32)
    kept = np.abs(w.astype(np.float64)) * (trits != 0)
    total = as_rows(kept, per_channel).sum(axis=1)
    count = np.count_nonzero(as_rows(trits, per_channel), axis=1)
    alpha = np.where(count > 0, total / np.maximum(count, 1), 0.0).astype(np.float32)
    return alpha if per_channel else np.asarray(alpha[0], dtype=np.float32)


def stochastic_trits(w: np.ndarray, alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """t = sign(w) with probability min(|w|/α, 1), else 0; α = 0 gives 0."""
    a = broadcast_rows(alpha, w.ndim).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(a > 0, np.minimum(np.abs(w) / a, 1.0), 0.0)
    keep = rng.random(w.shape) < p
    return (np.sign(w) * keep).astype(np.int8)
