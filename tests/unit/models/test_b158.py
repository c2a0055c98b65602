"""The BitNet b1.58 recipe (`policy=b158`): which weights are ternary, the per-token int8
activations in training and in the frozen model, QAT through the `Trainer`, and the frozen
model on the Numba runtime computing what the frozen torch model computes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tdsl
from tdsl.backends.torch.sequence import int8_tokens
from tdsl.train.lm import (NextToken, decode_bytes, encode_bytes, next_token_windows, perplexity,
                           token_cross_entropy_sum)
from tdsl.train.trainer import TrainConfig, Trainer

PARAMS = {"vocab": 256, "d": 32, "layers": 2, "heads": 4, "kv_heads": 2, "hidden": 64}


def _precisions(compiled: tdsl.api.CompiledModel) -> dict[str, str | None]:
    from tdsl.passes.precision_policy import collect_sites
    from tdsl.dialects.tdsl import entry_layer

    module = tdsl.compile("bitnet", params=PARAMS).module
    paths = [s.path for s in collect_sites(module, entry_layer(module), "test")]
    layout = compiled.freeze(compiled.to_torch()).layout
    kinds = {s.weight: s.precision for s in layout.values()}
    return {p: kinds.get(p) for p in paths}


def test_every_projection_is_ternary_but_the_lm_head_and_the_embedding() -> None:
    compiled, _ = tdsl.qat("bitnet", policy="b158", params=PARAMS)
    precisions = _precisions(compiled)
    assert precisions.pop("lm_head.weight") == "fp16"
    assert len(precisions) == 2 * 6 and set(precisions.values()) == {"ternary"}  # q, k, v, o, up, down
    assert "embed.weight" not in precisions  # a lookup, not a weight-bearing op: it stays float
    quant = [op.attributes["quant"] for op in compiled.module.walk() if op.name == "tdsl.param"
             and "quant" in op.attributes]
    assert quant and all(q.data["threshold"].data == "absmean" and not q.data["per_channel"].value.data
                         for q in quant)
    marked = [op for op in compiled.module.walk() if op.name == "tern.linear"]
    assert marked and all(op.attributes["act_quant"].data == "int8_token" for op in marked)


def test_int8_tokens_quantises_each_token_by_its_absmax() -> None:
    x = torch.tensor([[[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [10.0, 3.0, -0.01]]], requires_grad=True)
    q = int8_tokens(x)
    amax = x.detach().abs().amax(-1, keepdim=True)
    expected = torch.round(x.detach() * torch.where(amax > 0, 127 / amax.clamp(min=1e-30), 0)) * amax / 127
    torch.testing.assert_close(q, expected)
    assert q[0, 1].abs().sum() == 0 and q[0, 2, 2] == 0  # -0.01 is below half a step of 10/127
    q.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # straight through


def test_qat_trains_freezes_and_runs_on_numba_as_in_torch() -> None:
    text = ("It was the best of times, it was the worst of times, it was the age of wisdom, "
            "it was the age of foolishness. ") * 8
    x, y = next_token_windows(encode_bytes(text), 32, stride=16)
    compiled, net = tdsl.qat("bitnet", policy="b158", params=PARAMS)
    torch.manual_seed(0)
    before = perplexity(net, x, y)
    config = TrainConfig(epochs=6, batch_size=8, optimizer="adamw", lr=3e-3, seed=0, progress=False)
    result = Trainer(NextToken(net), config, (x, y), loss_fn=token_cross_entropy_sum).fit()
    after = perplexity(net, x, y)
    assert after < before / 2, (before, after)
    assert 0.0 < result.train_acc <= 1.0

    frozen = compiled.freeze(net)
    ids = x[:3].to(torch.int32)
    with torch.no_grad():
        expected = frozen.module(ids).numpy()
    got = frozen.deploy()(ids.numpy())  # int8 per-token activations on the packed ternary kernels
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert (got.argmax(-1) == expected.argmax(-1)).all()


def test_byte_tokens_round_trip() -> None:
    text = "naïve café — ok"
    assert decode_bytes(encode_bytes(text)) == text
    x, y = next_token_windows(encode_bytes("abcdefgh"), 3)
    assert x.tolist() == [[97, 98, 99], [100, 101, 102]] and y.tolist() == [[98, 99, 100], [101, 102, 103]]
    with pytest.raises(tdsl.TdslError, match="too few"):
        next_token_windows(encode_bytes("ab"), 3)
