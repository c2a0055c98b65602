"""Weights that keep a signal alive through deep zoo models, for backend comparisons.

A freshly initialised model (Kaiming-uniform with a = sqrt(5), BN statistics 0 / 1) shrinks
activations by about 3x per layer, so after twenty layers every image gives the same
logits and a comparison would only check the last bias. Here conv / linear weights are
He-normal (std sqrt(2 / fan_in)) and batch norms get non-trivial statistics and affine
terms, so the outputs depend on the input and a wrong kernel shows up.
"""
from __future__ import annotations

import math

import torch

import tdsl


def lively_state_dict(model: str, params: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """The fp32 state dict of `model` with He-normal weights and random BN statistics."""
    net = tdsl.compile(model, params=params, pipeline="shape-infer").to_torch()
    g = torch.Generator().manual_seed(seed)
    sd = net.state_dict()
    bn = {k.rsplit(".", 1)[0] for k in sd if k.endswith("running_mean")}
    out = {}
    for key, v in sd.items():
        owner, name = key.rsplit(".", 1) if "." in key else ("", key)
        if owner in bn:
            out[key] = {"running_mean": 0.1 * torch.randn(v.shape, generator=g),
                        "running_var": 0.8 + 0.4 * torch.rand(v.shape, generator=g),
                        "weight": 0.8 + 0.4 * torch.rand(v.shape, generator=g),
                        "bias": 0.1 * torch.randn(v.shape, generator=g)}.get(name, v)
        elif v.ndim >= 2:
            out[key] = torch.randn(v.shape, generator=g) * math.sqrt(2.0 / v[0].numel())
        else:
            out[key] = 0.1 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
    return out
