"""Issue 22's held-out zoo test: the CNNs take any H x W at the top, as torchvision's do;
`image_size` stays the example shape (example inputs, `tdsl run`'s default input), and the
Numba deployment plans each input shape it meets."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tdsl
from tdsl.backends.torch.export import example_inputs
from tdsl.signature import InputMismatch

CASES = [("resnet18", {"num_classes": 10, "cifar_stem": True}, (32, 40)),
         ("mobilenetv2", {"num_classes": 10, "width_mult": 0.5}, (96, 64))]


@pytest.mark.parametrize(("name", "params", "sizes"), CASES)
def test_any_image_size_on_torch_and_numba(name: str, params: dict, sizes: tuple[int, int]) -> None:
    torch.manual_seed(0)
    frozen = tdsl.quantize(name, precision="ternary", params=params)
    assert [tuple(x.shape) for x in example_inputs(frozen.compiled, batch=2)] == [(2, 3, 224, 224)]
    deployed = frozen.deploy("numba")
    for side in sizes:
        x = np.random.default_rng(side).standard_normal((2, 3, side, side)).astype(np.float32)
        with torch.no_grad():
            reference = frozen.module(torch.from_numpy(x)).numpy()
        assert reference.shape == (2, 10)
        out = deployed(x)
        assert np.abs(out - reference).max() <= 0.02 * np.abs(reference).max() + 1e-6  # int8 activations
    with pytest.raises(InputMismatch, match="expects float32\\[\\?, 3, \\?, \\?\\]"):
        deployed(np.zeros((2, 4, 32, 32), np.float32))


def test_dynamic_takes_one_example() -> None:
    source = "layer T {\n fn forward(x: Tensor[float32, N, dynamic(4, 5)]) -> Tensor[float32, N, 4] { return x }\n}\n"
    with pytest.raises(tdsl.TdslError, match="dynamic\\(example\\) takes one argument") as info:
        tdsl.compile(source, pipeline="")
    assert info.value.loc is not None and info.value.loc.line == 2
