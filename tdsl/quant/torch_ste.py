"""Ternarisation for training in torch: the numpy rules of `tdsl.quant` on tensors,
straight-through estimators, and TTQ's learned scales.

`ternarize_torch` follows `tdsl.quant.ternarize` step by step (float64 reductions, Δ
rounded to float32, zero iff |w| <= Δ) so that a model trained here and frozen by numpy
or the runtime keeps every trit; tests check the two agree bit for bit.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tdsl.errors import TdslError
from tdsl.quant.ternary import SCALES
from tdsl.quant.thresholds import TWN_FACTOR, check_fixed_threshold, check_options, sparsity_rank

STES = ("identity", "clipped")


def threshold_torch(w: torch.Tensor, method: str = "twn", per_channel: bool = False,
                    target_sparsity: float | None = None,
                    threshold: float | np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
    """Δ as float32 of shape () or [out] on w's device; the rules of `tdsl.quant.thresholds`."""
    check_options(method, target_sparsity, threshold)
    w = _check_weight(w, per_channel)
    if method == "fixed":
        if isinstance(threshold, torch.Tensor):
            threshold = threshold.detach().cpu().numpy()
        d = check_fixed_threshold(threshold, per_channel, w.shape[0])
        return torch.from_numpy(d).to(w.device)
    if method in ("twn", "absmean"):
        m = _mean_abs(w, per_channel)
        return (TWN_FACTOR * m if method == "twn" else m / 2).to(torch.float32)
    if method == "optimal":
        d = _optimal_rows(_rows(w.detach().abs().double(), per_channel))
        return d if per_channel else d[0]
    rows = _rows(w.detach().abs(), per_channel)
    k = sparsity_rank(float(target_sparsity), rows.shape[1])  # type: ignore[arg-type]
    if k == 0:
        d = torch.zeros(rows.shape[0], dtype=torch.float32, device=w.device)
    else:
        d = torch.kthvalue(rows, k, dim=1).values
    return d if per_channel else d[0]


def ternarize_torch(w: torch.Tensor, method: str = "twn", per_channel: bool = False,
                    target_sparsity: float | None = None,
                    threshold: float | np.ndarray | torch.Tensor | None = None,
                    scale: str = "mean_nonzero") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(trits int8, α float32, Δ float32) of `w`, as `tdsl.quant.ternarize` computes them
    with deterministic rounding. No gradient flows; see `ternarize_ste` for training."""
    if scale not in SCALES:
        raise TdslError(f"unknown ternary scale '{scale}'; valid scales are {', '.join(SCALES)}")
    with torch.no_grad():
        delta = threshold_torch(w, method, per_channel, target_sparsity, threshold)
        w = _check_weight(w, per_channel)
        trits = (torch.sign(w) * (w.abs() > _bcast(delta, w.ndim))).to(torch.int8)
        if scale == "absmean":
            alpha = _mean_abs(w, per_channel).to(torch.float32)
        else:
            kept = _rows(w.abs().double() * (trits != 0), per_channel)
            count = _rows(trits != 0, per_channel).sum(dim=1)
            total = kept.sum(dim=1)
            alpha = torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))
            alpha = alpha.to(torch.float32)
            alpha = alpha if per_channel else alpha[0]
    return trits, alpha, delta


class IdentitySTE(torch.autograd.Function):
    """Forward: the quantised `q`. Backward: the upstream gradient to `w`, unchanged."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, q: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return q.detach().clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad, None


class ClippedSTE(torch.autograd.Function):
    """Forward: `q`. Backward: the upstream gradient where |w| <= clip, zero elsewhere
    (the hard-tanh STE: a latent weight far outside the quantiser's range stops moving)."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, q: torch.Tensor, clip: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(w.detach().abs() <= clip)
        return q.detach().clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None


def identity_ste(w: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return IdentitySTE.apply(w, q)


def clipped_ste(w: torch.Tensor, q: torch.Tensor, clip: float = 1.0) -> torch.Tensor:
    if not clip > 0:
        raise TdslError(f"STE clip bound must be positive, got {clip}")
    return ClippedSTE.apply(w, q, float(clip))


def ternarize_ste(w: torch.Tensor, method: str = "twn", per_channel: bool = False,
                  target_sparsity: float | None = None,
                  threshold: float | np.ndarray | torch.Tensor | None = None,
                  scale: str = "mean_nonzero", ste: str = "identity",
                  clip: float = 1.0) -> torch.Tensor:
    """α·T in w's dtype; the backward pass treats α and T as constants and hands the
    gradient to the latent `w` through the chosen STE (`clip` is used by `clipped` only)."""
    if ste not in STES:
        raise TdslError(f"unknown straight-through estimator '{ste}'; valid ones are {', '.join(STES)}")
    trits, alpha, _ = ternarize_torch(w, method, per_channel, target_sparsity, threshold, scale)
    q = (trits.to(torch.float32) * _bcast(alpha, w.ndim)).to(w.dtype)
    return identity_ste(w, q) if ste == "identity" else clipped_ste(w, q, clip)


class TTQFunction(torch.autograd.Function):
    """w_t = Wp where w > Δ, -Wn where w < -Δ, else 0 (Zhu et al. 2017, eqs. 6-8)."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, wp: torch.Tensor, wn: torch.Tensor,  # type: ignore[override]
                delta: torch.Tensor) -> torch.Tensor:
        d = _bcast(delta, w.ndim)
        pos, neg = w > d, w < -d
        ctx.save_for_backward(pos, neg, wp, wn)
        return (pos * _bcast(wp, w.ndim) - neg * _bcast(wn, w.ndim)).to(w.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        pos, neg, wp, wn = ctx.saved_tensors
        per_channel = wp.ndim == 1
        grad_wp = _rows(grad * pos, per_channel).sum(dim=1)
        grad_wn = -_rows(grad * neg, per_channel).sum(dim=1)
        if not per_channel:
            grad_wp, grad_wn = grad_wp[0], grad_wn[0]
        factor = pos * _bcast(wp, grad.ndim) + neg * _bcast(wn, grad.ndim) + ~(pos | neg)
        return grad * factor, grad_wp, grad_wn, None


class LearnedScaleTernary(nn.Module):
    """Trained ternary quantisation (TTQ, Zhu et al. 2017): learnable scales Wp for the
    positive and Wn for the negative trits, per tensor or per output channel.

    `forward(w)` gives Wp·[w > Δ] − Wn·[w < −Δ] with Δ from the `method` rule (the paper
    uses Δ = 0.05·max|w|; pass method='fixed' for that). Gradients follow the paper:
    ∂L/∂Wp = Σ over positive trits of ∂L/∂w_t; ∂L/∂Wn = −Σ over negative trits (eq. 7
    prints it without the minus, which the chain rule through −Wn needs); the latent
    weight gets ∂L/∂w_t scaled by Wp, 1 or Wn in the positive, zero and negative regions
    (eq. 8).
    """

    def __init__(self, channels: int | None = None, method: str = "twn",
                 target_sparsity: float | None = None,
                 threshold: float | np.ndarray | None = None, init_scale: float = 1.0):
        super().__init__()
        check_options(method, target_sparsity, threshold)
        if channels is not None and channels <= 0:
            raise TdslError(f"LearnedScaleTernary channels must be positive, got {channels}")
        shape = (channels,) if channels is not None else ()
        self.channels = channels
        self.method, self.target_sparsity, self.threshold = method, target_sparsity, threshold
        self.wp = nn.Parameter(torch.full(shape, float(init_scale)))
        self.wn = nn.Parameter(torch.full(shape, float(init_scale)))

    def delta(self, w: torch.Tensor) -> torch.Tensor:
        if self.channels is not None and (w.ndim < 2 or w.shape[0] != self.channels):
            raise TdslError(f"LearnedScaleTernary has {self.channels} channels but the weight "
                            f"has shape {tuple(w.shape)}")
        return threshold_torch(w.detach(), self.method, self.channels is not None,
                               self.target_sparsity, self.threshold)

    @torch.no_grad()
    def init_scales(self, w: torch.Tensor) -> None:
        """Set Wp and Wn to the mean |w| of the weights that become +1 and −1 (0 if none)."""
        d = _bcast(self.delta(w), w.ndim)
        per_channel = self.channels is not None
        for param, mask in ((self.wp, w > d), (self.wn, w < -d)):
            total = _rows(w.abs().double() * mask, per_channel).sum(dim=1)
            count = _rows(mask, per_channel).sum(dim=1).clamp(min=1)
            value = (total / count).to(param.dtype)
            param.copy_(value if per_channel else value[0])

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return TTQFunction.apply(w, self.wp, self.wn, self.delta(w))


def _check_weight(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    if not isinstance(w, torch.Tensor):
        raise TdslError(f"weights must be a torch.Tensor, got {type(w).__name__}")
    if w.ndim == 0:
        raise TdslError("weights must have at least one dimension, got a scalar")
    if per_channel and w.ndim < 2:
        raise TdslError(f"per-channel quantisation needs a weight of rank >= 2 "
                        f"([out, in, ...]), got shape {tuple(w.shape)}")
    if w.is_complex() or w.dtype == torch.bool:
        raise TdslError(f"weights must be a real numeric tensor, got dtype {w.dtype}")
    w = w.detach().to(torch.float32)
    if not bool(torch.isfinite(w).all()):
        bad = int((~torch.isfinite(w)).sum())
        raise TdslError(f"weights must be finite, found {bad} NaN or infinite value(s)")
    return w


def _rows(a: torch.Tensor, per_channel: bool) -> torch.Tensor:
    if per_channel:
        return a.reshape(a.shape[0], int(np.prod(a.shape[1:])))
    return a.reshape(1, a.numel())


def _mean_abs(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    rows = _rows(w.abs().double(), per_channel)
    n = rows.shape[1]
    m = rows.sum(dim=1) / n if n else torch.zeros(rows.shape[0], dtype=torch.float64, device=w.device)
    return m if per_channel else m[0]


def _optimal_rows(a: torch.Tensor) -> torch.Tensor:
    """`tdsl.quant.thresholds.optimal_rows` on tensors (float64 [rows, n] -> float32 [rows])."""
    if a.shape[1] == 0:
        return torch.zeros(a.shape[0], dtype=torch.float32, device=a.device)
    s = torch.sort(a, dim=1, descending=True).values
    k = torch.arange(1, s.shape[1] + 1, dtype=torch.float64, device=a.device)
    gain = torch.cumsum(s, dim=1) ** 2 / k
    nxt = torch.cat([s[:, 1:], torch.zeros(s.shape[0], 1, dtype=s.dtype, device=a.device)], dim=1)
    gain[:, :-1][s[:, :-1] == nxt[:, :-1]] = -1.0  # no cut inside a run of equal magnitudes
    best = torch.argmax(gain, dim=1)
    return nxt.gather(1, best[:, None])[:, 0].to(torch.float32)


def _bcast(v: torch.Tensor, ndim: int) -> torch.Tensor:
    return v.reshape(v.shape + (1,) * (ndim - 1)) if v.ndim == 1 else v
