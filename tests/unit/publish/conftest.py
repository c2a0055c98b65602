"""Fixtures for the publish tests: a small realistic package and the two loopback fakes.

The fakes are test helpers beside this file; with pytest's importlib mode this folder is not
on sys.path, so they are loaded by path here and reached through fixtures.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from tdsl.publish.card import write_model_card
from tdsl.publish.retry import NetPolicy

_HERE = Path(__file__).parent


def _load(name: str) -> Any:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _HERE / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


fake_http = _load("fake_http")
fake_github = _load("fake_github")
fake_hub = _load("fake_hub")

FAST = NetPolicy(timeout=1.0, attempts=3, backoff=0.01, max_backoff=0.02, github_write_interval=0.0)


@pytest.fixture
def fast() -> NetPolicy:
    return FAST


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A model package as the saver writes it: packed weights, config and a card."""
    from safetensors.numpy import save_file

    root = tmp_path / "lenet-ternary"
    root.mkdir()
    rng = np.random.default_rng(0)
    save_file({"fc1.weight_packed": rng.integers(0, 255, (16, 8), dtype=np.uint8),
               "fc1.scale": rng.random(16).astype(np.float32),
               "fc2.bias": np.zeros(10, dtype=np.float32)}, str(root / "model.safetensors"))
    (root / "config.json").write_text(json.dumps({"format": "tdsl-package", "version": 1,
                                                  "source": "layer LeNet { }"}, indent=2))
    write_model_card(root / "README.md", name="lenet-ternary", description="LeNet, ternary weights.",
                     architecture="conv-conv-fc-fc", precision_policy="ternary fc1, fp32 fc2",
                     memory_table_md="| fp32 | packed |\n|---|---|\n| 2 KiB | 160 B |", accuracy=0.97,
                     dataset="mnist", how_to_load="from_pretrained_path('me/lenet')")
    return root


class RealPackage:
    """A saved ternary LeNet (8x8 inputs): the frozen model, its package folder, its ONNX export,
    an input batch and the frozen module's output on it (the reference for round trips)."""

    def __init__(self, root: Path) -> None:
        import torch

        import tdsl
        from tdsl.backends.onnx import export_onnx

        self.frozen = tdsl.quantize("lenet", precision="ternary", params={"image_size": 8})
        self.path = root / "lenet-ternary"
        tdsl.save(self.frozen, self.path)
        self.onnx = export_onnx(self.frozen, root / "onnx" / "model.onnx").path
        self.x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
        with torch.no_grad():
            self.y = self.frozen.module(torch.from_numpy(self.x))


@pytest.fixture(scope="session")
def lenet_package(tmp_path_factory: pytest.TempPathFactory) -> RealPackage:
    """Built once per session; tests must copy `.path` before changing anything in it."""
    return RealPackage(tmp_path_factory.mktemp("real-package"))


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    p = tmp_path / "model.onnx"
    p.write_bytes(b"\x08\x07onnx-bytes" * 50)
    return p


@pytest.fixture
def github() -> Iterator[Any]:
    server = fake_github.start()
    try:
        yield server
    finally:
        server.__exit__(None, None, None)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """The fake Hub, with the library's Xet transfer off (the fake speaks LFS) and a private cache."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_PROGRESS_BARS", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored login from the machine
    server = fake_hub.start()
    try:
        yield server
    finally:
        server.__exit__(None, None, None)


@pytest.fixture
def gh_api(github: Any) -> str:
    return f"{github.url}/api/v3"


@pytest.fixture
def tree() -> Any:
    """Every file under a folder by relative path, for byte-for-byte comparisons."""
    return lambda root: {p.relative_to(root).as_posix(): p.read_bytes()
                         for p in sorted(Path(root).rglob("*")) if p.is_file()}
