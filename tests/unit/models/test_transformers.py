"""The zoo's transformers (bitnet, bert_tiny): parameter counts by arithmetic, and the torch
backend and the Numba runtime computing the same outputs from the same weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tdsl


def _decoder_params(vocab: int, d: int, layers: int, heads: int, kv_heads: int, hidden: int,
                    swiglu: bool) -> int:
    kv = kv_heads * (d // heads)
    attention = d * d + 2 * d * kv + d + d * d  # q, k, v, sub-norm, o
    mlp = (2 if swiglu else 1) * d * hidden + hidden + hidden * d  # up (gate), sub-norm, down
    block = d + attention + d + mlp  # two pre-norms
    return vocab * d + layers * block + d + d * vocab  # embedding, blocks, final norm, LM head


def _encoder_params(vocab: int, d: int, layers: int, hidden: int, max_len: int) -> int:
    attention = 4 * (d * d + d) + 2 * d  # q, k, v, out with biases; LayerNorm weight and bias
    mlp = d * hidden + hidden + hidden * d + d + 2 * d
    return vocab * d + max_len * d + 2 * d + layers * (attention + mlp)


def _count(compiled: tdsl.api.CompiledModel) -> int:
    return sum(p.numel() for p in compiled.to_torch().parameters())


DECODERS = [
    {},
    {"vocab": 64, "d": 48, "layers": 2, "heads": 6, "kv_heads": 6, "hidden": 96},
    {"vocab": 100, "d": 64, "layers": 3, "heads": 4, "kv_heads": 1, "hidden": 160, "swiglu": True},
]


@pytest.mark.parametrize("params", DECODERS, ids=str)
def test_decoder_parameter_count_is_the_arithmetic_one(params: dict) -> None:
    full = {"vocab": 256, "d": 128, "layers": 4, "heads": 4, "kv_heads": 2, "hidden": 384, "swiglu": False,
            **params}
    assert _count(tdsl.compile("bitnet", params=params)) == _decoder_params(**full)


def test_default_decoder_size() -> None:
    assert _count(tdsl.compile("bitnet")) == 658_560


@pytest.mark.parametrize("params", [{}, {"vocab": 1000, "d": 64, "layers": 3, "heads": 4, "hidden": 256,
                                         "max_len": 32}], ids=str)
def test_encoder_parameter_count_is_the_arithmetic_one(params: dict) -> None:
    full = {"vocab": 256, "d": 128, "layers": 2, "hidden": 512, "max_len": 128, **params}
    full.pop("heads", None)
    assert _count(tdsl.compile("bert_tiny", params=params)) == _encoder_params(**full)


def test_decoder_has_no_biases_and_sub_norms() -> None:
    names = [n for n, _ in tdsl.compile("bitnet").to_torch().named_parameters()]
    assert not any(n.endswith("bias") for n in names)
    assert "blocks.0.attn.sub_norm.weight" in names and "blocks.0.mlp.sub_norm.weight" in names


@pytest.mark.parametrize("name, params", [
    ("bitnet", {"vocab": 64, "d": 32, "layers": 2, "heads": 4, "kv_heads": 2, "hidden": 64}),
    ("bitnet", {"vocab": 64, "d": 32, "layers": 1, "heads": 2, "kv_heads": 1, "hidden": 48, "swiglu": True}),
    ("bert_tiny", {"vocab": 64, "d": 32, "layers": 2, "heads": 2, "hidden": 64, "max_len": 16}),
], ids=["bitnet-relu2-gqa", "bitnet-swiglu", "bert_tiny"])
def test_torch_and_numba_compute_the_same(name: str, params: dict) -> None:
    compiled = tdsl.compile(name, params=params)
    torch.manual_seed(0)
    net = compiled.to_torch().eval()
    ids = np.random.default_rng(0).integers(0, 64, (2, 11)).astype(np.int32)
    with torch.no_grad():
        expected = net(torch.from_numpy(ids)).numpy()
    state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    got = compiled.with_weights(state).deploy(act_quant="float")(ids)
    assert got.shape == expected.shape == (2, 11, params.get("vocab") if name == "bitnet" else params["d"])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_decoder_is_causal() -> None:
    """A token's logits do not depend on later tokens."""
    compiled = tdsl.compile("bitnet", params={"vocab": 32, "d": 16, "layers": 1, "heads": 2, "kv_heads": 1,
                                              "hidden": 32})
    run = compiled.with_weights({k: v.detach().numpy() for k, v in compiled.to_torch().state_dict().items()}
                                ).deploy(act_quant="float")
    ids = np.arange(8, dtype=np.int32)[None] % 32
    changed = ids.copy()
    changed[0, 5:] = 0
    np.testing.assert_allclose(run(ids)[:, :5], run(changed)[:, :5], rtol=1e-6, atol=1e-6)


def test_encoder_position_beyond_max_len_is_a_located_error() -> None:
    compiled = tdsl.compile("bert_tiny", params={"vocab": 16, "d": 8, "layers": 1, "heads": 2, "hidden": 8,
                                                 "max_len": 4})
    run = compiled.with_weights({k: v.detach().numpy() for k, v in compiled.to_torch().state_dict().items()}
                                ).deploy(act_quant="float")
    with pytest.raises(tdsl.TdslError, match="embedding: id 4 is outside the table of 4 rows") as info:
        run(np.zeros((1, 5), np.int32))
    assert info.value.loc is not None and "bert_tiny.tdsl" in str(info.value.loc.file)
