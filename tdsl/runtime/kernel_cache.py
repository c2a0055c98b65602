"""Keep Numba's on-disk kernel cache honest about `tdsl.runtime.activations`.

Numba keys a cached kernel on its own source file only, yet every kernel inlines
`activations.apply` from another file: after an edit there (a new activation), the cached
kernels would silently run the old definition. `drop_stale_caches()` runs before any kernel
is loaded (the modules that compile `apply` call it at import) and removes the cached kernels
of `tdsl.runtime` and `tdsl.backends.numba` when `activations.py` differs from the copy they
were built with (a stamp beside them). Imports no Numba.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]
_KERNEL_DIRS = (_PACKAGE / "runtime", _PACKAGE / "backends" / "numba")
_STAMP = "activations.stamp"


def _cache_dirs(source_dir: Path) -> list[Path]:
    """Where Numba keeps the caches of a source folder: its __pycache__, or the mirror of the
    folder under NUMBA_CACHE_DIR."""
    root = os.environ.get("NUMBA_CACHE_DIR")
    if root:
        return [Path(root) / source_dir.relative_to(source_dir.anchor)]
    return [source_dir / "__pycache__"]


def drop_stale_caches() -> bool:
    """Remove the cached kernels built with another `activations.py`; True if any were stale."""
    digest = hashlib.sha256((_PACKAGE / "runtime" / "activations.py").read_bytes()).hexdigest()
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
