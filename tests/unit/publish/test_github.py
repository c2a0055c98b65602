"""GitHub Releases over real HTTP: round trips, re-runs, verification, failures, secrecy."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tdsl.errors import TdslError
from tdsl.publish.github import fetch_github, publish_github

from fake_github import TOKEN  # loaded by conftest.py


def test_round_trip_is_byte_for_byte(package: Path, onnx_file: Path, github: Any, gh_api: str, fast: Any,
                                     tmp_path: Path, tree: Any) -> None:
    result = publish_github(package, "acme/models", "v1", notes="First cut.", token=TOKEN,
                            extra_files=[onnx_file], base_url=gh_api, policy=fast)
    assert sorted(result.uploaded) == ["SHA256SUMS", "lenet-ternary.tar.gz", "model.onnx"]
    rel = next(iter(github.state.releases.values()))
    assert rel["draft"] is False
    assert "First cut." in rel["body"] and result.sums["lenet-ternary.tar.gz"] in rel["body"]
    got = fetch_github("acme/models", "v1", tmp_path / "out", base_url=gh_api, policy=fast)
    assert got == tmp_path / "out" / "lenet-ternary"
    expected = tree(package)
    expected["model.onnx"] = onnx_file.read_bytes()
    assert tree(got) == expected
    assert github.unhandled == []
