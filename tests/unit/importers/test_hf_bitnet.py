"""`tdsl import` of Hugging Face BitNetForCausalLM folders, against transformers itself: the
logits (max relative error), greedy text and perplexity of the imported package on the Numba
runtime equal those of transformers' BitLinear / AutoBitLinear model on the same checkpoint,
in both published layouts; the package runs where torch cannot be imported."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tdsl
from tdsl.backends.numba.generate import Generator
from tdsl.importers.hf_bitnet import absmean_ternary, unpack_hf
from tdsl.importers.tokenizer import Tokenizer
from tdsl.tools.tdsl_cli import main

PROMPT = "The import statement finds a module"
TEXT = ("Simple statements are comprised within a single logical line. The assert statement is a convenient way "
        "to insert debugging assertions into a program.")


def _import(src: Path, out: Path) -> tdsl.package.reader.LoadedPackage:
    assert main(["import", str(src), "-o", str(out)]) == 0
    return tdsl.load(out)


def _greedy(model: torch.nn.Module, ids: list[int], n: int) -> list[int]:
    """transformers' greedy continuation, the whole sequence each step."""
    seq = torch.tensor([ids])
    out = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(seq).logits[0, -1].argmax())
            out.append(nxt)
            seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)
    return out


@pytest.mark.parametrize("layout, tied", [("packed", True), ("online", True), ("packed", False)],
                         ids=["packed-tied", "online-tied", "packed-separate-head"])
def test_imported_logits_and_greedy_text_equal_transformers(layout: str, tied: bool, checkpoint, reference,
                                                           reference_logits, tmp_path: Path) -> None:
    src = checkpoint(layout, tied=tied)
    pkg = _import(src, tmp_path / "pkg")
    tok = Tokenizer.for_package(pkg.path, pkg.config)
    ids = np.array([tok.encode(PROMPT)], np.int32)
    assert ids.shape[1] > 3 and tok.backend is not None
    ref_model = reference(src)
    ref = reference_logits(ref_model, ids)
    ours = pkg.deploy()(ids)
    assert ours.shape == ref.shape
    rel = np.abs(ours - ref).max() / np.abs(ref).max()
    assert rel <= 0.03, f"max relative error {rel:.4f}"
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() >= 0.9
    ours_text = Generator(pkg.deploy()).generate(ids, 12).tokens[0]
    ref_text = _greedy(ref_model, ids[0].tolist(), 12)
    assert ours_text == ref_text
    assert len(set(ref_text)) > 2  # a continuation, not one token repeated


def test_the_published_layout_is_read_as_transformers_unpacks_it() -> None:
    from transformers.integrations.bitnet import pack_weights, unpack_weights

    trits = torch.from_numpy(np.random.default_rng(0).integers(-1, 2, (16, 7)).astype(np.float32))
    packed = pack_weights(trits.clone())
    ours = unpack_hf(packed.numpy(), "w")
    assert np.array_equal(ours, unpack_weights(packed, torch.float32).numpy())
    assert np.array_equal(ours, trits.numpy())


def test_online_ternarisation_is_autobitlinears() -> None:
    from transformers.integrations.bitnet import WeightQuant

    w = torch.randn(24, 40) * 0.05
    trits, alpha = absmean_ternary(w.numpy())
    np.testing.assert_allclose(trits.astype(np.float32) * np.float32(alpha), WeightQuant.forward(None, w).numpy(),
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("layout", ["packed", "online"])
def test_perplexity_equals_transformers(layout: str, checkpoint, reference, reference_logits, tmp_path: Path) -> None:
    """On the start of the Language Reference text the project's perplexity runs use; both
    sides quantise activations to int8 the same way, so only float rounding separates them."""
    from tdsl.train.lm import python_docs_corpus

    src = checkpoint(layout)
    pkg = _import(src, tmp_path / "pkg")
    tok = Tokenizer.for_package(pkg.path, pkg.config)
    ids = np.array([tok.encode(python_docs_corpus()[:1200])], np.int32)

    def perplexity(logits: np.ndarray) -> float:
        z = logits[0, :-1].astype(np.float64)
        logp = z - z.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        return float(np.exp(-logp[np.arange(len(z)), ids[0, 1:]].mean()))

    ours = perplexity(pkg.deploy()(ids))
    ref = perplexity(reference_logits(reference(src), ids))
    assert ids.shape[1] > 200
    assert abs(ours - ref) / ref <= 0.01, (ours, ref)


def test_tdsl_generate_uses_the_checkpoints_tokenizer(checkpoint, reference, tmp_path: Path, capsys) -> None:
    src = checkpoint("online")
    pkg = _import(src, tmp_path / "pkg")
    capsys.readouterr()
    tok = Tokenizer.for_package(pkg.path, pkg.config)
    expected = tok.decode(_greedy(reference(src), tok.encode(PROMPT), 8))
    assert main(["generate", str(pkg.path), "--prompt", PROMPT, "--max-new-tokens", "8", "--no-warmup"]) == 0
    captured = capsys.readouterr()
    assert captured.out == PROMPT + expected + "\n"
    assert "decode: 7 tokens" in captured.err


SLIM = """
import importlib.abc
import sys


class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "transformers", "onnx", "onnxruntime"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Refuse())
from tdsl.tools.tdsl_cli import main

if main(["import", sys.argv[1], "-o", sys.argv[2]]) != 0:
    sys.exit(1)
sys.exit(main(["generate", sys.argv[2], "--prompt", sys.argv[3], "--max-new-tokens", "6", "--no-warmup"]))
"""


def test_import_and_generate_without_torch(checkpoint, reference, tmp_path: Path) -> None:
    src = checkpoint("packed")
    tok = Tokenizer.from_file(src / "tokenizer.json")
    expected = tok.decode(_greedy(reference(src), tok.encode(PROMPT), 6))
    out = subprocess.run([sys.executable, "-c", SLIM, str(src), str(tmp_path / "pkg"), PROMPT], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    summary, text = out.stdout.split("\n", 1)
    assert summary.startswith("imported ") and "tokenizer: tokenizer.json" in summary
    assert text == PROMPT + expected + "\n"


def test_an_int8_head_costs_little_perplexity(checkpoint, tmp_path: Path) -> None:
    """The imported head is stored at fp16, so the default generator reads it as fp16 (nothing
    rounded); `Generator(head="int8")` reads it as int8 rows times the final norm's int8 codes:
    the logits move by those two roundings (within 1 % of their range), and the perplexity of
TEXT within 2 % (a random model's logits are sharp, its perplexity ~2e7 over 300 entries, so a
small logit change moves it more than a trained model's: docs/results/bench_llm.md)."""
    from tdsl.runtime.quant_act import plane_stride

    pkg = _import(checkpoint("packed"), tmp_path / "pkg")
    tok = Tokenizer.for_package(pkg.path, pkg.config)
    ids = np.array([tok.encode(TEXT)], np.int32)
    exact, int8 = Generator(pkg.deploy()), Generator(pkg.deploy(), head="int8")
    a, b = exact.prefill(ids), int8.prefill(ids)
    assert exact.head == "fp16" and exact.head_bytes == 300 * 32 * 2
    assert int8.head_bytes == 300 * 4 * plane_stride(32) + 4 * 300  # int8 rows (padded planes), a scale each
    assert np.abs(a - b).max() / np.abs(a).max() <= 0.01

    def nll(logits: np.ndarray) -> float:
        z = logits[0, :-1].astype(np.float64)
        z = z - z.max(-1, keepdims=True)
        z -= np.log(np.exp(z).sum(-1, keepdims=True))
        return float(-z[np.arange(len(z)), ids[0, 1:]].mean())

    assert abs(np.exp(nll(b)) / np.exp(nll(a)) - 1) <= 0.02
    with pytest.raises(tdsl.TdslError, match="head must be one of"):
        Generator(pkg.deploy(), head="fp8")
