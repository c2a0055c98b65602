"""The helpers emitted torch code calls: the ternary STE, ternary init, spec lookup."""
from __future__ import annotations

import pytest
import torch

from tdsl.backends.torch import runtime as rt
from tdsl.errors import TdslError


def test_ternary_rounds_clamps_and_passes_gradient_straight_through() -> None:
    w = torch.tensor([-2.3, -0.6, -0.4, 0.0, 0.49, 0.51, 7.0], requires_grad=True)
    t = rt.ternary(w)
    assert t.tolist() == [-1.0, -1.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    (t * torch.arange(7.0)).sum().backward()
    assert w.grad.tolist() == list(range(7))


def test_ternary_on_int8_trits_only_clamps() -> None:
    w = torch.tensor([1, 0, -1, 1], dtype=torch.int8)
    assert torch.equal(rt.ternary(w), w)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int8])
def test_random_ternary_fills_in_place(dtype: torch.dtype) -> None:
    w = torch.full((64, 64), 5, dtype=dtype)
    assert rt.random_ternary_(w) is w
    assert set(w.unique().tolist()) == {-1, 0, 1} and w.dtype == dtype


def test_lookup_spec_names_the_compiled_sets() -> None:
    specs = {(4, 8): 0, (8, 8): 1}
    assert rt.lookup_spec(specs, (8, 8), "Block", ("cin", "cout")) == 1
    with pytest.raises(TdslError, match=r"layer Block was compiled for \(cin=4, cout=8\); \(cin=8, cout=8\), "
                                        r"not \(cin=3, cout=8\)"):
        rt.lookup_spec(specs, (3, 8), "Block", ("cin", "cout"))
