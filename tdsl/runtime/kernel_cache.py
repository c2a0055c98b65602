"""Keep Numba's on-disk kernel cache honest across the kernel files.

Numba keys a cached kernel on its own source file only, yet kernels inline helpers from other
files (`activations.apply`, `conv2d.im2col_row`, `conv_int8.tap_range`, the VNNI codegen of
`gemm`): after an edit there, cached kernels would silently run the old code (seen: a new
activation came back as the identity). `drop_stale_caches()` runs before any kernel is loaded
(the `tdsl.runtime` package calls it at import: a script that imported only `nhwc_int8` once
timed a stale depthwise kernel) and removes the cached kernels of `tdsl.runtime`
and `tdsl.backends.numba` when any source file of those two folders differs from the set they
were built with (a stamp beside them). An installed tdsl never changes, so only a working
copy pays the recompilation. Imports no Numba.
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]
_KERNEL_DIRS = (_PACKAGE / "runtime", _PACKAGE / "backends" / "numba")
_STAMP = "kernel-sources.stamp"


def _cache_dirs(source_dir: Path) -> list[Path]:
    """Where Numba keeps the caches of a source folder: its __pycache__, or the mirror of the
    folder under NUMBA_CACHE_DIR."""
    root = os.environ.get("NUMBA_CACHE_DIR")
    if root:
        return [Path(root) / source_dir.relative_to(source_dir.anchor)]
    return [source_dir / "__pycache__"]


@functools.cache
def drop_stale_caches() -> bool:
    """Remove the cached kernels built from other kernel sources; True if any were stale.
    Once per process (cached): the `tdsl.runtime` package's import calls it."""
    h = hashlib.sha256()
    for source in sorted(p for folder in _KERNEL_DIRS for p in folder.glob("*.py")):
        h.update(source.name.encode() + b"\0" + source.read_bytes())
    digest = h.hexdigest()
    stale = False
    for source_dir in _KERNEL_DIRS:
        for cache in _cache_dirs(source_dir):
            stamp = cache / _STAMP
            try:
                if stamp.read_text() == digest:
                    continue
            except OSError:
                pass
            if not cache.is_dir():
                continue
            try:
                for f in [*cache.glob("*.nbi"), *cache.glob("*.nbc")]:
                    f.unlink(missing_ok=True)
                    stale = True
                stamp.write_text(digest)
            except OSError:  # a read-only install: Numba caches elsewhere then
                continue
    return stale
