"""How the runtime uses threads: Numba's `workqueue` layer, one parallel region at a time.

Why not the default OpenMP layer: GNU OpenMP's workers spin at the barrier that ends every
parallel region. When another busy process shares the cores, a region waits for a descheduled
worker while the others burn its time slice spinning; a plan of 20-50 short regions then runs
5-15x slower (measured here, ResNet-18 224 B=1 all-ternary, 2 threads, load average 5: OpenMP
980 ms, OpenMP with OMP_WAIT_POLICY=PASSIVE 124 ms, workqueue 59 ms, one thread 63 ms).
The workqueue layer's waiting threads sleep, so a loaded machine degrades to about
one-thread speed instead of collapsing.

The layer is process-wide and fixed by the first parallel region a process runs, so it is set
here, when `tdsl.runtime` is imported, unless the user chose one (`NUMBA_THREADING_LAYER`)
or a parallel region already ran. The workqueue layer must not be entered from two threads
at once (Numba aborts the process), so every CPU deployment call holds `RUNTIME_LOCK`
while it runs: concurrent callers of one process take turns (each call uses every core).

Sharing a process with torch or onnxruntime: their thread pools are separate (torch's
OpenMP, onnxruntime's intra-op pool). Each is idle between its own calls; the runtime's
workers sleep between regions, so neither side spins on the other's cores. Give each library
the core count you want (`numba.set_num_threads`, `torch.set_num_threads`,
`SessionOptions.intra_op_num_threads`).
"""
from __future__ import annotations

import os
import threading

ENV_VAR = "NUMBA_THREADING_LAYER"
LAYER = "workqueue"

RUNTIME_LOCK = threading.RLock()
"""Held by each CPU deployment call (see the module docstring)."""


def configure() -> str:
    """Select the workqueue layer unless the user or an earlier parallel region chose; returns
    the layer Numba will use (or uses)."""
    import numba

    if os.environ.get(ENV_VAR):
        return numba.config.THREADING_LAYER
    try:
        return numba.threading_layer()  # a parallel region already ran: the layer is fixed
    except ValueError:
        numba.config.THREADING_LAYER = LAYER
        return LAYER
