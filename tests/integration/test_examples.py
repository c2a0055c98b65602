"""The programs in examples/ parse, compile through the public API and run."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import tdsl

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", ["hello.tri", "simple_ternary.tri", "tiny_convnet.tdsl"])
def test_example_parses(name: str) -> None:
    assert tdsl.parse(str(EXAMPLES / name)).body


def test_hello_returns_its_top_level_let() -> None:
    out = tdsl.compile(str(EXAMPLES / "hello.tri")).to_torch()()
    assert set(out) == {"x"}
    assert int(out["x"]) == 1


def test_simple_ternary_compiles_and_runs() -> None:
    # Its forward takes a Tensor[float16] of open rank: shape-infer leaves that unranked.
    m = tdsl.compile(str(EXAMPLES / "simple_ternary.tri"),
                     params={"in_features": 4, "out_features": 3})
    assert m.passes == ["shape-infer", "canonicalize"]
    assert 'precision = "ternary"' in m.ir
    assert "tdsl.ternary_matmul" in m.ir
    net = m.to_torch()
    w = net.W.detach()
    assert set(w.unique().tolist()) <= {-1.0, 0.0, 1.0}
    x = torch.randn(5, 4, dtype=torch.float16)
    y = net(x)
    assert y.dtype == torch.float16 and tuple(y.shape) == (5, 3)
    assert torch.allclose(y.float(), x.float() @ w.T, atol=1e-2)


@pytest.mark.parametrize("depth", [1, 3])
def test_tiny_convnet_trains(depth: int) -> None:
    torch.manual_seed(0)
    net = tdsl.compile(str(EXAMPLES / "tiny_convnet.tdsl"), params={"depth": depth}).to_torch()
    names = {k for k, _ in net.named_parameters()}
    assert {f"blocks.{i}.conv.weight" for i in range(depth)} <= names
    assert f"blocks.{depth}.conv.weight" not in names
    out = net(torch.randn(2, 3, 32, 32))
    assert tuple(out.shape) == (2, 10)
    F.cross_entropy(out, torch.tensor([0, 1])).backward()
    grad = dict(net.named_parameters())["stem.0.weight"].grad
    assert grad is not None and grad.abs().sum() > 0
