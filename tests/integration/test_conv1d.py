"""Conv1d (prelude) runs as conv2d over a unit dim and equals torch's conv1d."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tdsl

SRC = """
layer Net(cin: int = 4, cout: int = 6, k: int = 3, s: int = 1, p: int = 0, d: int = 1, g: int = 1) {
    let conv = Conv1d(cin, cout, kernel=k, stride=s, padding=p, dilation=d, groups=g)
    let bn = BatchNorm1d(cout)
    fn forward(x: Tensor[float32, N, cin, 40]) { return bn(conv(x)) }
}
"""


@pytest.mark.parametrize("params", [
    {}, {"s": 2, "p": 1}, {"d": 2, "k": 5, "p": 4}, {"g": 2}, {"cin": 6, "g": 6, "cout": 6},
])
def test_conv1d_matches_torch(params):
    model = tdsl.compile(SRC, params=params)
    torch.manual_seed(0)
    net = model.to_torch().eval()
    w = net.conv.weight
    assert w.dim() == 4 and w.shape[2] == 1
    x = torch.randn(2, params.get("cin", 4), 40)
    ref = F.conv1d(x, w.squeeze(2), net.conv.bias, stride=params.get("s", 1),
                   padding=params.get("p", 0), dilation=params.get("d", 1), groups=params.get("g", 1))
    ref = F.batch_norm(ref, net.bn.running_mean, net.bn.running_var, net.bn.weight, net.bn.bias)
    out = net(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert f"tensor<?x{params.get('cout', 6)}x{ref.shape[2]}xf32>" in model.ir


def test_squeeze_of_a_non_unit_dim_is_a_located_error():
    src = "layer Net {\n  fn forward(x: Tensor[float32, N, 3, 4]) {\n    return squeeze(x, 1)\n  }\n}\n"
    with pytest.raises(tdsl.TdslError) as info:
        tdsl.compile(src)
    assert "squeeze: dim 1 of ?x3x4 is not a size-1 dim" in info.value.message
    assert (info.value.loc.line, info.value.loc.col) == (3, 12)
