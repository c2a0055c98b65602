"""Tiny Hugging Face BitNet checkpoints that transformers itself writes, and transformers'
own model read back from them: the oracle the importer is compared with.

Two layouts, as published checkpoints have them: `packed` (`linear_class="bitlinear"`: the
float projections are ternarised with the absmean rule, packed by transformers'
`pack_weights` into `uint8 [out/4, in]` with a `weight_scale` BitLinear divides by, and the
model holding BitLinear modules is written by `save_pretrained`), and `online`
(`autobitlinear`/`online`: float master weights). The reference model is built as
`from_pretrained` builds a quantised BitNet (`replace_with_bitnet_linear`, then the
checkpoint's tensors): `from_pretrained` itself insists on the `accelerate` package for any
BitNet quantisation config, which this environment does not have. `torch.compile` on
BitLinear's helpers is disabled (eager runs the same operations).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

CORPUS = ("The assert statement is a convenient way to insert debugging assertions into a program. "
          "Simple statements are comprised within a single logical line. Several simple statements may "
          "occur on a single line separated by semicolons. The import statement finds a module, loads "
          "and initializes it if necessary, and defines a name in the local namespace.")
SIZES = {"vocab": 300, "d": 32, "layers": 2, "heads": 4, "kv_heads": 2, "hidden": 64}


def _quant_config(layout: str) -> dict[str, str]:
    if layout == "packed":
        return {"quant_method": "bitnet", "linear_class": "bitlinear", "quantization_mode": "offline"}
    return {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "online"}


def write_tokenizer(folder: Path, vocab: int) -> None:
    """A byte-level BPE tokenizer.json trained on CORPUS by the `tokenizers` library."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab - 2, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([CORPUS] * 4, trainer)
    tok.save(str(folder / "tokenizer.json"))


def make_checkpoint(folder: Path, layout: str, *, tied: bool = True, seed: int = 0, tokenizer: bool = True,
                    **sizes: int) -> Path:
    """Write a random BitNetForCausalLM folder in `layout` ("packed" or "online")."""
    from transformers import BitNetConfig, BitNetForCausalLM
    from transformers.integrations.bitnet import pack_weights, replace_with_bitnet_linear
    from transformers.utils.quantization_config import BitNetQuantConfig

    s = {**SIZES, **sizes}
    qc = _quant_config(layout)
    config = BitNetConfig(vocab_size=s["vocab"], hidden_size=s["d"], intermediate_size=s["hidden"],
                          num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                          num_key_value_heads=s["kv_heads"], max_position_embeddings=256,
                          tie_word_embeddings=tied, bos_token_id=0, eos_token_id=1, quantization_config=qc)
    torch.manual_seed(seed)
    model = BitNetForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif "embed_tokens" in name or "lm_head" in name:
                p.normal_(0.0, 1.0)
            else:
                p.normal_(0.0, 0.5)
    if layout == "packed":
        floats = {k: v.clone() for k, v in model.state_dict().items()}
        replace_with_bitnet_linear(model, modules_to_not_convert=["lm_head"], quantization_config=BitNetQuantConfig(**qc))
        model.to_empty(device="cpu")
        state = {}
        for key, w in floats.items():
            if key.endswith("_proj.weight"):
                scale = 1.0 / w.abs().mean().clamp(min=1e-5)
                state[key] = pack_weights((w * scale).round().clamp(-1, 1))
                state[key.replace(".weight", ".weight_scale")] = scale.reshape(1)
            else:
                state[key] = w
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
        if tied:
            model.tie_weights()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    if tokenizer:
        write_tokenizer(folder, s["vocab"])
    return folder


def load_reference(folder: Path) -> torch.nn.Module:
    """transformers' BitNetForCausalLM with the folder's quantised layers and tensors."""
    from safetensors.torch import load_file
    from transformers import BitNetConfig, BitNetForCausalLM
    from transformers.integrations.bitnet import replace_with_bitnet_linear
    from transformers.models.bitnet.modeling_bitnet import BitNetRotaryEmbedding
    from transformers.utils.quantization_config import BitNetQuantConfig

    config = BitNetConfig.from_pretrained(folder)
    qc = config.quantization_config
    qc = qc.to_dict() if hasattr(qc, "to_dict") else dict(qc)
    model = BitNetForCausalLM(config)
    replace_with_bitnet_linear(model, modules_to_not_convert=["lm_head"],
                               quantization_config=BitNetQuantConfig(**{k: v for k, v in qc.items()
                                                                        if k != "quant_method"}))
    model.to_empty(device="cpu")
    model.model.rotary_emb = BitNetRotaryEmbedding(config)  # its buffers are not in the checkpoint
    missing, unexpected = model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
    assert not unexpected and set(missing) <= ({"lm_head.weight"} if config.tie_word_embeddings else set())
    if config.tie_word_embeddings:
        model.tie_weights()
    return model.eval()


@pytest.fixture(autouse=True, scope="session")
def _eager_bitlinear() -> Iterator[None]:
    import torch._dynamo

    with torch._dynamo.config.patch(disable=True):
        yield


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """make_checkpoint, cached per arguments for the session."""
    made: dict[tuple, Path] = {}

    def get(layout: str, **kwargs: object) -> Path:
        key = (layout, tuple(sorted(kwargs.items())))
        if key not in made:
            made[key] = make_checkpoint(tmp_path_factory.mktemp(f"hf-{layout}"), layout, **kwargs)
        return made[key]

    return get


@pytest.fixture(scope="session")
def reference() -> Callable[[Path], torch.nn.Module]:
    return load_reference


def logits_of(model: torch.nn.Module, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(ids).long()).logits.float().numpy()


@pytest.fixture(scope="session")
def reference_logits() -> Callable[[torch.nn.Module, np.ndarray], np.ndarray]:
    return logits_of
