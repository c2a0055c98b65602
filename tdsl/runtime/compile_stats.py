"""Compile time apart from run time, for benchmarks: seconds Numba spent compiling.

A listener on Numba's "numba:compile" event, installed once at import, sums the wall time of
outermost compilations (nested compilations of callees are inside their caller's interval).
Loading a kernel from Numba's on-disk cache is not a compilation and is not counted; the
dispatchers' `stats.cache_hits` / `stats.cache_misses` say which happened.
"""
from __future__ import annotations

from numba.core import event

_listener = event.TimingListener()
event.register("numba:compile", _listener)


def compile_seconds() -> float:
    """Total seconds this process has spent in Numba compilation (any dispatcher) so far."""
    return _listener.duration if _listener.done else 0.0


def cache_counts(dispatchers: list) -> tuple[int, int]:
    """(cache hits, cache misses) summed over the given Numba dispatchers' signatures."""
    hits = sum(sum(d.stats.cache_hits.values()) for d in dispatchers)
    misses = sum(sum(d.stats.cache_misses.values()) for d in dispatchers)
    return hits, misses
