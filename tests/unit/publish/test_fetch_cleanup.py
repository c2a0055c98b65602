"""A fetch that fails leaves no new folder behind, and keeps the folders that were there."""
from __future__ import annotations

from pathlib import Path

import pytest

from tdsl.errors import TdslError
from tdsl.publish.fetch import fetch_and_load


def _failing(staging: Path) -> Path:
    (staging / "half").mkdir()
    raise TdslError("the download broke off")


def test_failed_fetch_removes_the_folders_it_made(tmp_path: Path) -> None:
    out = tmp_path / "models" / "deep"
    with pytest.raises(TdslError, match="broke off"):
        fetch_and_load(_failing, out)
    assert list(tmp_path.iterdir()) == []


def test_failed_fetch_keeps_an_existing_output_folder(tmp_path: Path) -> None:
    out = tmp_path / "models"
    out.mkdir()
    (out / "other").write_text("keep me")
    with pytest.raises(TdslError):
        fetch_and_load(_failing, out)
    assert sorted(p.name for p in out.iterdir()) == ["other"]
