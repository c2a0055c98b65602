"""Gradient-health checks: non-finite loss or gradients, exploding and vanishing gradient norms.

Each check returns a message naming the parameter (so the layer) at fault, or None; the
trainer turns a message into a `TrainingHealthError` or a `TrainingHealthWarning` as
configured. A non-finite loss is traced to its source: first a parameter whose values are
already non-finite, else the first module (in execution order) whose output is non-finite.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from tdsl.errors import TdslError


class TrainingHealthError(TdslError):
    """Training stopped because the loss or the gradients went bad."""


class TrainingHealthWarning(UserWarning):
    """The same findings as `TrainingHealthError`, when the trainer is set to warn."""


def grad_norms(named_params: list[tuple[str, nn.Parameter]]) -> dict[str, float]:
    """L2 norm of each parameter's gradient (parameters without a gradient are left out)."""
    with_grad = [(n, p.grad) for n, p in named_params if p.grad is not None]
    if not with_grad:
        return {}
    values = torch.stack([g.detach().float().norm() for _, g in with_grad]).tolist()
    return {n: v for (n, _), v in zip(with_grad, values)}


def total_norm(norms: dict[str, float]) -> float:
    return math.sqrt(sum(v * v for v in norms.values()))


def nonfinite_grads(norms: dict[str, float]) -> str | None:
    bad = [n for n, v in norms.items() if not math.isfinite(v)]
    if not bad:
        return None
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    return f"non-finite gradient in parameter '{bad[0]}'{more}"


def exploding(norms: dict[str, float], total: float, limit: float) -> str | None:
    if limit <= 0 or not total > limit:
        return None
    worst = max(norms, key=lambda n: norms[n])
    return (f"exploding gradients: total norm {total:.4g} > {limit:.4g}; largest in parameter "
            f"'{worst}' (norm {norms[worst]:.4g})")


def vanishing(norms: dict[str, float], total: float, limit: float) -> str | None:
    if limit <= 0 or not norms or not total < limit:
        return None
    weakest = min(norms, key=lambda n: norms[n])
    return (f"vanishing gradients: total norm {total:.4g} < {limit:.4g}; smallest in parameter "
            f"'{weakest}' (norm {norms[weakest]:.4g})")


def locate_nonfinite(model: nn.Module, forward: Callable[[], torch.Tensor]) -> str:
    """Where a non-finite loss came from: a parameter, else the first module output."""
    for name, p in model.named_parameters():
        if not torch.isfinite(p.detach()).all():
            return f"parameter '{name}' holds non-finite values"
    found: list[str] = []

    def hook(name: str) -> Callable[..., None]:
        def fn(_m: nn.Module, _inp: object, out: object) -> None:
            if found:
                return
            outs = out if isinstance(out, (tuple, list)) else (out,)
            if any(isinstance(o, torch.Tensor) and o.is_floating_point()
                   and not torch.isfinite(o.detach()).all() for o in outs):
                found.append(name)
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            forward()
    finally:
        for h in handles:
            h.remove()
    if found:
        return f"first non-finite output at layer '{found[0]}'"
    return "no parameter or layer output is non-finite (the loss function or labels produced it)"
