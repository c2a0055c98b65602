"""A BitNet decoder package as a GGUF file (llama.cpp's `bitnet` architecture, TQ2_0 / TQ1_0).

    write_gguf(tdsl.load("out/bitnet"), "bitnet.gguf", ternary="tq2_0")
    tdsl export out/bitnet --format gguf -o bitnet.gguf

Written with the `gguf` package (llama.cpp's own Python writer): the tensor names and
metadata keys of `MODEL_ARCH.BITNET` (token_embd, blk.N.attn_q ... ffn_sub_norm,
output_norm; `bitnet.embedding_length`, `bitnet.rope.freq_base`, ...). llama.cpp's bitnet
graph is the published BitNet b1.58 2B4T: relu2-gated MLP with sub-norms, rotate-half
(NeoX) RoPE, and the head read from `token_embd`, so only packages of `bitnet.tdsl` with
`gated=true` and a head equal to the embedding (an imported tied checkpoint) are accepted.

Each ternary projection alpha * T becomes TQ2_0 (2 bits a trit) or TQ1_0 (1.6 bits) blocks
of 256 trits with one fp16 scale each: `gguf.quants.quantize` of alpha * T sets every
non-zero block's scale to alpha (rounded to fp16) and its trits to T, so decoding a block
gives exactly T * fp16(alpha); `verify_gguf` reads the file back with gguf's reader and checks
that. The embedding is stored at F16, norms at F32. With the package's tokenizer.json (BPE),
the vocabulary goes in as a `gpt2` tokenizer (tokens, types, merges, bos/eos).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from tdsl.errors import TdslError

TERNARY_TYPES = ("tq2_0", "tq1_0")
BLOCK = 256
"""Trits per TQ1_0 / TQ2_0 block: a ternary row must be a whole number of blocks."""
_PROJECTIONS = {"attn.q_proj": "attn_q", "attn.k_proj": "attn_k", "attn.v_proj": "attn_v",
                "attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                "mlp.down_proj": "ffn_down"}
_NORMS = {"attn_norm": "attn_norm", "attn.sub_norm": "attn_sub_norm", "mlp_norm": "ffn_norm",
          "mlp.sub_norm": "ffn_sub_norm"}


def _qtype(ternary: str) -> Any:
    from gguf import GGMLQuantizationType

    if ternary not in TERNARY_TYPES:
        raise TdslError(f"GGUF ternary type must be one of {', '.join(TERNARY_TYPES)}, got '{ternary}'")
    return GGMLQuantizationType.TQ2_0 if ternary == "tq2_0" else GGMLQuantizationType.TQ1_0


def _source(model: Any) -> tuple[dict[str, np.ndarray], dict[str, Any], str, Path | None]:
    """(arrays, params, entry, package folder or None) of a LoadedPackage or a FrozenModel."""
    from tdsl.package.reader import LoadedPackage

    if isinstance(model, LoadedPackage):
        return dict(model.arrays), dict(model.compiled.params), model.compiled.entry, model.path
    state = model.state_dict()
    arrays = {k: v.detach().cpu().numpy() for k, v in state.items()}
    folder = getattr(model, "package_path", None)
    return arrays, dict(model.compiled.params), model.compiled.entry, Path(folder) if folder else None


def _check_architecture(arrays: dict[str, np.ndarray], params: dict[str, Any], entry: str) -> None:
    if entry != "BitNetDecoder" or "embed.weight" not in arrays:
        raise TdslError(f"GGUF export writes llama.cpp's bitnet architecture: the zoo's BitNetDecoder, not @{entry}")
    if not params.get("gated") or params.get("swiglu"):
        raise TdslError("GGUF export: llama.cpp's bitnet MLP is relu2(gate_proj(x)) * up_proj(x); this decoder has "
                        f"{'silu-gated (swiglu)' if params.get('swiglu') else 'ungated relu2'} MLPs (param gated=false)")
    embed, head = arrays["embed.weight"], arrays.get("lm_head.weight")
    if head is None or "lm_head.weight_packed" in arrays or not np.array_equal(embed.astype(np.float16),
                                                                               head.astype(np.float16)):
        raise TdslError("GGUF export: llama.cpp's bitnet reads the LM head from token_embd, but lm_head.weight is "
                        "not the embedding (only tied checkpoints, such as imported BitNet b1.58 2B4T, export)")


def projection_shapes(params: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """[out, in] of each projection of a block (bitnet.tdsl's parameters)."""
    d, hidden = params["d"], params["hidden"]
    kv = params["kv_heads"] * (d // params["heads"])
    return {"attn.q_proj": (d, d), "attn.k_proj": (kv, d), "attn.v_proj": (kv, d), "attn.o_proj": (d, d),
            "mlp.gate_proj": (hidden, d), "mlp.up_proj": (hidden, d), "mlp.down_proj": (d, hidden)}


def ternary_tensor(arrays: dict[str, np.ndarray], key: str, shape: tuple[int, int]) -> np.ndarray:
    """alpha * T (float32 [out, in]) of a packed projection `key` (without `_packed`)."""
    from tdsl.runtime.packing import unpack

    scale = arrays[key + "_scale"]
    if np.size(scale) != 1:
        raise TdslError(f"GGUF export: '{key}' has {np.size(scale)} scales; TQ blocks hold one scale per tensor here")
    trits = unpack(arrays[key + "_packed"], shape, "2bit")
    return trits.astype(np.float32) * np.float32(np.asarray(scale).reshape(()))


def gguf_tensors(arrays: dict[str, np.ndarray], params: dict[str, Any], ternary: str) -> list[tuple[str, np.ndarray, Any]]:
    """(llama.cpp name, data as stored, GGML type) of every tensor, in llama.cpp's order."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    qtype = _qtype(ternary)
    shapes = projection_shapes(params)
    out: list[tuple[str, np.ndarray, Any]] = [
        ("token_embd.weight", arrays["embed.weight"].astype(np.float16), GGMLQuantizationType.F16)]
    for i in range(params["layers"]):
        for ours, theirs in _NORMS.items():
            out.append((f"blk.{i}.{theirs}.weight", arrays[f"blocks.{i}.{ours}.weight"].astype(np.float32),
                        GGMLQuantizationType.F32))
        for ours, theirs in _PROJECTIONS.items():
            key = f"blocks.{i}.{ours}.weight"
            cols = shapes[ours][1]
            if cols % BLOCK:
                raise TdslError(f"GGUF export: '{key}' has rows of {cols} trits; {ternary.upper()} stores whole blocks "
                                f"of {BLOCK} (llama.cpp needs the input width to be a multiple of {BLOCK})")
            out.append((f"blk.{i}.{theirs}.weight", quantize(ternary_tensor(arrays, key, shapes[ours]), qtype), qtype))
    out.append(("output_norm.weight", arrays["norm.weight"].astype(np.float32), GGMLQuantizationType.F32))
    return out


def fp32_nbytes(model: Any) -> int:
    """Bytes of the tensors a GGUF export holds, were each stored as F32 (the size baseline)."""
    _, params, _, _ = _source(model)
    d, layers, vocab = params["d"], params["layers"], params["vocab"]
    per_block = sum(o * i for o, i in projection_shapes(params).values()) + 3 * d + params["hidden"]
    return 4 * (vocab * d + layers * per_block + d)


def _add_tokenizer(writer: Any, path: Path, vocab: int, bos: Any, eos: Any) -> None:
    """The tokenizer.json's BPE vocabulary as llama.cpp's `gpt2` tokenizer metadata."""
    import gguf

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TdslError(f"{path}: cannot read the tokenizer ({e})") from None
    model = data.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise TdslError(f"{path}: GGUF export writes BPE tokenizers (gpt2 style), this one is {model.get('type')!r}")
    tokens: dict[int, str] = {int(i): t for t, i in model["vocab"].items()}
    special = set()
    for added in data.get("added_tokens") or []:
        tokens[int(added["id"])] = added["content"]
        if added.get("special"):
            special.add(int(added["id"]))
    if max(tokens) >= vocab:
        raise TdslError(f"{path}: token id {max(tokens)} is outside the model's vocabulary of {vocab}")
    names, types = [], []
    for i in range(vocab):
        if i in tokens:
            names.append(tokens[i])
            types.append(gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL)
        else:
            names.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(names)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    if isinstance(bos, int):
        writer.add_bos_token_id(bos)
    eos_ids = eos if isinstance(eos, list) else [eos]
    if eos_ids and isinstance(eos_ids[0], int):
        writer.add_eos_token_id(eos_ids[0])


def write_gguf(model: Any, path: str | os.PathLike[str], *, ternary: str = "tq2_0") -> Path:
    """Write a BitNet decoder package (LoadedPackage or FrozenModel) as GGUF at `path`, atomically."""
    import gguf

    from tdsl.package.files import write_with

    arrays, params, entry, folder = _source(model)
    _check_architecture(arrays, params, entry)
    tensors = gguf_tensors(arrays, params, ternary)
    config: dict[str, Any] = {}
    if folder is not None and (folder / "config.json").is_file():
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    tok = config.get("tokenizer") if isinstance(config.get("tokenizer"), dict) else None
    ftype = gguf.LlamaFileType.MOSTLY_TQ2_0 if ternary == "tq2_0" else gguf.LlamaFileType.MOSTLY_TQ1_0

    def write(tmp: str) -> None:
        writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BITNET])
        writer.add_name(str(config.get("name") or "bitnet"))
        writer.add_context_length(int(config.get("max_position_embeddings") or 4096))
        writer.add_embedding_length(params["d"])
        writer.add_block_count(params["layers"])
        writer.add_feed_forward_length(params["hidden"])
        writer.add_head_count(params["heads"])
        writer.add_head_count_kv(params["kv_heads"])
        writer.add_rope_dimension_count(params["d"] // params["heads"])
        writer.add_rope_freq_base(float(params.get("base", 10000.0)))
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(1.0)
        writer.add_layer_norm_rms_eps(float(params.get("eps", 1e-6)))
        writer.add_vocab_size(params["vocab"])
        writer.add_file_type(ftype)
        if tok is not None and folder is not None:
            from tdsl.package.reader import member_path

            _add_tokenizer(writer, member_path(folder, tok.get("file"), "the tokenizer"), params["vocab"],
                           tok.get("bos_token_id"), tok.get("eos_token_id"))
        for name, data, qtype in tensors:
            writer.add_tensor(name, data, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    return write_with(path, write)


def read_gguf(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, str]]:
    """(metadata, name -> decoded float32 [rows, cols], name -> GGML type name) of a GGUF file,
    through gguf's own reader and dequantisers."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    try:
        reader = GGUFReader(str(path))
    except (OSError, ValueError) as e:
        raise TdslError(f"{path}: not a GGUF file gguf's reader accepts ({e})") from None
    meta: dict[str, Any] = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or not field.types:
            continue
        value = field.contents()
        meta[name] = value
    decoded, types = {}, {}
    for t in reader.tensors:
        rows_cols = tuple(int(x) for x in reversed(t.shape.tolist()))
        decoded[t.name] = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(rows_cols)
        types[t.name] = t.tensor_type.name
    return meta, decoded, types


def verify_gguf(model: Any, path: str | os.PathLike[str]) -> float:
    """The largest |difference| between the file's decoded tensors and what they must hold
    (T * fp16(alpha) for the ternary blocks, the fp16 embedding, the f32 norms); 0.0 when exact."""
    from tdsl.runtime.packing import unpack

    arrays, params, _, _ = _source(model)
    _, decoded, _ = read_gguf(path)
    shapes = projection_shapes(params)
    expected = {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{i}.{theirs}.weight" for i in range(params["layers"]) for theirs in (*_NORMS.values(),
                                                                                  *_PROJECTIONS.values())}
    if expected - set(decoded):
        raise TdslError(f"{path}: tensor '{sorted(expected - set(decoded))[0]}' missing")
    if set(decoded) - expected:
        raise TdslError(f"{path}: unexpected tensor '{sorted(set(decoded) - expected)[0]}'")
    worst = 0.0
    for i in range(params["layers"]):
        for ours, theirs in _PROJECTIONS.items():
            key = f"blocks.{i}.{ours}.weight"
            scale = np.float32(np.float16(np.asarray(arrays[key + "_scale"]).reshape(())))
            want = unpack(arrays[key + "_packed"], shapes[ours], "2bit").astype(np.float32) * scale
            worst = max(worst, float(np.abs(decoded[f"blk.{i}.{theirs}.weight"] - want).max()))
    worst = max(worst, float(np.abs(decoded["token_embd.weight"] - arrays["embed.weight"].astype(np.float16)).max()))
    worst = max(worst, float(np.abs(decoded["output_norm.weight"] - arrays["norm.weight"]).max()))
    for i in range(params["layers"]):
        for ours, theirs in _NORMS.items():
            diff = decoded[f"blk.{i}.{theirs}.weight"] - arrays[f"blocks.{i}.{ours}.weight"]
            worst = max(worst, float(np.abs(diff).max()))
    return worst
