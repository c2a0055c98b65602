"""The public API as a user meets it: write a network, compile it, read the IR, train a step."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tdsl

NET = """
# A two-block residual MLP
layer Block(width: int) {
    let fc = Linear(width, width)
    fn forward(x: Tensor[float32, N, width]) -> Tensor[float32, N, width] {
        return relu(fc(x)) + x
    }
}

layer Net(inputs: int = 8, width: int = 16, classes: int = 3, depth: int = 2) {
    let stem = Linear(inputs, width)
    let blocks = []
    for i in range(depth) {
        blocks = blocks + [Block(width)]
    }
    let head = Linear(width, classes)
    fn forward(x: Tensor[float32, N, inputs]) -> Tensor[float32, N, classes] {
        return head(blocks(relu(stem(x))))
    }
}
"""


def test_write_compile_inspect_train():
    model = tdsl.compile(NET, params={"depth": 3})
    assert model.entry == "Net"
    assert model.passes == ["shape-infer", "canonicalize"]
    assert "tensor<?x8xf32>" in model.ir_after("irgen")
    assert "tdsl.call @blocks.2" in model.ir or 'tdsl.call @"blocks.2"' in model.ir
    assert "class Block(nn.Module):" in model.torch_source

    torch.manual_seed(0)
    net = model.to_torch()
    assert sorted(k for k in net.state_dict() if k.startswith("blocks.2")) == [
        "blocks.2.fc.bias", "blocks.2.fc.weight"]
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_mistakes_are_tdsl_errors():
    try:
        tdsl.compile(NET.replace("relu(fc(x))", "relu(fcc(x))"))
    except tdsl.TdslError as e:
        assert "unknown name 'fcc' (did you mean 'fc'?)" in str(e)
        assert e.loc is not None and e.loc.line == 6
    else:
        raise AssertionError("no error")


def test_a_torch_module_is_not_read_as_dsl_text() -> None:
    with pytest.raises(tdsl.TdslError, match="got a Linear"):
        tdsl.quantize(torch.nn.Linear(2, 2))


def test_a_folder_or_missing_path_is_named_not_parsed_as_dsl(tmp_path) -> None:
    (tmp_path / "run").mkdir()
    with pytest.raises(tdsl.TdslError, match="run: a folder"):
        tdsl.compile(str(tmp_path / "run"))
    with pytest.raises(tdsl.TdslError, match="no such file"):
        tdsl.compile("missing/model.tdsl")
    one_line = "layer A { fn forward(x: Tensor[float32, N, 4]) -> Tensor[float32, N, 4] { return x / 2 } }"
    assert "tdsl.div" in tdsl.compile(one_line).ir
