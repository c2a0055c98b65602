"""Regularisers on latent (full-precision) weights for ternary training.

`ternary_l2` pulls each latent weight toward the nearest point of its ternary grid
{-α, 0, +α}: penalty = ½ Σ ‖W − α·T‖², where T and α are TWN's (Li and Liu, "Ternary Weight
Networks", 2016): Δ = 0.7·mean|W|, T = sign(W)·[|W| > Δ], α = mean |W| over T ≠ 0. The grid
point is treated as a constant (detached), so the gradient is simply W − α·T: it shrinks the
gap that the straight-through estimator ignores, making the ternary weights the forward pass
sees closer to the latent ones. Only tensors with two or more dimensions (linear and conv
weights) are regularised; biases and normalisation parameters are not ternarised.
"""
from __future__ import annotations

import torch
from torch import nn

TWN_DELTA = 0.7


def nearest_ternary(w: torch.Tensor) -> torch.Tensor:
    """α·T for a weight tensor with TWN's per-tensor threshold and scale (no gradient)."""
    w = w.detach().float()
    delta = TWN_DELTA * w.abs().mean()
    mask = w.abs() > delta
    kept = mask.sum()
    alpha = (w.abs() * mask).sum() / kept.clamp(min=1)
    return torch.sign(w) * mask * alpha


def ternary_l2(model: nn.Module) -> torch.Tensor:
    """½ Σ ‖W − α·T‖² over the model's weights with ndim >= 2 (a 0-dim tensor)."""
    total = torch.zeros(())
    for p in model.parameters():
        if p.ndim >= 2 and p.requires_grad:
            total = total.to(p.device) + 0.5 * (p.float() - nearest_ternary(p)).pow(2).sum()
    return total
