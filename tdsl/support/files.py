"""Writing a file or replacing a folder so that a crash never leaves half of it, and hashing
a file: one implementation each.

The data goes to a temporary file beside the target, which is renamed into place only when
complete. The result gets the mode a plain `open(path, "w")` would give (0666 less the
umask), not the 0600 of `tempfile.mkstemp`.

A folder (a package, a checkpoint) is staged complete beside its target and then swapped in
by `replace_folder`, so that the target names a complete copy, old or new, at every instant
(a reader never finds nothing, even if the writer is killed at any point).
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from tdsl.errors import TdslError


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
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name[:200]}.", suffix=".tmp")
    except OSError as e:  # a file where a folder must be, a name too long, no permission
        raise TdslError(f"{dest}: cannot write here ({e.strerror}: {e.filename})") from None
    os.close(fd)
    try:
        writer(tmp)
        os.chmod(tmp, plain_mode())
        os.replace(tmp, dest)
    except IsADirectoryError:
        Path(tmp).unlink(missing_ok=True)
        raise TdslError(f"{dest}: a folder is there; a file cannot replace it") from None
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


EXCHANGE = True
"""Swap folders with one system call where the system has it (tests turn it off to check the
rename-aside fallback that other systems and file systems get)."""

_RENAME_EXCHANGE = 2  # linux/fs.h; macOS's RENAME_SWAP has the same value
_AT_FDCWD = -100


def _swap(a: bytes, b: bytes) -> int:
    """The raw exchange call: 0, or -1 with errno set (-2: the C library has none)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        return int(libc.renameat2(_AT_FDCWD, a, _AT_FDCWD, b, _RENAME_EXCHANGE))
    if sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        return int(libc.renamex_np(a, b, _RENAME_EXCHANGE))
    return -2


def exchange(a: Path, b: Path) -> bool:
    """Swap the two existing paths `a` and `b` in one atomic step; False where the system or
    the file system cannot (the caller then falls back to two renames)."""
    if not EXCHANGE:
        return False
    result = _swap(os.fsencode(a), os.fsencode(b))
    if result == 0:
        return True
    err = ctypes.get_errno() if result == -1 else errno.ENOSYS
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def fsync_folder(path: Path) -> None:
    """Make a rename inside `path` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def aside_name(prefix: str) -> str:
    """A fresh name `<prefix><8 hex digits>` for a staged or set-aside folder."""
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def _siblings(dest: Path, prefix: str) -> list[Path]:
    pattern = re.compile(re.escape(prefix) + r"[0-9a-z_]{8}")
    try:
        entries = list(dest.parent.iterdir())
    except OSError:
        return []
    return [e for e in entries if pattern.fullmatch(e.name) and e.is_dir() and not e.is_symlink()]


def replace_folder(staged: Path, dest: Path, aside_prefix: str) -> None:
    """Move the complete folder `staged` to `dest`, replacing the folder there, so that `dest`
    names a complete copy (old or new) at every instant.

    Where the system swaps two paths in one step (`exchange`), `dest` goes from the old copy
    to the new one at once and `staged` then holds the old copy, which is removed. Elsewhere
    the old copy is first renamed to `dest.parent/<aside_prefix><hex>`; a crash before the
    second rename leaves no `dest`, and `recover_folder` (which every reader and writer calls
    first) renames that copy back.
    """
    if not dest.exists():
        os.replace(staged, dest)
        fsync_folder(dest.parent)
        return
    if exchange(staged, dest):
        fsync_folder(dest.parent)
        shutil.rmtree(staged, ignore_errors=True)
        return
    aside = dest.parent / aside_name(aside_prefix)
    os.replace(dest, aside)
    os.replace(staged, dest)
    fsync_folder(dest.parent)
    shutil.rmtree(aside, ignore_errors=True)


def recover_folder(dest: Path, aside_prefix: str) -> bool:
    """Where a replacing write was killed between its two renames (no `dest`, a set-aside copy
    beside it), rename the newest set-aside copy back to `dest`; True if one was restored."""
    if dest.exists() or dest.is_symlink():
        return False
    copies = _siblings(dest, aside_prefix)
    if not copies:
        return False
    newest = max(copies, key=lambda p: p.stat().st_mtime_ns)
    try:
        os.rename(newest, dest)
    except OSError:  # another process restored or wrote it meanwhile
        return dest.exists()
    fsync_folder(dest.parent)
    return True


def sweep_folders(dest: Path, *prefixes: str) -> None:
    """Remove the staged and set-aside leftovers of killed writes beside `dest`, only once
    `dest` itself is a complete copy (so the only complete copy is never removed)."""
    if not dest.is_dir():
        return
    for prefix in prefixes:
        for leftover in _siblings(dest, prefix):
            shutil.rmtree(leftover, ignore_errors=True)
