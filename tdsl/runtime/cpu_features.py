"""Which CPU kernel path runs: AVX-512 VNNI ("vnni"), AVX2 ("avx2") or plain Numba ("portable").

The VNNI kernels call `llvm.x86.avx512.vpdpbusd.512` directly, the AVX2 kernels
`llvm.x86.avx2.pmadd.ub.sw` / `pmadd.wd`; on a CPU without the feature they would not even
compile (LLVM aborts the process) or would die with SIGILL, so each is chosen only when the
host has the feature *and* Numba compiles for it (a `NUMBA_CPU_NAME`/`NUMBA_CPU_FEATURES`
override that drops it, e.g. for portable caches, also rules the path out).

The path is resolved, first match wins, from:
  1. the `path=` argument of a kernel entry point,
  2. `set_kernel_path(...)` / `forced_kernel_path(...)` (what tests use),
  3. the environment variable `TDSL_KERNEL_PATH=portable|avx2|vnni|auto` (read at each call),
  4. auto: "vnni" if available, else "avx2" if available, else "portable".
Asking for "vnni" or "avx2" where it is not available is a `TdslError`, never a silent fallback.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

from tdsl.errors import TdslError

ENV_VAR = "TDSL_KERNEL_PATH"
PATHS: tuple[str, ...] = ("portable", "avx2", "vnni")
_CHOICES: tuple[str, ...] = ("auto", "portable", "avx2", "vnni")
_VNNI_FEATURES = ("avx512f", "avx512bw", "avx512vnni")
_AVX2_FEATURES = ("avx2",)

_forced: str | None = None


def _usable(features: tuple[str, ...]) -> bool:
    """True if this CPU has all LLVM `features` and Numba generates code that may use them
    (`tdsl.runtime.isa.usable`, the one place that answers it)."""
    from tdsl.runtime.isa import usable

    return usable(features)


def has_avx512_vnni() -> bool:
    """True if this CPU has AVX-512 F/BW/VNNI and Numba generates code that may use them."""
    return _usable(_VNNI_FEATURES)


def has_avx2() -> bool:
    """True if this CPU has AVX2 and Numba generates code that may use it."""
    return _usable(_AVX2_FEATURES)


def _check_choice(path: str, where: str) -> str:
    if path not in _CHOICES:
        raise TdslError(f"unknown kernel path {path!r} ({where}): valid paths are "
                        + ", ".join(f"'{p}'" for p in _CHOICES))
    return path


def set_kernel_path(path: str | None) -> str | None:
    """Force the kernel path for this process ("portable", "avx2", "vnni", "auto" or None to unset).

    Returns the previous forced value so a caller can restore it.
    """
    global _forced
    if path is not None:
        _check_choice(path, "set_kernel_path")
    previous, _forced = _forced, path
    return previous


@contextlib.contextmanager
def forced_kernel_path(path: str | None) -> Iterator[None]:
    """`with forced_kernel_path("portable"): ...` runs the block on that path."""
    previous = set_kernel_path(path)
    try:
        yield
    finally:
        set_kernel_path(previous)


def requested_path(requested: str | None = None) -> str:
    """The choice before "auto" is resolved: the argument, else the forced path, else the
    environment's, else "auto" (the NHWC runtime maps "auto" to its fastest micro-kernel)."""
    if requested is not None:
        return _check_choice(requested, "path= argument")
    if _forced is not None:
        return _forced
    return _check_choice(os.environ.get(ENV_VAR, "auto").strip().lower() or "auto", f"environment variable {ENV_VAR}")


def kernel_path(requested: str | None = None) -> str:
    """The path ("portable", "avx2" or "vnni") a kernel call runs on; see the module docstring."""
    choice = requested_path(requested)
    if choice == "auto":
        return "vnni" if has_avx512_vnni() else "avx2" if has_avx2() else "portable"
    if choice == "vnni" and not has_avx512_vnni():
        raise TdslError("kernel path 'vnni' was requested but this CPU (or Numba's target "
                        "CPU) lacks AVX-512 VNNI; use 'avx2', 'portable' or 'auto'")
    if choice == "avx2" and not has_avx2():
        raise TdslError("kernel path 'avx2' was requested but this CPU (or Numba's target "
                        "CPU) lacks AVX2; use 'portable' or 'auto'")
    return choice
