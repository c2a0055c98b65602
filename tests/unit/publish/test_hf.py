"""Hugging Face Hub over real HTTP: one-commit upload, cached download, failures, secrecy."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tdsl.errors import TdslError
from tdsl.publish.hf import fetch_hf, from_pretrained_path, publish_hf

from fake_hub import TOKEN  # loaded by conftest.py


def test_round_trip_in_one_commit(package: Path, onnx_file: Path, hub: Any, fast: Any, tmp_path: Path,
                                  tree: Any) -> None:
    commit = publish_hf(package, "me/lenet", token=TOKEN, extra_files=[onnx_file], endpoint=hub.url,
                        message="first upload", policy=fast)
    assert [c["summary"] for c in hub.state.commit_log] == ["first upload"]
    assert commit.oid == hub.state.repos["me/lenet"]["branches"]["main"]
    assert hub.state.lfs, "the safetensors file should travel by LFS"
    got = from_pretrained_path("me/lenet", token=TOKEN, endpoint=hub.url, cache_dir=tmp_path / "c", policy=fast)
    expected = tree(package)
    expected["model.onnx"] = onnx_file.read_bytes()
    got_files = tree(got)
    got_files.pop(".gitattributes")
    assert got_files == expected
    assert hub.unhandled == []
    assert hub.requests("GET", r"/api/models/me/lenet/(revision|tree)/main") and hub.requests("GET", "/resolve/")

