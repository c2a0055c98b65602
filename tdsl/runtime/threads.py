"""How the runtime uses threads: Numba's OpenMP layer with a bounded spin, one call at a time.

A plan is a chain of short parallel regions (ResNet-18: 24, MobileNetV2: 55). Two failure
modes bound the choice, both measured here (2-core AMD EPYC guest, MobileNetV2 at 64x64,
all-ternary, int8-nhwc, 2 threads, median ms):

| threading | quiet | beside one busy process |
|---|---|---|
| OpenMP, GNU default spin (300,000 iterations) | 2.63 | 706 |
| OpenMP, GOMP_SPINCOUNT=200000 | - | 1146 |
| OpenMP, GOMP_SPINCOUNT=60000 (what this module sets) | 2.67 | 15.3 |
| OpenMP, GOMP_SPINCOUNT=30000 | 2.67 | 22.7 |
| workqueue layer (sleeps at once) | 145 | 78 |

Spinning long at the barrier that ends each region makes a loaded machine collapse (a region
waits for a descheduled worker while the others burn its time slice); sleeping at once makes
every region pay a wake-up (workqueue). A short spin keeps quiet runs at full speed and lets
waiting threads yield under load. So, unless the user chose (`NUMBA_THREADING_LAYER`,
`GOMP_SPINCOUNT`, `OMP_WAIT_POLICY`), importing `tdsl.runtime` prefers the OpenMP layer and
sets GOMP_SPINCOUNT before GNU OpenMP starts (it reads it once, at its first region).

Every CPU deployment call holds `RUNTIME_LOCK` while it runs: one call's buffers are shared by
all calls of its input shape, so concurrent callers in one process take turns (each call
uses every core anyway).

Sharing a process with torch or onnxruntime: torch brings its own copy of GNU OpenMP and
onnxruntime its own pool, so the spin setting here is the runtime's alone; each library's
workers stop spinning shortly after its own calls. Give each library the cores you want
(`numba.set_num_threads`, `torch.set_num_threads`, `SessionOptions.intra_op_num_threads`).
"""
from __future__ import annotations

import os
import threading

SPIN_COUNT = "60000"
LAYER_PRIORITY = ["omp", "tbb", "workqueue"]

RUNTIME_LOCK = threading.RLock()
"""Held by each CPU deployment call (see the module docstring)."""


def configure() -> str | None:
    """Prefer the OpenMP layer with a bounded spin (module docstring) unless the user chose or a
    parallel region already ran; returns the layer in use if one is fixed already, else None."""
    import numba

    if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    try:
        return numba.threading_layer()  # a parallel region already ran: the layer is fixed
    except ValueError:
        pass
    if not os.environ.get("NUMBA_THREADING_LAYER"):
        numba.config.THREADING_LAYER_PRIORITY = list(LAYER_PRIORITY)
    return None
