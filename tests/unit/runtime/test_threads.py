"""The runtime's threading (tdsl.runtime.threads): OpenMP with a bounded spin by default, the
user's choice respected, and concurrent callers of one deployment served one at a time."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np

import tdsl

_PROBE = """
import numpy as np, numba, tdsl
from tdsl.runtime import gemm, packing
run = tdsl.deploy(tdsl.quantize("mlp", precision="ternary", policy="all", params={"in_features": 16,
                  "hidden": 32, "num_classes": 4}), "numba")
run(np.ones((2, 16), np.float32))
import os
print(numba.threading_layer(), os.environ.get("GOMP_SPINCOUNT"))
"""


def _clean() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("NUMBA_THREADING_LAYER", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}


def _layer(env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_the_runtime_prefers_openmp_with_a_bounded_spin_unless_the_user_chose():
    assert _layer(_clean()) == "omp 60000"
    assert _layer({**_clean(), "NUMBA_THREADING_LAYER": "workqueue", "GOMP_SPINCOUNT": "5"}) == "workqueue 5"
    assert _layer({**_clean(), "OMP_WAIT_POLICY": "PASSIVE"}) == "omp None"


def test_concurrent_calls_from_python_threads_take_turns_and_agree():
    frozen = tdsl.quantize("mlp", precision="ternary", policy="all",
                           params={"in_features": 64, "hidden": 128, "num_classes": 8})
    run = tdsl.deploy(frozen, "numba")
    xs = [np.random.default_rng(i).standard_normal((8, 64)).astype(np.float32) for i in range(4)]
    want = [run(x) for x in xs]
    got: dict[int, list[np.ndarray]] = {i: [] for i in range(4)}

    def worker(i: int) -> None:
        for _ in range(5):
            got[i].append(run(xs[i]))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        assert len(got[i]) == 5
        for y in got[i]:
            np.testing.assert_array_equal(y, want[i])


def _decide(monkeypatch, seen: list[int]) -> tuple[int, list[float]]:
    """threads_for_call(2) on 2 cores while other processes' running threads read `seen` in turn
    (the last value repeating), and the sleeps it took."""
    from tdsl.runtime import threads

    samples = iter(seen)
    last = [seen[0]]
    slept: list[float] = []

    def others() -> int:
        last[0] = next(samples, last[0])
        return last[0]

    threads._LAST_DECISION.clear()
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(threads, "_system_running", lambda: 1 + last[0])
    monkeypatch.setattr(threads, "others_running", others)
    monkeypatch.setattr(threads.time, "sleep", slept.append)
    try:
        return threads.threads_for_call(2), slept
    finally:
        threads._LAST_DECISION.clear()


def test_a_busy_process_takes_a_thread_but_a_caller_on_its_way_to_sleep_does_not(monkeypatch):
    from tdsl.runtime.threads import CONFIRM_SECONDS

    assert _decide(monkeypatch, [1]) == (1, [CONFIRM_SECONDS])  # still running after the sleep
    assert _decide(monkeypatch, [1, 0]) == (2, [CONFIRM_SECONDS])  # a pipe writer that then blocked
    assert _decide(monkeypatch, [0]) == (2, [])  # a quiet machine: no sleep
    assert _decide(monkeypatch, [2]) == (1, [CONFIRM_SECONDS])  # never fewer than one thread
