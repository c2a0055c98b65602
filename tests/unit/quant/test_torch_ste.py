"""torch ternarisation: agreement with numpy on every trit, straight-through gradients,
and TTQ's learned-scale gradients."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tdsl.errors import TdslError
from tdsl.quant import METHODS, ternarize
from tdsl.quant.torch_ste import (LearnedScaleTernary, clipped_ste, identity_ste, ternarize_ste,
                                  ternarize_torch, threshold_torch)

OPTIONS = {"twn": {}, "absmean": {}, "fixed": {"threshold": 0.4},
           "sparsity": {"target_sparsity": 0.37}, "optimal": {}}
SHAPES = [(9,), (5, 3), (64, 300), (16, 8, 3, 3), (3, 5, 1, 7), (0, 4)]


def weights(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    g = np.random.default_rng(seed)
    return (g.standard_t(3, shape) * g.uniform(0.1, 2.0, shape[:1] + (1,) * (len(shape) - 1))).astype(np.float32)


@pytest.mark.parametrize("shape,per_channel",
                         [(s, pc) for s in SHAPES for pc in (False, True) if len(s) > 1 or not pc])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("scale", ["mean_nonzero", "absmean"])
def test_torch_matches_numpy_bit_for_bit(shape, per_channel, method, scale):
    w = weights(shape, seed=len(shape))
    ref = ternarize(w, method, per_channel, scale=scale, **OPTIONS[method])
    trits, alpha, delta = ternarize_torch(torch.from_numpy(w), method, per_channel, scale=scale,
                                          **OPTIONS[method])
    assert trits.dtype == torch.int8 and alpha.dtype == delta.dtype == torch.float32
    np.testing.assert_array_equal(trits.numpy(), ref.trits)
    np.testing.assert_array_equal(delta.numpy(), ref.threshold)
    np.testing.assert_allclose(alpha.numpy(), ref.scale, rtol=1e-6)
    assert alpha.shape == ref.scale.shape


def test_fixed_threshold_accepts_a_tensor():
    w = torch.from_numpy(weights((4, 10), 1))
    d = torch.tensor([0.1, 0.2, 0.3, 0.4])
    np.testing.assert_array_equal(threshold_torch(w, "fixed", True, threshold=d).numpy(), d.numpy())


def test_identity_ste_passes_the_upstream_gradient_exactly():
    w = torch.randn(6, 7, requires_grad=True)
    upstream = torch.randn(6, 7)
    out = ternarize_ste(w, "twn", per_channel=True)
    out.backward(upstream)
    assert torch.equal(w.grad, upstream)
    ref = ternarize(w.detach().numpy(), "twn", per_channel=True).dequantize()
    np.testing.assert_array_equal(out.detach().numpy(), ref)


@pytest.mark.parametrize("clip", [1.0, 0.5])
def test_clipped_ste_zeroes_the_gradient_outside_the_clip(clip):
    w = torch.tensor([-2.0, -1.0, -0.3, 0.0, 0.4, 0.9, 1.5], requires_grad=True)
    upstream = torch.arange(1.0, 8.0)
    ternarize_ste(w, ste="clipped", clip=clip).backward(upstream)
    inside = w.detach().abs() <= clip
    assert torch.equal(w.grad, upstream * inside)
    assert bool((w.grad[~inside] == 0).all()) and bool((w.grad[inside] != 0).all())


def test_ste_functions_return_q_and_route_gradient_to_w():
    w = torch.tensor([0.2, 3.0], requires_grad=True)
    q = torch.tensor([1.0, -1.0])
    assert torch.equal(identity_ste(w, q), q)
    clipped_ste(w, q * 2, clip=1.0).sum().backward()
    assert torch.equal(w.grad, torch.tensor([1.0, 0.0]))


def test_ste_trains_a_latent_weight_towards_a_target():
    torch.manual_seed(0)
    target = ternarize(weights((8, 16), 2), "twn").dequantize()
    w = torch.randn(8, 16, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    losses = []
    for _ in range(50):
        loss = ((ternarize_ste(w) - torch.from_numpy(target)) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.25 * losses[0]


@pytest.mark.parametrize("channels", [None, 4])
def test_ttq_scales_and_latent_weight_get_the_paper_gradients(channels):
    torch.manual_seed(1)
    w = torch.randn(4, 5, requires_grad=True)
    ttq = LearnedScaleTernary(channels, init_scale=1.0)
    with torch.no_grad():
        ttq.wp.mul_(2.0)
        ttq.wn.mul_(0.5)
    upstream = torch.randn(4, 5)
    out = ttq(w)
    out.backward(upstream)
    d = threshold_torch(w.detach(), "twn", channels is not None)
    d = d[:, None] if channels else d
    pos, neg = w.detach() > d, w.detach() < -d
    assert torch.equal(out.detach(), 2.0 * pos - 0.5 * neg)
    dims = (1,) if channels else (0, 1)
    torch.testing.assert_close(ttq.wp.grad, (upstream * pos).sum(dim=dims))
    torch.testing.assert_close(ttq.wn.grad, -(upstream * neg).sum(dim=dims))
    expected_w = upstream * (2.0 * pos + 0.5 * neg + ~(pos | neg))
    torch.testing.assert_close(w.grad, expected_w)
    assert bool((ttq.wp.grad != 0).all()) and bool((ttq.wn.grad != 0).all())


def test_ttq_init_scales_from_the_weight():
    w = torch.tensor([[3.0, -1.0, 0.01, 1.0], [-4.0, -2.0, 0.0, 6.0]])
    ttq = LearnedScaleTernary(2, method="fixed", threshold=0.5)
    ttq.init_scales(w)
    torch.testing.assert_close(ttq.wp.data, torch.tensor([2.0, 6.0]))
    torch.testing.assert_close(ttq.wn.data, torch.tensor([1.0, 3.0]))


@pytest.mark.parametrize("call,message", [
    (lambda: ternarize_ste(torch.ones(3), ste="sign"), "unknown straight-through estimator 'sign'"),
    (lambda: ternarize_ste(torch.ones(3), ste="clipped", clip=0.0), "STE clip bound must be positive"),
    (lambda: ternarize_torch(torch.tensor([1.0, float("nan")])), "weights must be finite, found 1"),
    (lambda: ternarize_torch(torch.ones(3), "ttq"), "unknown ternary threshold method 'ttq'"),
    (lambda: ternarize_torch(torch.ones(3), scale="max"), "unknown ternary scale 'max'"),
    (lambda: ternarize_torch(torch.ones(3), per_channel=True), "per-channel quantisation needs a weight of rank >= 2"),
    (lambda: threshold_torch(torch.ones(3), "sparsity", target_sparsity=1.5), "target_sparsity must be in [0, 1)"),
    (lambda: LearnedScaleTernary(4)(torch.ones(3, 2)), "LearnedScaleTernary has 4 channels but the weight has shape (3, 2)"),
    (lambda: LearnedScaleTernary(0), "LearnedScaleTernary channels must be positive"),
])
def test_invalid_inputs_raise_tdsl_error(call, message):
    with pytest.raises(TdslError) as e:
        call()
    assert message in e.value.message
