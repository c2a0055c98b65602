"""A damaged or unsupported Hugging Face checkpoint: `tdsl import` exits 1 with one error
line naming the tensor or the config key, and leaves nothing behind (no package, no
temporary folder)."""
from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from tdsl.tools.tdsl_cli import main


def _header(path: Path) -> tuple[dict, int]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), n


def _rewrite(path: Path, edit: Callable[[dict], None]) -> None:
    """Edit the safetensors header in place (the data bytes stay as they are)."""
    data = path.read_bytes()
    header, n = _header(path)
    edit(header)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n:])


def _config(folder: Path, **changes: object) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    (folder / "config.json").write_text(json.dumps(cfg))


def _flip_code_3(folder: Path) -> None:
    path = folder / "model.safetensors"
    header, n = _header(path)
    begin = header["model.layers.1.mlp.up_proj.weight"]["data_offsets"][0]
    data = bytearray(path.read_bytes())
    data[8 + n + begin] = 0xFF
    path.write_bytes(bytes(data))


def _truncate(folder: Path) -> None:
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])


def _rename(old: str, new: str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        _rewrite(folder / "model.safetensors", lambda h: h.__setitem__(new, h.pop(old)))
    return edit


def _reshape(name: str, shape: list[int]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        _rewrite(folder / "model.safetensors", lambda h: h[name].__setitem__("shape", shape))
    return edit


CASES = {
    "missing-tensor": ("packed", _rename("model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.kk.weight"),
                       "tensor 'model.layers.0.self_attn.k_proj.weight' missing"),
    "extra-tensor": ("online", _rename("model.norm.weight", "model.norm.bias"), "tensor 'model.norm.weight' missing"),
    "wrong-shape": ("online", _reshape("model.layers.0.mlp.ffn_sub_norm.weight", [8, 8]),
                    r"tensor 'model.layers.0.mlp.ffn_sub_norm.weight': shape \(8, 8\), the config implies \(64,\)"),
    "code-3": ("packed", _flip_code_3, "tensor 'model.layers.1.mlp.up_proj.weight'.*code 3"),
    "truncated": ("packed", _truncate, "lie outside the file"),
    "float-checkpoint": ("online", lambda f: _config(f, quantization_config=None), "key 'quantization_config'"),
    "gelu": ("online", lambda f: _config(f, hidden_act="gelu"), "key 'hidden_act' is 'gelu'"),
    "bias": ("packed", lambda f: _config(f, attention_bias=True), "key 'attention_bias'"),
    "autobitlinear-offline": ("online", lambda f: _config(f, quantization_config={
        "quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "offline"}),
        "key 'quantization_config.linear_class' is 'autobitlinear/offline'"),
    "not-bitnet": ("online", lambda f: _config(f, model_type="llama"), "key 'model_type' is 'llama'"),
    "bad-json": ("online", lambda f: (f / "config.json").write_text("{oops"), "config.json: malformed JSON"),
    "bad-tokenizer": ("online", lambda f: (f / "tokenizer.json").write_text("{}"), "tokenizer.json: not a tokenizer"),
    "no-weights": ("online", lambda f: (f / "model.safetensors").unlink(), "no model.safetensors"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_checkpoint_is_one_error_and_leaves_nothing(case: str, checkpoint, tmp_path: Path, capsys) -> None:
    import re

    layout, damage, message = CASES[case]
    src = tmp_path / "src"
    shutil.copytree(checkpoint(layout), src)
    damage(src)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    capsys.readouterr()
    assert main(["import", str(src), "-o", str(out_dir / "pkg")]) == 1
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Traceback" not in err and err.count("\n") == 1
    assert list(out_dir.iterdir()) == []
