"""Import a Hugging Face `BitNetForCausalLM` folder as a tdsl package (no torch).

The folder holds config.json, model.safetensors (or shards with an index) and, usually,
tokenizer.json. The program is the zoo's `bitnet.tdsl` with the published architecture's
options (`gated=true` for relu2(gate_proj(x)) * up_proj(x), `base` = rope theta, `eps` =
rms_norm_eps), compiled with `ternarize{policy=b158}`: every projection ternary with
per-token absmax int8 activations, the embedding at float32, the head at fp16.

The numerics are transformers' own (`transformers.integrations.bitnet`), for the two
layouts published checkpoints use (`quantization_config`):

- `linear_class="bitlinear"` (microsoft/bitnet-b1.58-2B-4T): each projection is
  `uint8 [out/4, in]`, byte `[r, k]` bits 2i..2i+1 holding row i*out/4 + r as code t + 1,
  and a `weight_scale` that BitLinear divides by: y = (xq . T) / (xs * weight_scale), so
  the tdsl scale is alpha = 1 / weight_scale.
- `linear_class="autobitlinear"`, `quantization_mode="online"` (the `-bf16` checkpoints):
  float master weights that AutoBitLinear ternarises at every call with the absmean rule
  per tensor: s = 1 / max(mean|W|, 1e-5), T = clamp(round(W s), -1, 1), alpha = 1 / s.
  (tdsl's own absmean quantiser takes the mean over the kept weights, so the trits and the
  scale are computed here, as transformers computes them, and stored already packed.)

Activations are quantised per token to int8 by absmax (x * 127 / max|x|, rounded half to
even) in both transformers and the tdsl runtime. Tied embeddings are copied into the head.
Whatever the importer cannot represent exactly (biases, another activation or RoPE type, a
BitLinear with its own RMSNorm, quantised or missing layers) is a TdslError naming the
config key or the tensor, and nothing is written.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from tdsl.errors import TdslError
from tdsl.importers.hf_files import CheckpointTensors, read_json
from tdsl.importers.tokenizer import TOKENIZER_FILE

PIPELINE = "shape-infer,ternarize{policy=b158}"
ENTRY = "BitNetDecoder"
PROJECTIONS = {"self_attn": ("attn", ("q_proj", "k_proj", "v_proj", "o_proj")),
               "mlp": ("mlp", ("gate_proj", "up_proj", "down_proj"))}
"""HF module -> (tdsl instance, its projections)."""
NORMS = {"input_layernorm": "attn_norm", "post_attention_layernorm": "mlp_norm",
         "self_attn.attn_sub_norm": "attn.sub_norm", "mlp.ffn_sub_norm": "mlp.sub_norm"}
"""HF norm (under model.layers.i) -> tdsl norm (under blocks.i); each `.weight`."""
FP16_MAX = 65504.0


def _key(config: dict[str, Any], where: Path, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    if key not in config or config[key] is None:
        if default is ...:
            raise TdslError(f"{where}: missing key '{key}'")
        return default
    value = config[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise TdslError(f"{where}: key '{key}' must be {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _refuse(where: Path, key: str, value: Any, why: str) -> TdslError:
    return TdslError(f"{where}: key '{key}' is {value!r}: {why}")


def model_params(config: dict[str, Any], where: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(bitnet.tdsl parameters, the quantization_config) of a BitNetForCausalLM config.json."""
    model_type = config.get("model_type")
    if model_type != "bitnet":
        raise _refuse(where, "model_type", model_type, "tdsl imports BitNet checkpoints (model_type 'bitnet', "
                      "BitNetForCausalLM) only")
    d = _key(config, where, "hidden_size", int)
    heads = _key(config, where, "num_attention_heads", int)
    kv_heads = _key(config, where, "num_key_value_heads", int, heads)
    if d % heads or heads % kv_heads:
        raise TdslError(f"{where}: hidden_size {d}, num_attention_heads {heads} and num_key_value_heads {kv_heads} "
                        "must divide: hidden_size by heads, heads by key/value heads")
    head_dim = config.get("head_dim")
    if head_dim is not None and head_dim != d // heads:
        raise _refuse(where, "head_dim", head_dim, f"tdsl's attention uses hidden_size / heads = {d // heads}")
    act = config.get("hidden_act", "relu2")
    if act not in ("relu2", "silu"):
        raise _refuse(where, "hidden_act", act, "tdsl imports relu2 (BitNet b1.58) or silu MLPs")
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            raise _refuse(where, key, config[key], "biases are not part of tdsl's BitNet decoder")
    rope = config.get("rope_parameters") or {}
    if not isinstance(rope, dict):
        raise _refuse(where, "rope_parameters", rope, "expected an object")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    scaling = config.get("rope_scaling")
    if rope_type != "default" or (scaling not in (None, {}) and (scaling or {}).get("rope_type", "default") != "default"):
        raise _refuse(where, "rope_parameters.rope_type", scaling or rope_type,
                      "tdsl implements the default rotary embedding only")
    theta = rope.get("rope_theta", config.get("rope_theta", 500000.0))
    eps = config.get("rms_norm_eps", 1e-5)
    for key, value in (("rope_theta", theta), ("rms_norm_eps", eps)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
            raise _refuse(where, key, value, "must be a positive number")
    params = {"vocab": _key(config, where, "vocab_size", int), "d": d, "layers": _key(config, where,
              "num_hidden_layers", int), "heads": heads, "kv_heads": kv_heads,
              "hidden": _key(config, where, "intermediate_size", int), "swiglu": act == "silu",
              "base": float(theta), "gated": act == "relu2", "eps": float(eps)}
    for key in ("vocab", "d", "layers", "hidden"):
        if params[key] < 1:
            raise _refuse(where, key, params[key], "must be at least 1")
    quant = config.get("quantization_config")
    if not isinstance(quant, dict) or quant.get("quant_method") != "bitnet":
        raise TdslError(f"{where}: key 'quantization_config' must describe BitNet quantisation (quant_method "
                        f"'bitnet'), got {quant!r}: a float checkpoint is not a ternary model to import")
    linear_class = quant.get("linear_class", "bitlinear")
    mode = quant.get("quantization_mode", "offline")
    if (linear_class, mode) not in (("bitlinear", "offline"), ("bitlinear", "online"), ("autobitlinear", "online")):
        raise _refuse(where, "quantization_config.linear_class", f"{linear_class}/{mode}",
                      "tdsl imports bitlinear (packed weights) and autobitlinear with quantization_mode 'online'")
    if quant.get("use_rms_norm"):
        raise _refuse(where, "quantization_config.use_rms_norm", True, "a BitLinear with its own RMSNorm is not "
                      "part of tdsl's BitNet decoder")
    skipped = quant.get("modules_to_not_convert")
    if skipped is not None and (not isinstance(skipped, list) or set(skipped) - {"lm_head"} or "lm_head" not in skipped):
        raise _refuse(where, "quantization_config.modules_to_not_convert", skipped,
                      "tdsl imports checkpoints where every projection but lm_head is ternary")
    return params, {"linear_class": linear_class, "quantization_mode": mode}


def unpack_hf(packed: np.ndarray, where: str) -> np.ndarray:
    """transformers' 2-bit layout uint8 [out/4, in] -> trits int8 [out, in] (`unpack_weights`)."""
    rows = packed.shape[0]
    out = np.empty((4 * rows, packed.shape[1]), dtype=np.int8)
    for i in range(4):
        codes = (packed >> (2 * i)) & 3
        if (codes == 3).any():
            r, k = np.argwhere(codes == 3)[0]
            raise TdslError(f"{where}: byte [{r}, {k}] holds code 3 in bits {2 * i}..{2 * i + 1}, which is no trit "
                            "(codes are 0, 1, 2 for -1, 0, +1): a damaged checkpoint")
        out[i * rows:(i + 1) * rows] = codes.astype(np.int8) - 1
    return out


def absmean_ternary(w: np.ndarray) -> tuple[np.ndarray, float]:
    """AutoBitLinear's online rule (`WeightQuant`): trits and alpha of a float weight, in float32."""
    w = np.asarray(w, dtype=np.float32)
    s = np.float32(1.0) / max(np.float32(np.abs(w).mean(dtype=np.float32)), np.float32(1e-5))
    trits = np.clip(np.rint(w * s), -1, 1).astype(np.int8)
    return trits, float(np.float32(1.0) / s)


class _Reader:
    """The checkpoint's tensors, each taken once, with shape and value checks that name it."""

    def __init__(self, tensors: CheckpointTensors):
        self.tensors = tensors
        self.used: set[str] = set()

    def take(self, name: str, shape: tuple[int, ...], kinds: tuple[str, ...] = ("F32", "F16", "BF16")) -> np.ndarray:
        if not self.tensors.has(name):
            raise TdslError(f"{self._folder()}: tensor '{name}' missing from the checkpoint")
        where = self.tensors.where(name)
        if self.tensors.dtype(name) not in kinds:
            raise TdslError(f"{where}: dtype {self.tensors.dtype(name)}, expected {' or '.join(kinds)}")
        if self.tensors.shape(name) != shape:
            raise TdslError(f"{where}: shape {self.tensors.shape(name)}, the config implies {shape}")
        self.used.add(name)
        a = self.tensors.read(name)
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise TdslError(f"{where}: holds NaN or infinite values")
        return a

    def _folder(self) -> Path:
        first = next(iter(self.tensors.files.values()), None)
        return first.path.parent if first is not None else Path(".")


def convert_weights(tensors: CheckpointTensors, params: dict[str, Any], quant: dict[str, str],
                    tied: bool) -> dict[str, np.ndarray]:
    """The package's arrays (tdsl names, frozen storage) from the checkpoint's tensors."""
    from tdsl.runtime.packing import pack

    read = _Reader(tensors)
    d, hidden, vocab = params["d"], params["hidden"], params["vocab"]
    kv = params["kv_heads"] * (d // params["heads"])
    shapes = {"q_proj": (d, d), "k_proj": (kv, d), "v_proj": (kv, d), "o_proj": (d, d),
              "gate_proj": (hidden, d), "up_proj": (hidden, d), "down_proj": (d, hidden)}
    arrays: dict[str, np.ndarray] = {}
    embed = read.take("model.embed_tokens.weight", (vocab, d))
    arrays["embed.weight"] = np.array(embed, dtype=np.float32)
    for i in range(params["layers"]):
        hf, ours = f"model.layers.{i}.", f"blocks.{i}."
        for src, dst in NORMS.items():
            size = hidden if src.startswith("mlp.") else d
            arrays[f"{ours}{dst}.weight"] = np.array(read.take(f"{hf}{src}.weight", (size,)), dtype=np.float32)
        for module, (instance, projections) in PROJECTIONS.items():
            for proj in projections:
                out, inp = shapes[proj]
                name = f"{hf}{module}.{proj}.weight"
                if quant["linear_class"] == "bitlinear":
                    if out % 4:
                        raise TdslError(f"{tensors.where(name) if tensors.has(name) else name}: {out} output rows "
                                        "do not fill whole bytes of the packed layout (4 rows per byte)")
                    trits = unpack_hf(np.asarray(read.take(name, (out // 4, inp), ("U8",))), tensors.where(name))
                    scale_name = f"{hf}{module}.{proj}.weight_scale"
                    ws = float(np.asarray(read.take(scale_name, (1,)), dtype=np.float32)[0])
                    if not ws > 0:
                        raise TdslError(f"{tensors.where(scale_name)}: is {ws}; BitLinear divides by it, so it must "
                                        "be positive")
                    alpha = float(np.float32(1.0) / np.float32(ws))
                else:
                    trits, alpha = absmean_ternary(read.take(name, (out, inp)))
                key = f"{ours}{instance}.{proj}.weight"
                arrays[key + "_packed"] = pack(trits, "2bit")
                arrays[key + "_scale"] = np.array(alpha, dtype=np.float32)
    arrays["norm.weight"] = np.array(read.take("model.norm.weight", (d,)), dtype=np.float32)
    head = embed if tied else read.take("lm_head.weight", (vocab, d))
    if tied and tensors.has("lm_head.weight"):
        read.take("lm_head.weight", (vocab, d))  # some writers store the tied copy too; it is the same tensor
    if np.abs(head).max() > FP16_MAX:
        raise TdslError(f"{'model.embed_tokens.weight' if tied else 'lm_head.weight'}: values beyond fp16's range; "
                        "the package keeps the head at fp16")
    arrays["lm_head.weight"] = np.asarray(head, dtype=np.float32).astype(np.float16)
    extra = sorted(set(tensors.names()) - read.used)
    if extra:
        raise TdslError(f"{tensors.where(extra[0])}: not part of a BitNetForCausalLM with this config "
                        f"({len(extra)} such tensor{'s' if len(extra) > 1 else ''}); tdsl will not drop weights silently")
    return arrays


def tokenizer_entry(folder: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """config.json's `tokenizer` field for the package, after checking tokenizer.json reads."""
    path = folder / TOKENIZER_FILE
    if not path.is_file():
        return None
    from tdsl.importers.tokenizer import Tokenizer

    Tokenizer.from_file(path)
    tok_config_path = folder / "tokenizer_config.json"
    tok_config = read_json(tok_config_path) if tok_config_path.is_file() else {}
    add_bos = bool(tok_config.get("add_bos_token", False))
    eos = config.get("eos_token_id")
    return {"file": TOKENIZER_FILE, "bos_token_id": config.get("bos_token_id"),
            "eos_token_id": eos if isinstance(eos, list) else ([] if eos is None else [eos]), "add_bos": add_bos}


def import_hf_folder(source: str | Path, output: str | Path, *, overwrite: bool = False) -> str:
    """Write the package for the BitNetForCausalLM folder `source` at `output`; return a summary."""
    from tdsl.importers.package_out import refuse_existing, write_package
    from tdsl.models import zoo_path

    folder = Path(source)
    refuse_existing(Path(output), overwrite)
    config_path = folder / "config.json"
    config = read_json(config_path)
    params, quant = model_params(config, config_path)
    tied = config.get("tie_word_embeddings", False)
    if not isinstance(tied, bool):
        raise _refuse(config_path, "tie_word_embeddings", tied, "must be true or false")
    arrays = convert_weights(CheckpointTensors(folder), params, quant, tied)
    tokenizer = tokenizer_entry(folder, config)
    extra = {"imported_from": {"format": "huggingface", "architectures": config.get("architectures"),
                               "model_type": "bitnet", **quant, "tie_word_embeddings": tied}}
    if tokenizer is not None:
        extra["tokenizer"] = tokenizer
    ternary = {k.removesuffix("_packed"): "ternary" for k in arrays if k.endswith("_packed")}
    precision = {"precision": "ternary", "packed": True,
                 "quantizer": {"threshold": "absmean", "delta": 0.7, "sparsity": 0.0, "per_channel": False},
                 "weights": {**ternary, "lm_head.weight": "fp16"}}
    name = folder.resolve().name or "bitnet"
    out = write_package(
        output, source=zoo_path("bitnet").read_text(encoding="utf-8"), source_file="bitnet.tdsl", zoo_name="bitnet",
        entry=ENTRY, params=params, pipeline=PIPELINE, arrays=arrays, precision=precision, name=name,
        description=f"`{name}`, a Hugging Face BitNetForCausalLM ({quant['linear_class']}, "
                    f"{quant['quantization_mode']}) imported by `tdsl import`.",
        extra_config=extra, extra_files={TOKENIZER_FILE: folder / TOKENIZER_FILE} if tokenizer else {},
        overwrite=overwrite)
    n_params = sum(int(np.prod(a.shape)) * (4 if k.endswith("_packed") else 1) for k, a in arrays.items())
    size = (out / "model.safetensors").stat().st_size
    return (f"imported {folder} as {out}: BitNetDecoder d={params['d']} layers={params['layers']} "
            f"heads={params['heads']}/{params['kv_heads']} hidden={params['hidden']} vocab={params['vocab']} "
            f"({'relu2-gated' if params['gated'] else 'swiglu'} MLP, rope theta {params['base']:g}, "
            f"{'tied' if tied else 'separate'} head), {quant['linear_class']}/{quant['quantization_mode']} "
            f"weights; {n_params:,} parameters in {size:,} bytes; "
            f"tokenizer: {'tokenizer.json' if tokenizer else 'none (byte-level ids)'}")
