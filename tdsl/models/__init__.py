"""The model zoo: DSL sources shipped as package data, found by name.

`tdsl.compile("resnet18", params=...)` resolves a zoo name to its `.tdsl` file here;
the files live beside this module, so a path is always a real file the parser can open.
"""
from __future__ import annotations

from pathlib import Path

from tdsl.errors import UnknownNameError, did_you_mean

ZOO: dict[str, str] = {
    "resnet18": "resnet18.tdsl",
    "mobilenetv2": "mobilenetv2.tdsl",
    "mlp": "mlp.tdsl",
    "lenet": "lenet.tdsl",
    "mnist1d_cnn": "mnist1d_cnn.tdsl",
    "mnist1d_mlp": "mnist1d_mlp.tdsl",
    "bitnet": "bitnet.tdsl",
    "bert_tiny": "bert_tiny.tdsl",
}


def list_models() -> list[str]:
    """The zoo's model names, sorted."""
    return sorted(ZOO)


def is_zoo_name(name: str) -> bool:
    """Whether `name` is exactly the name of a zoo model (not a path or source text)."""
    return name in ZOO


def zoo_path(name: str) -> Path:
    """The `.tdsl` file of zoo model `name`; an unknown name is a user error."""
    if name not in ZOO:
        suggestion = did_you_mean(name.lower(), ZOO)
        raise UnknownNameError(
            f"unknown zoo model '{name}'{suggestion}; available models: "
            + ", ".join(list_models()))
    return Path(__file__).parent / ZOO[name]
