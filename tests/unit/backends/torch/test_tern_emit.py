"""The torch emitter on the ternary level: QAT forms after `ternarize` / `precision`,
frozen storage after `pack`, and the runtime helpers they call."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tdsl
from tdsl.backends.torch import runtime as rt
from tdsl.backends.torch.packing import unpack_torch
from tdsl.quant.torch_ste import ternarize_torch


def _alpha_t(w: torch.Tensor, method: str = "twn", per_channel: bool = True, **kw) -> torch.Tensor:
    trits, alpha, _ = ternarize_torch(w, method, per_channel, **kw)
    a = alpha.reshape(-1, *([1] * (w.ndim - 1))) if per_channel else alpha
    return trits.float() * a


def test_quantize_emits_ternarize_ste_and_linear_on_alpha_t() -> None:
    compiled = tdsl.compile("mlp", pipeline="shape-infer,ternarize")
    src = compiled.torch_source
    assert "weight_q = _rt.ternarize_ste(self.weight, method='twn', per_channel=True)" in src
    assert "F.linear(x, weight_q, self.bias)" in src
    assert "F.linear(x, _rt.fake_fp16(self.weight), self.bias)" in src
    net = compiled.to_torch().eval()
    x = torch.randn(2, 64)
    h = F.relu(F.linear(x, net.fc1.weight.half().float(), net.fc1.bias))
    h = F.relu(F.linear(h, _alpha_t(net.fc2.weight), net.fc2.bias))
    ref = F.linear(h, net.fc3.weight.half().float(), net.fc3.bias)
    torch.testing.assert_close(net(x), ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("options, kwargs", [
    ("threshold=sparsity sparsity=0.5 per-channel=false", dict(method="sparsity", per_channel=False, target_sparsity=0.5)),
    ("threshold=fixed delta=0.05", dict(method="fixed", per_channel=True, threshold=0.05)),
    ("threshold=absmean", dict(method="absmean", per_channel=True)),
])
def test_recorded_threshold_rule_is_emitted(options: str, kwargs: dict) -> None:
    net = tdsl.compile("mlp", pipeline=f"shape-infer,ternarize{{policy=all {options}}}").to_torch().eval()
    x = torch.randn(2, 64)
    method = kwargs.pop("method")
    per_channel = kwargs.pop("per_channel")
    w = _alpha_t(net.fc1.weight, method, per_channel, **kwargs)
    torch.testing.assert_close(net.fc1(x), F.linear(x, w, net.fc1.bias), rtol=0, atol=1e-6)


def test_gradients_reach_latent_weights_through_the_ste() -> None:
    net = tdsl.compile("lenet", pipeline="shape-infer,ternarize{policy=all}").to_torch().train()
    x = torch.randn(2, 1, 8, 8)
    net(x).square().sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
    assert net.conv2.weight.grad.abs().sum() > 0
    # Identity STE: the latent weight's gradient is the gradient w.r.t. α·T.
    layer = net.fc2
    inp = torch.randn(3, layer.weight.shape[1])
    wq = _alpha_t(layer.weight.detach()).requires_grad_()
    F.linear(inp, wq, layer.bias.detach()).sum().backward()
    layer.weight.grad = None
    layer(inp).sum().backward()
    torch.testing.assert_close(layer.weight.grad, wq.grad)


def test_fp16_fake_quant_and_int8_qat_are_trainable() -> None:
    for default in ("fp16", "int8"):
        net = tdsl.compile("mlp", pipeline=f"shape-infer,precision{{default={default}}}").to_torch().train()
        net(torch.randn(4, 64)).sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters()), default


def test_int8_product_is_integer_exact() -> None:
    torch.manual_seed(0)
    x, w, b = torch.randn(3, 2000), torch.randn(5, 2000), torch.randn(5)
    y = rt.int8_linear(x, w, b)
    wq, sw = rt.int8_weight(w)
    xq, sx = rt.int8_activation(x)
    exact = (xq.long() @ wq.long().T).double() * (sx.double() * sw.double())
    torch.testing.assert_close(y, (exact.float() + b), rtol=0, atol=1e-6)
    assert wq.abs().max() == 127 and xq.abs().max() == 127
    # The stored form gives the same result as the float weight it came from.
    torch.testing.assert_close(rt.int8_linear(x, wq, b, weight_scale=sw), y, rtol=0, atol=0)
    xc, wc = torch.randn(2, 3, 6, 6), torch.randn(4, 3, 3, 3)
    yc = rt.int8_conv2d(xc, wc, None, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)
    xq, sx = rt.int8_activation(xc)
    wq, sw = rt.int8_weight(wc)
    ref = F.conv2d(xq.double(), wq.double(), padding=1) * sx.double() * sw.double().reshape(1, -1, 1, 1)
    torch.testing.assert_close(yc, ref.float(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("fmt", ["2bit", "base3"])
def test_packed_module_stores_uint8_trits_and_scales(fmt: str) -> None:
    compiled = tdsl.compile("lenet", pipeline=f"shape-infer,ternarize,pack{{format={fmt}}}")
    src = compiled.torch_source
    assert "self.register_buffer('weight_packed'" in src and "_rt.unpack_ternary(self.weight_packed" in src
    assert "self.register_buffer('weight', torch.empty((6, 1, 5, 5), dtype=torch.float16))" in src
    net = compiled.to_torch().eval()
    sd = net.state_dict()
    assert sd["conv2.weight_packed"].dtype == torch.uint8 and "conv2.weight" not in sd
    assert sd["conv2.weight_scale"].shape == (16,)
    assert sd["conv1.weight"].dtype == torch.float16 and sd["fc3.weight"].dtype == torch.float16
    # The initial packed bytes are all-zero trits.
    assert not unpack_torch(sd["conv2.weight_packed"], (16, 6, 5, 5), fmt).any()
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_frozen_int8_storage_names() -> None:
    from tdsl.backends.torch.emit import emit_module
    from tdsl.backends.torch.loader import instantiate

    compiled = tdsl.compile("mlp", pipeline="shape-infer,precision{default=int8}")
    source = emit_module(compiled.module, frozen=True)
    assert "_rt.int8_linear(x, self.weight, self.bias, weight_scale=self.weight_scale)" in source
    sd = instantiate(compiled.module, source).state_dict()
    assert sd["fc1.weight"].dtype == torch.int8 and sd["fc1.weight_scale"].dtype == torch.float32
    assert sd["fc1.weight_scale"].shape == (128,)


def test_cloned_precision_variants_get_their_own_classes() -> None:
    compiled = tdsl.compile("resnet18", params=dict(num_classes=10, cifar_stem=True, image_size=32),
                            pipeline='shape-infer,ternarize{override="layer1.0.conv1.weight=fp16 layer4.*=int8"}')
    src = compiled.torch_source
    for cls in ("Conv2d_fp16", "Conv2d_ternary", "Conv2d_int8", "BasicBlock", "BasicBlock_2"):
        assert f"class {cls}(nn.Module):" in src
    net = compiled.to_torch().eval()
    assert type(net.layer1[0]).__name__ != type(net.layer1[1]).__name__
    assert type(net.layer1[0].conv1).__name__ == "Conv2d_fp16"
    assert type(net.layer4[0].conv1).__name__ == "Conv2d_int8"
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
