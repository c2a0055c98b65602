"""GGUF out: an imported BitNet package as llama.cpp's `bitnet` architecture with TQ2_0 / TQ1_0
projections, read back by the `gguf` package's own reader and dequantisers: every block
decodes to the package's trits times its scale (fp16, as the blocks hold it), the names and
metadata are llama.cpp's, and the tokenizer's vocabulary is there."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tdsl
from tdsl.package.gguf import read_gguf, verify_gguf, write_gguf
from tdsl.runtime.packing import unpack
from tdsl.tools.tdsl_cli import main

GGUF_SIZES = {"d": 256, "hidden": 512, "layers": 1, "heads": 4, "kv_heads": 2}
"""llama.cpp's TQ blocks are 256 trits: rows must be whole blocks."""


@pytest.fixture(scope="module")
def package(checkpoint, tmp_path_factory: pytest.TempPathFactory) -> tdsl.package.reader.LoadedPackage:
    out = tmp_path_factory.mktemp("gguf") / "pkg"
    assert main(["import", str(checkpoint("packed", **GGUF_SIZES)), "-o", str(out)]) == 0
    return tdsl.load(out)


@pytest.mark.parametrize("ternary", ["tq2_0", "tq1_0"])
def test_gguf_blocks_decode_to_the_packages_trits_times_scale(package, ternary: str, tmp_path: Path) -> None:
    path = write_gguf(package, tmp_path / "m.gguf", ternary=ternary)
    meta, decoded, types = read_gguf(path)
    assert meta["general.architecture"] == "bitnet"
    assert meta["bitnet.embedding_length"] == 256 and meta["bitnet.block_count"] == 1
    assert meta["bitnet.feed_forward_length"] == 512 and meta["bitnet.attention.head_count_kv"] == 2
    assert meta["bitnet.rope.freq_base"] == pytest.approx(500000.0)
    assert meta["bitnet.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    assert types["blk.0.ffn_gate.weight"] == ternary.upper() and types["token_embd.weight"] == "F16"
    assert types["blk.0.ffn_sub_norm.weight"] == "F32"
    for ours, theirs, shape in [("attn.q_proj", "attn_q", (256, 256)), ("attn.k_proj", "attn_k", (128, 256)),
                                ("mlp.down_proj", "ffn_down", (256, 512)), ("mlp.gate_proj", "ffn_gate", (512, 256))]:
        key = f"blocks.0.{ours}.weight"
        trits = unpack(package.arrays[key + "_packed"], shape, "2bit")
        alpha = float(package.arrays[key + "_scale"])
        got = decoded[f"blk.0.{theirs}.weight"]
        assert got.shape == shape
        assert np.array_equal(got, trits.astype(np.float32) * np.float32(np.float16(alpha)))
        np.testing.assert_allclose(got, trits * alpha, rtol=1e-3)
    assert np.array_equal(decoded["token_embd.weight"], package.arrays["embed.weight"].astype(np.float16))
    assert np.array_equal(decoded["blk.0.attn_sub_norm.weight"], package.arrays["blocks.0.attn.sub_norm.weight"])
    assert verify_gguf(package, path) == 0.0
    tokens = meta["tokenizer.ggml.tokens"]
    assert meta["tokenizer.ggml.model"] == "gpt2" and len(tokens) == 300 and "</s>" in tokens
    assert meta["tokenizer.ggml.bos_token_id"] == 0 and meta["tokenizer.ggml.eos_token_id"] == 1


def test_tdsl_export_writes_and_verifies_gguf(package, tmp_path: Path, capsys) -> None:
    out = tmp_path / "m.gguf"
    assert main(["export", str(package.path), "--format", "gguf", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ok, max |diff| 0" in printed and "gguf" in printed
    size = out.stat().st_size
    _, decoded, _ = read_gguf(out)
    assert len(decoded) == 1 + 1 + 4 + 7
    assert size < 300 * 256 * 2 + 7 * 512 * 256 // 3  # fp16 embedding, ~2 bits a trit


def test_an_untied_or_small_decoder_is_refused(checkpoint, tmp_path: Path) -> None:
    untied = tmp_path / "untied"
    assert main(["import", str(checkpoint("packed", tied=False, **GGUF_SIZES)), "-o", str(untied)]) == 0
    with pytest.raises(tdsl.TdslError, match="reads the LM head from token_embd"):
        write_gguf(tdsl.load(untied), tmp_path / "u.gguf")
    small = tmp_path / "small"
    assert main(["import", str(checkpoint("packed")), "-o", str(small)]) == 0
    with pytest.raises(tdsl.TdslError, match="whole blocks of 256"):
        write_gguf(tdsl.load(small), tmp_path / "s.gguf")
    assert not (tmp_path / "u.gguf").exists() and not (tmp_path / "s.gguf").exists()
