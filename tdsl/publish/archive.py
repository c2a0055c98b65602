"""The package as bytes: its file list, a deterministic .tar.gz, SHA256SUMS, safe extraction.

Determinism: entries sorted by path, mtime 0, uid/gid 0 with empty owner names, modes 0644
(files) and 0755 (folders), PAX format, and a gzip header without name or time. The same
package therefore archives to the same bytes (for a given zlib), so a re-published release
can recognise its own assets by checksum.

Extraction is the attack surface: a downloaded tar is checked member by member before
anything is written, and only plain files and folders under one top folder are accepted.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Iterable

from tdsl.errors import TdslError

REQUIRED_FILES = ("model.safetensors", "config.json", "README.md")
SKIPPED_DIRS = (".git", ".cache")  # VCS data and huggingface_hub's local_dir metadata
SUMS_NAME = "SHA256SUMS"


def check_package(package_dir: str | os.PathLike[str]) -> Path:
    """The package folder as a Path, or a TdslError naming what is missing."""
    root = Path(package_dir)
    if not root.is_dir():
        raise TdslError(f"{root}: not a folder (expected a model package folder)")
    missing = [n for n in REQUIRED_FILES if not (root / n).is_file()]
    if missing:
        raise TdslError(f"{root}: not a model package, missing {', '.join(missing)}")
    return root


def package_files(package_dir: Path) -> list[str]:
    """Relative POSIX paths of the package's files, sorted; the one list both uploaders use."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(package_dir):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        for name in filenames:
            full = Path(dirpath) / name
            if not full.is_file():
                raise TdslError(f"{full}: not a regular file; a package holds plain files only")
            out.append(full.relative_to(package_dir).as_posix())
    return sorted(out)


def build_tarball(package_dir: Path, out_path: Path) -> None:
    """Write `package_dir` as `<name>/...` into a deterministic .tar.gz at `out_path`."""
    top = package_dir.name
    files = package_files(package_dir)
    dirs = sorted({str(PurePosixPath(f).parent) for f in files} - {"."})
    with open(out_path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(_info(top, tarfile.DIRTYPE, 0o755))
            for d in dirs:
                tar.addfile(_info(f"{top}/{d}", tarfile.DIRTYPE, 0o755))
            for rel in files:
                src = package_dir / rel
                info = _info(f"{top}/{rel}", tarfile.REGTYPE, 0o644)
                info.size = src.stat().st_size
                with open(src, "rb") as f:
                    tar.addfile(info, f)


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def format_sums(sums: dict[str, str]) -> str:
    """`sha256sum` format: `<hex>  <name>` per line, sorted by name."""
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(sums.items()))


def parse_sums(text: str, source: str) -> dict[str, str]:
    """Parse a SHA256SUMS text (binary-mode `*name` accepted); errors name `source`."""
    sums: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition(" ")
        name = name[1:] if name.startswith((" ", "*")) else name
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()) or not name:
            raise TdslError(f"{source}:{n}: not a sha256sum line: {line!r}")
        if "/" in name or "\\" in name or name in (".", ".."):
            raise TdslError(f"{source}:{n}: file name {name!r} is not a plain file name")
        sums[name] = digest.lower()
    if not sums:
        raise TdslError(f"{source}: lists no files")
    return sums


def copy_verified(stream: Iterable[bytes], dest: Path, expected: str, source: str) -> None:
    """Write `stream` to `dest` and check its sha256; on a mismatch delete it and raise."""
    h = hashlib.sha256()
    with open(dest, "wb") as f:
        for block in stream:
            h.update(block)
            f.write(block)
    if h.hexdigest() != expected:
        dest.unlink()
        raise TdslError(f"{source}: checksum mismatch: SHA256SUMS says {expected}, "
                        f"the download hashes to {h.hexdigest()}; refusing it")


def safe_extract(tar_path: Path, dest: Path, source: str) -> Path:
    """Extract a package tarball into the empty folder `dest`; return its top folder.

    Refuses, before writing anything: absolute names, `..`, anything but plain files and
    folders (symlinks, hardlinks, devices, fifos), members outside one top folder, and
    duplicate names.
    """
    try:
        with tarfile.open(tar_path, mode="r:gz") as tar:
            members = tar.getmembers()
            top = _check_members(members, source)
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as e:
        raise TdslError(f"{source}: not a readable .tar.gz ({e})") from None
    return dest / top


def _check_members(members: list[tarfile.TarInfo], source: str) -> str:
    tops: set[str] = set()
    seen: set[str] = set()
    for m in members:
        name = m.name
        if not (m.isfile() or m.isdir()):
            kind = "link" if (m.issym() or m.islnk()) else "special file"
            raise TdslError(f"{source}: member {name!r} is a {kind}; a package holds plain files only")
        p = PurePosixPath(name)
        if name.startswith(("/", "\\")) or p.is_absolute() or (len(name) > 1 and name[1] == ":"):
            raise TdslError(f"{source}: member {name!r} has an absolute path")
        if ".." in p.parts or "\\" in name:
            raise TdslError(f"{source}: member {name!r} leaves the extraction folder")
        norm = p.as_posix().rstrip("/")
        if norm in seen:
            raise TdslError(f"{source}: member {name!r} appears twice")
        seen.add(norm)
        tops.add(p.parts[0] if p.parts else "")
    if len(tops) != 1 or "" in tops or "." in tops:
        raise TdslError(f"{source}: expected one top folder, found {sorted(tops) or 'none'}")
    return tops.pop()


def fresh_dir_beside(target: Path) -> Path:
    """An empty temporary folder next to `target`, so a rename into place stays on one disk."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial"))


def replace_dir(src: Path, target: Path) -> None:
    """Move folder `src` to `target`, replacing a previous `target` only once `src` is complete."""
    if target.exists() or target.is_symlink():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
        os.replace(target, old / "x")
        os.replace(src, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, target)

