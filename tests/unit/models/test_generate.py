"""Generation on the Numba runtime (`tdsl.backends.numba.generate`, `tdsl generate`): the
key/value-cached decode computes what the whole-sequence forward computes, greedy decoding
equals the torch backend's token for token on the same frozen weights, and a saved package
generates in a process where torch cannot be imported."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tdsl
from tdsl.backends.numba.generate import Generator
from tdsl.runtime.kv_cache import KVCache
from tdsl.tools.tdsl_cli import main

PARAMS = {"vocab": 256, "d": 48, "layers": 2, "heads": 4, "kv_heads": 2, "hidden": 96}
PROMPT = np.frombuffer(b"It was the best of times", np.uint8).astype(np.int32)[None]


@pytest.fixture(scope="module")
def frozen():
    """A b1.58 decoder (packed ternary projections, int8 per-token activations) with random weights."""
    compiled, net = tdsl.qat("bitnet", policy="b158", params=PARAMS)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.5 if p.ndim == 2 else 0.1).add_(1.0 if p.ndim == 1 else 0.0)
    return compiled.freeze(net)


def _torch_greedy(module: torch.nn.Module, prompt: np.ndarray, n: int) -> list[int]:
    """Greedy decoding with the torch backend, the whole sequence every step (no cache)."""
    ids = torch.from_numpy(prompt)
    out = []
    with torch.no_grad():
        for _ in range(n):
            nxt = module(ids)[:, -1].argmax(-1)
            out.append(int(nxt[0]))
            ids = torch.cat([ids, nxt[:, None].to(torch.int32)], dim=1)
    return out


def test_greedy_generation_equals_torch_token_for_token(frozen) -> None:
    result = Generator(frozen.deploy()).generate(PROMPT, 32)
    assert result.tokens[0] == _torch_greedy(frozen.module, PROMPT, 32)
    assert len(set(result.tokens[0])) > 3  # not a degenerate repeat of one token
    assert result.prefill_tokens_per_second > 0 and result.decode_tokens_per_second > 0


@pytest.mark.parametrize("swiglu, kv_heads", [(False, 2), (True, 1), (False, 4)], ids=["relu2-gqa", "swiglu-mqa",
                                                                                      "mha"])
def test_prefill_and_decode_steps_give_the_full_forwards_logits(swiglu: bool, kv_heads: int) -> None:
    params = {**PARAMS, "swiglu": swiglu, "kv_heads": kv_heads}
    compiled = tdsl.compile("bitnet", params=params)
    torch.manual_seed(1)
    state = {k: v.detach().numpy() for k, v in compiled.to_torch().state_dict().items()}
    run = compiled.with_weights(state).deploy(act_quant="float")
    ids = np.random.default_rng(0).integers(0, 256, (2, 13)).astype(np.int32)
    full = run(ids)
    gen = Generator(run, capacity=4)  # the cache grows past its first capacity
    logits = [gen.prefill(ids[:, :5])]
    logits += [gen.decode_step(ids[:, i:i + 1]) for i in range(5, 13)]
    np.testing.assert_allclose(np.concatenate(logits, axis=1), full, rtol=1e-4, atol=1e-4)
    assert gen.cache.length == 13 and gen.cache.nbytes() == 2 * 2 * 2 * 13 * (kv_heads * 12) * 4


def test_sampling_is_seeded_and_top_k_1_is_greedy(frozen) -> None:
    gen = Generator(frozen.deploy())
    a = gen.generate(PROMPT, 12, temperature=1.0, seed=7).tokens
    b = gen.generate(PROMPT, 12, temperature=1.0, seed=7).tokens
    c = gen.generate(PROMPT, 12, temperature=1.0, seed=8).tokens
    assert a == b and a != c
    assert gen.generate(PROMPT, 12, temperature=2.0, top_k=1, seed=3).tokens == gen.generate(PROMPT, 12).tokens


def test_bad_requests_are_errors(frozen) -> None:
    gen = Generator(frozen.deploy())
    with pytest.raises(tdsl.TdslError, match="decode_step before prefill"):
        gen.decode_step(np.zeros((1, 1), np.int32))
    with pytest.raises(tdsl.TdslError, match="max_new_tokens must be at least 1"):
        gen.generate(PROMPT, 0)
    with pytest.raises(tdsl.TdslError, match="temperature must be >= 0"):
        gen.generate(PROMPT, 3, temperature=-1.0)
    gen.prefill(PROMPT)
    with pytest.raises(tdsl.TdslError, match="one token per sequence"):
        gen.decode_step(PROMPT)
    with pytest.raises(tdsl.TdslError, match="outside the table of 256 rows"):
        gen.generate(np.array([[3, 300]], np.int32), 2)


def test_an_encoder_is_refused_at_its_attention() -> None:
    compiled = tdsl.compile("bert_tiny", params={"vocab": 16, "d": 8, "layers": 1, "heads": 2, "hidden": 8,
                                                 "max_len": 8})
    state = {k: v.detach().numpy() for k, v in compiled.to_torch().state_dict().items()}
    with pytest.raises(tdsl.TdslError, match="cannot decode token by token") as info:
        Generator(compiled.with_weights(state).deploy(act_quant="float"))
    assert info.value.loc is not None and "bert_tiny.tdsl" in str(info.value.loc.file)


def test_kv_cache_keeps_what_was_appended() -> None:
    cache = KVCache(layers=1, capacity=2)
    k = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    keys, values = cache.append(0, 0, k, -k)
    assert keys.shape == (2, 3, 4) and np.array_equal(values, -k)
    keys, _ = cache.append(0, 3, k[:, :1], k[:, :1])
    assert keys.shape == (2, 4, 4) and np.array_equal(keys[:, :3], k) and np.array_equal(keys[:, 3], k[:, 0])
    with pytest.raises(tdsl.TdslError, match="at least one layer"):
        KVCache(0)


SLIM = """
import importlib.abc
import sys


class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "onnx", "onnxruntime"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Refuse())
import numpy as np
import tdsl
from tdsl.backends.numba.generate import Generator

gen = Generator(tdsl.load(sys.argv[1]).deploy())
prompt = np.array([[int(t) for t in sys.argv[2].split(",")]], np.int32)
print(",".join(map(str, gen.generate(prompt, 16).tokens[0])))
"""


def test_a_saved_package_generates_without_torch(frozen, tmp_path: Path) -> None:
    package = tdsl.save(frozen, tmp_path / "bitnet")
    prompt = ",".join(map(str, PROMPT[0]))
    out = subprocess.run([sys.executable, "-c", SLIM, str(package), prompt], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert [int(t) for t in out.stdout.strip().split(",")] == _torch_greedy(frozen.module, PROMPT, 16)


def test_tdsl_generate_prints_the_continuation_and_tokens_per_second(frozen, tmp_path: Path, capsys) -> None:
    package = tdsl.save(frozen, tmp_path / "bitnet")
    assert main(["generate", str(package), "--prompt", "It was the best of times", "--max-new-tokens", "8"]) == 0
    captured = capsys.readouterr()
    expected = bytes(_torch_greedy(frozen.module, PROMPT, 8)).decode("utf-8", errors="replace")
    assert captured.out == "It was the best of times" + expected + "\n"
    assert "prefill: 24 tokens" in captured.err and "decode: 7 tokens" in captured.err
    assert "tokens/s" in captured.err
    assert main(["generate", str(package), "--prompt", "", "--max-new-tokens", "8"]) == 1
    assert "--prompt is empty" in capsys.readouterr().err
