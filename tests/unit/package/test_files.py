"""Atomic writes: complete or absent, never a temporary left behind, and the mode of a plain open()."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tdsl.package.files import write_atomic, write_with


def test_written_file_has_the_mode_of_a_plain_open(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    out = write_atomic(tmp_path / "sub" / "a.txt", "héllo")
    assert out.read_text(encoding="utf-8") == "héllo"
    assert (out.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)
    assert write_atomic(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")

    def boom(tmp: str) -> None:
        Path(tmp).write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_with(target, boom)
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["model.onnx"]


def test_a_saved_package_has_plain_modes(lenet_package: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    (tmp_path / "d").mkdir()
    want_file, want_dir = plain.stat().st_mode & 0o777, (tmp_path / "d").stat().st_mode & 0o777
    assert lenet_package.stat().st_mode & 0o777 == want_dir
    assert {f.name: f.stat().st_mode & 0o777 for f in lenet_package.iterdir()} == \
        {f.name: want_file for f in lenet_package.iterdir()}


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    import hashlib

    from tdsl.package.files import sha256_file

    data = bytes(range(256)) * 9000  # more than one 1 MiB block
    (tmp_path / "blob").write_bytes(data)
    assert sha256_file(tmp_path / "blob") == hashlib.sha256(data).hexdigest()
