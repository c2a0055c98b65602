"""Helpers that emitted torch source imports as `_rt`.

Kept small on purpose: anything here is a dependency of every emitted module, so the
emitted text stays readable and these helpers stay the only code it calls besides torch.
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch

from tdsl.errors import TdslError


def ternary(w: torch.Tensor) -> torch.Tensor:
    """Round-and-clamp to {-1, 0, 1}; the gradient passes straight through (STE).

    Integer tensors (trits stored as int8) are already ternary and only get clamped.
    """
    if not w.is_floating_point():
        return w.clamp(-1, 1)
    t = torch.clamp(torch.round(w), -1.0, 1.0)
    return w + (t - w).detach()


def random_ternary_(w: torch.Tensor) -> torch.Tensor:
    """Fill `w` in place with values drawn uniformly from {-1, 0, 1}."""
    with torch.no_grad():
        w.copy_(torch.randint(-1, 2, w.shape, device=w.device).to(w.dtype))
    return w


def lookup_spec(specs: Mapping[Hashable, int], key: tuple, layer: str, names: tuple[str, ...]) -> int:
    """The specialisation index of DSL layer `layer` for parameter values `key`.

    An emitted class can only build the parameter sets the IR was compiled for.
    """
    if key in specs:
        return specs[key]
    compiled = "; ".join(_format(names, k) for k in specs)
    raise TdslError(f"layer {layer} was compiled for {compiled}, not {_format(names, key)}")


def _format(names: tuple[str, ...], values: Hashable) -> str:
    assert isinstance(values, tuple), values
    return "(" + ", ".join(f"{n}={v!r}" for n, v in zip(names, values)) + ")"
