"""The model zoo compiled by name through the public API and run as torch modules.

Parameter counts are the published ones (torchvision's ResNet-18 and MobileNetV2, and
the usual CIFAR ResNet-18); state-dict names and shapes are checked against
torchvision's layout, built here by arithmetic. Images are kept small so that each
test runs in seconds on two CPU cores.
"""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

import tdsl
from tdsl import TdslError


@functools.lru_cache(maxsize=None)
def _compiled(name: str, params: tuple[tuple[str, object], ...]):
    return tdsl.compile(name, params=dict(params))


def _net(name: str, **params: object) -> torch.nn.Module:
    """A fresh torch module for zoo model `name` (the compilation is shared)."""
    torch.manual_seed(0)
    return _compiled(name, tuple(sorted(params.items()))).to_torch()


def _n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _check_train_step(net: torch.nn.Module, x: torch.Tensor, num_classes: int,
                      first_weight: str) -> None:
    """Forward and backward in training mode, then a forward in evaluation mode."""
    net.train()
    out = net(x)
    assert tuple(out.shape) == (x.shape[0], num_classes)
    assert torch.isfinite(out).all()
    target = torch.arange(x.shape[0]) % num_classes
    F.cross_entropy(out, target).backward()
    grad = dict(net.named_parameters())[first_weight].grad
    assert grad is not None
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0
    net.eval()
    with torch.no_grad():
        out = net(x)
    assert tuple(out.shape) == (x.shape[0], num_classes)
    assert torch.isfinite(out).all()


# ---------------------------------------------------------------- parameter counts
@pytest.mark.parametrize(("name", "params", "count"), [
    ("resnet18", {"num_classes": 1000}, 11_689_512),
    ("resnet18", {"num_classes": 10, "cifar_stem": True}, 11_173_962),
    ("mobilenetv2", {"num_classes": 1000, "width_mult": 1.0}, 3_504_872),
    ("mobilenetv2", {"num_classes": 1000, "width_mult": 0.5}, 1_968_680),
])
def test_parameter_count_matches_the_published_model(name: str, params: dict, count: int) -> None:
    assert _n_params(_net(name, **params)) == count


def test_defaults_are_the_imagenet_models() -> None:
    assert _n_params(_net("resnet18")) == 11_689_512
    assert _n_params(_net("mobilenetv2")) == 3_504_872


# ---------------------------------------------------------------- state-dict layout
def _bn_shapes(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")}


def _torchvision_resnet18_shapes(num_classes: int, cifar_stem: bool) -> dict[str, tuple[int, ...]]:
    """torchvision's resnet18 state dict (less num_batches_tracked): names and shapes."""
    k = 3 if cifar_stem else 7
    shapes = {"conv1.weight": (64, 3, k, k), **_bn_shapes("bn1", 64)}
    for stage, (cin, cout, stride) in enumerate(
            [(64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)], start=1):
        for block in range(2):
            p = f"layer{stage}.{block}"
            block_cin = cin if block == 0 else cout
            shapes[f"{p}.conv1.weight"] = (cout, block_cin, 3, 3)
            shapes.update(_bn_shapes(f"{p}.bn1", cout))
            shapes[f"{p}.conv2.weight"] = (cout, cout, 3, 3)
            shapes.update(_bn_shapes(f"{p}.bn2", cout))
            if block == 0 and (stride != 1 or cin != cout):
                shapes[f"{p}.downsample.0.weight"] = (cout, cin, 1, 1)
                shapes.update(_bn_shapes(f"{p}.downsample.1", cout))
    shapes["fc.weight"] = (num_classes, 512)
    shapes["fc.bias"] = (num_classes,)
    return shapes


@pytest.mark.parametrize("cifar_stem", [False, True])
def test_resnet18_state_dict_is_laid_out_like_torchvision(cifar_stem: bool) -> None:
    net = _net("resnet18", num_classes=10, cifar_stem=cifar_stem)
    got = {k: tuple(v.shape) for k, v in net.state_dict().items()
           if not k.endswith("num_batches_tracked")}
    assert got == _torchvision_resnet18_shapes(10, cifar_stem)


def test_batch_norm_statistics_are_buffers_not_parameters() -> None:
    net = _net("resnet18", num_classes=10, cifar_stem=True)
    params = dict(net.named_parameters())
    buffers = dict(net.named_buffers())
    assert "bn1.weight" in params and "bn1.bias" in params
    assert "bn1.running_mean" in buffers and "bn1.running_var" in buffers
    assert "bn1.running_mean" not in params
    assert torch.equal(buffers["bn1.running_var"], torch.ones(64))


def test_mobilenetv2_layout() -> None:
    shapes = {k: tuple(v.shape) for k, v in _net("mobilenetv2").state_dict().items()}
    assert shapes["features.0.conv.weight"] == (32, 3, 3, 3)           # stem, stride 2
    assert shapes["features.1.conv.0.conv.weight"] == (32, 1, 3, 3)    # t=1: depthwise first
    assert shapes["features.1.conv.1.weight"] == (16, 32, 1, 1)        # linear bottleneck
    assert shapes["features.2.conv.0.conv.weight"] == (96, 16, 1, 1)   # t=6: expansion
    assert shapes["features.2.conv.1.conv.weight"] == (96, 1, 3, 3)
    assert shapes["features.17.conv.2.weight"] == (320, 960, 1, 1)
    assert shapes["features.18.conv.weight"] == (1280, 320, 1, 1)
    assert "features.19.conv.weight" not in shapes
    assert shapes["classifier.1.weight"] == (1000, 1280)


# ---------------------------------------------------------------- forward and backward
@pytest.mark.parametrize("batch", [1, 3])
def test_resnet18_cifar_stem_trains_on_32x32(batch: int) -> None:
    net = _net("resnet18", num_classes=10, cifar_stem=True, image_size=32)
    _check_train_step(net, torch.randn(batch, 3, 32, 32), 10, "conv1.weight")


@pytest.mark.parametrize("batch", [1, 3])
def test_resnet18_imagenet_stem_trains_on_64x64(batch: int) -> None:
    net = _net("resnet18", num_classes=100, image_size=64)
    _check_train_step(net, torch.randn(batch, 3, 64, 64), 100, "conv1.weight")


@pytest.mark.parametrize("width_mult", [0.5, 1.0])
@pytest.mark.parametrize("batch", [1, 3])
def test_mobilenetv2_trains_on_64x64(width_mult: float, batch: int) -> None:
    net = _net("mobilenetv2", num_classes=10, width_mult=width_mult, image_size=64)
    _check_train_step(net, torch.randn(batch, 3, 64, 64), 10, "features.0.conv.weight")


@pytest.mark.parametrize("batch", [1, 3])
def test_lenet_trains_on_8x8_digits_by_default(batch: int) -> None:
    net = _net("lenet")
    _check_train_step(net, torch.randn(batch, 1, 8, 8), 10, "conv1.weight")


def test_lenet_trains_on_28x28() -> None:
    net = _net("lenet", image_size=28)
    assert tuple(dict(net.named_parameters())["fc1.weight"].shape) == (120, 16 * 7 * 7)
    _check_train_step(net, torch.randn(3, 1, 28, 28), 10, "conv1.weight")


@pytest.mark.parametrize("batch", [1, 3])
def test_mlp_trains_on_flattened_8x8_digits_by_default(batch: int) -> None:
    net = _net("mlp")
    assert _n_params(net) == 64 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10
    _check_train_step(net, torch.randn(batch, 64), 10, "fc1.weight")


# ---------------------------------------------------------------- errors
def test_unknown_zoo_name_suggests_the_closest() -> None:
    with pytest.raises(TdslError, match="did you mean 'resnet18'"):
        tdsl.compile("resnet19")
