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

The TBB layer (the `tbb` 2022.3 wheel, its library preloaded) was measured too (2026-12-07,
same machine, helpers' jobs as the busy process): its master never waits for a worker that is
not running, so a 1x1 conv at 112x112 on 2 threads took 0.78 ms beside a busy process where
OpenMP without `threads_for_call` took 13.4 ms; but its workers sleep between regions and join
a short one too late: quiet, MobileNetV2 at 224 ran as if on one thread (10.8 ms median vs 6.6
with OpenMP). With `threads_for_call` OpenMP matched it under load (ResNet-18 19.5 vs 20.1 ms),
so OpenMP stays first.

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
import time

SPIN_COUNT = "60000"
LAYER_PRIORITY = ["omp", "tbb", "workqueue"]

DECISION_SECONDS = 0.02
CONFIRM_SECONDS = 100e-6
"""How long `threads_for_call` sleeps before it looks again at a process it saw running, and
gives up a thread only if it still runs: a busy process stays runnable, a caller that just
handed this process work (a server's request thread, a parent writing to a pipe) was preempted
on this core on its way to sleep and gets there meanwhile. Seen once, such a caller cost half
the calls of a pipe-driven server one thread for DECISION_SECONDS (MobileNetV2 B=1 at 2.0
instead of 1.3 ms, 2-core Zen 5 guest). A sleep, not `sched_yield` in a loop: beside a busy
process a yield can hand it a whole time slice."""
"""`threads_for_call` reuses its answer this long (a few scheduler ticks): reading /proc costs
20-130 us, a tenth of a small model's call when made on every call."""
_LAST_DECISION: dict[int, tuple[float, int]] = {}

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


def _running(path: str) -> int:
    """Threads in state R under a /proc task folder listing (best effort: 0 where unreadable)."""
    n = 0
    try:
        for tid in os.listdir(path):
            try:
                with open(f"{path}/{tid}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            if stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3] == b"R":
                n += 1
    except OSError:
        return 0
    return n


def _system_running() -> int:
    """Runnable threads of the whole system now (/proc/loadavg's running count; 0 if unreadable)."""
    try:
        with open("/proc/loadavg", "rb") as f:
            return int(f.read().split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):
        return 0


def others_running() -> int:
    """Runnable threads of other processes right now (the system's running count less this
    process's running threads); 0 where /proc is not there."""
    return max(0, _system_running() - _running("/proc/self/task"))


def threads_for_call(configured: int) -> int:
    """How many threads a call should use: `configured`, less the cores other processes are
    busy on right now (busy: seen running before and after a sleep of CONFIRM_SECONDS). A parallel region ends
    when its last thread arrives, so a thread that shares its core with a busy process holds
    every region of the call for a time slice; with one thread fewer the call runs at the speed
    of the cores it really has. Costs ~20 us when
    the caller is the only runnable thread (a quiet machine), ~CONFIRM_SECONDS + 150 us else, so the
    answer is reused for DECISION_SECONDS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    now = time.monotonic()
    last = _LAST_DECISION.get(configured)
    if last is not None and now - last[0] < DECISION_SECONDS:
        return last[1]
    others = 0 if _system_running() <= 1 else others_running()  # 1: only the caller runs
    if others:  # sleeping, not spinning: the caller that woke us may wait on this core to reach its sleep
        time.sleep(CONFIRM_SECONDS)
        others = min(others, others_running())
    n = max(1, min(configured, cores - others))
    _LAST_DECISION[configured] = (now, n)
    return n
