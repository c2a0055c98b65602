"""Writing a file so that a failure never leaves half of it, and hashing one: one implementation each.

The data goes to a temporary file beside the target, which is renamed into place only when
complete. The result gets the mode a plain `open(path, "w")` would give (0666 less the
umask), not the 0600 of `tempfile.mkstemp`.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def plain_mode(folder: bool = False) -> int:
    """The mode `open(path, "w")` (or `mkdir`) gives under the current umask."""
    return (0o777 if folder else 0o666) & ~_umask()


def write_with(path: str | os.PathLike[str], writer: Callable[[str], None]) -> Path:
    """Call `writer(tmp_path)` to write the file, then rename it to `path` (folders are made)."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer(tmp)
        os.chmod(tmp, plain_mode())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to `path` atomically, flushed to disk before the rename."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())

    return write_with(path, write)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
