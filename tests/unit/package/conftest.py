"""Shared builders for the package tests: small zoo models quantised once per session."""
from __future__ import annotations

import pytest

ZOO_CASES = {
    "resnet18": {"num_classes": 10, "cifar_stem": True, "image_size": 32},
    "mobilenetv2": {"num_classes": 10, "width_mult": 0.5, "image_size": 32},
    "mlp": {},
    "lenet": {},
}
"""Zoo model -> parameters that keep it small (32x32 inputs for the image models)."""

INPUT_SHAPES = {"resnet18": (2, 3, 32, 32), "mobilenetv2": (2, 3, 32, 32), "mlp": (3, 64), "lenet": (3, 1, 8, 8)}


@pytest.fixture(scope="session")
def lenet_ternary():
    import torch

    import tdsl

    torch.manual_seed(0)
    return tdsl.quantize("lenet", precision="ternary")


@pytest.fixture(scope="session")
def lenet_package(lenet_ternary, tmp_path_factory):
    import tdsl

    return tdsl.save(lenet_ternary, tmp_path_factory.mktemp("pkg") / "lenet")
