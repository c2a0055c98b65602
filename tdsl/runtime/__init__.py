"""The deployment runtime: packed ternary storage and the Numba kernels (CPU and CUDA) that
run a deployed plan's steps; `tdsl.backends.numba` turns a plan into calls of them.

Everything under `tdsl.runtime` imports numpy and numba only, never torch, so a packaged
model runs where torch is not installed. The packed layout is defined once, in
`tdsl.runtime.packing` (and docs/PACKED_FORMAT.md). Importing the runtime drops cached kernels
built from other kernel sources (`tdsl.runtime.kernel_cache`: before any module of it loads
one, whichever is imported first) and selects Numba's threading layer (`tdsl.runtime.threads`).
"""
from tdsl.runtime import kernel_cache as _kernel_cache
from tdsl.runtime import threads as _threads

_kernel_cache.drop_stale_caches()
_threads.configure()
