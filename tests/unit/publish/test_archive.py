"""The package archive: deterministic bytes, sha256sum format, and extraction that refuses attacks."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any, Callable

import pytest

from tdsl.errors import TdslError
from tdsl.publish.archive import build_tarball, check_package, format_sums, parse_sums, safe_extract


def test_same_package_same_bytes(package: Path, tmp_path: Path) -> None:
    build_tarball(package, tmp_path / "a.tar.gz")
    (package / "README.md").touch()
    (package / "extra").mkdir()
    (package / "extra" / "notes.txt").write_text("x")
    (package / "extra" / "notes.txt").unlink()
    build_tarball(package, tmp_path / "b.tar.gz")
    assert (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b.tar.gz").read_bytes()
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["lenet-ternary", "lenet-ternary/README.md", "lenet-ternary/config.json",
                                         "lenet-ternary/model.safetensors"]
    assert {(m.mtime, m.uid, m.gid, m.uname) for m in members} == {(0, 0, 0, "")}


def test_round_trip_extract(package: Path, tmp_path: Path, tree: Any) -> None:
    build_tarball(package, tmp_path / "p.tar.gz")
    (tmp_path / "x").mkdir()
    top = safe_extract(tmp_path / "p.tar.gz", tmp_path / "x", "p.tar.gz")
    assert tree(top) == tree(package)


def test_missing_required_file_is_named(package: Path) -> None:
    (package / "config.json").unlink()
    with pytest.raises(TdslError, match="not a model package, missing config.json"):
        check_package(package)


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = link
        data = b"payload" if kind == tarfile.REGTYPE else b""
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return add


@pytest.mark.parametrize("members, message", [
    ([_member("/etc/passwd")], "absolute path"),
    ([_member("pkg/../../escape.txt")], "leaves the extraction folder"),
    ([_member("pkg/link", tarfile.SYMTYPE, "/etc/passwd")], "is a link"),
    ([_member("pkg/a"), _member("pkg/hard", tarfile.LNKTYPE, "pkg/a")], "is a link"),
    ([_member("pkg/dev", tarfile.CHRTYPE)], "is a special file"),
    ([_member("pkg/fifo", tarfile.FIFOTYPE)], "is a special file"),
    ([_member("pkg/a"), _member("other/b")], "expected one top folder"),
    ([_member("pkg/a"), _member("pkg/a")], "appears twice"),
])
def test_hostile_tarballs_are_refused_before_writing(tmp_path: Path, members: list[Any], message: str) -> None:
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for add in members:
            add(tar)
    dest = tmp_path / "x"
    dest.mkdir()
    with pytest.raises(TdslError, match=message):
        safe_extract(path, dest, "evil.tar.gz")
    assert list(dest.iterdir()) == [] and not (tmp_path / "escape.txt").exists()


def test_not_a_tarball(tmp_path: Path) -> None:
    (tmp_path / "p.tar.gz").write_bytes(b"not gzip")
    (tmp_path / "x").mkdir()
    with pytest.raises(TdslError, match="p.tar.gz: not a readable .tar.gz"):
        safe_extract(tmp_path / "p.tar.gz", tmp_path / "x", "p.tar.gz")


def test_sums_format_round_trips_and_rejects_garbage() -> None:
    sums = {"b.onnx": "0" * 64, "a.tar.gz": "f" * 64}
    text = format_sums(sums)
    assert text.splitlines()[0] == f"{'f' * 64}  a.tar.gz"
    assert parse_sums(text, "S") == sums
    assert parse_sums(f"{'a' * 64} *bin.tar.gz\n", "S") == {"bin.tar.gz": "a" * 64}
    with pytest.raises(TdslError, match="S:1: not a sha256sum line"):
        parse_sums("abc  file\n", "S")
    with pytest.raises(TdslError, match="is not a plain file name"):
        parse_sums(f"{'a' * 64}  ../etc/passwd\n", "S")
