"""Shared machinery of the speed benchmarks (`bench_kernels.py`, `bench_roofline.py`, `bench_models.py`).

The protocol (docs in /work/shared/KERNELS.md, "Method" and "Pitfalls"): every comparison runs
in child processes started here, one per (shape, library), because torch's OpenMP pool and
Numba's workqueue/OpenMP pool slow each other down 5-10x when they share a process. A child
gets `child_env(threads)` (OpenBLAS pinned to one thread, the timed library to `threads`),
times one thing and prints one JSON object as the last line of its stdout. Times are medians
of per-call wall times after warm-up, with the garbage collector off while timing.
"""
from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MiB = 1 << 20


def child_env(threads: int) -> dict[str, str]:
    """Environment of a timing child: `threads` for the timed library, quiet foreign pools."""
    env = dict(os.environ)
    env.update({
        "OPENBLAS_NUM_THREADS": "1",   # numpy's BLAS (references, checks) must not spin
        "MKL_NUM_THREADS": "1",
        "OMP_NUM_THREADS": str(threads),
        "NUMBA_NUM_THREADS": str(threads),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")])),
    })
    return env


def memory_budget(fraction: float = 0.75) -> int:
    """Default memory bound of one benchmark child: a share of what is available now, so a
    run never pushes the machine into swap or the OOM killer (0 when /proc says nothing)."""
    return int(fraction * meminfo_bytes("MemAvailable"))


def rss_bytes(pid: int) -> int:
    """Resident set size of process `pid` (0 when /proc cannot tell)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def run_child(script: Path, args: Sequence[str], threads: int, timeout: float = 3600.0,
              mem_limit: int | None = None) -> dict[str, Any]:
    """Run `python script args` under `child_env(threads)`; its last stdout line is JSON.

    The child's resident memory is sampled 5 times a second: its peak goes into the result
    (`peak_rss_bytes`), and a child above `mem_limit` bytes (default `memory_budget()`) is
    stopped with an error that says so, instead of the machine starting to swap.
    """
    limit = memory_budget() if mem_limit is None else mem_limit
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(script), *args], env=child_env(threads),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while True:
        try:
            stdout, stderr = proc.communicate(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            peak = max(peak, rss_bytes(proc.pid))
            over_memory = limit > 0 and peak > limit
            if over_memory or time.monotonic() - started > timeout:
                proc.kill()
                proc.communicate()
                why = (f"used {peak / 2**30:.2f} GiB, above the bound of {limit / 2**30:.2f} GiB "
                       "(--max-mem-gib)" if over_memory else f"ran longer than {timeout:.0f} s")
                raise RuntimeError(f"benchmark child {script.name} {' '.join(args)[:80]} {why}") from None
    if proc.returncode != 0 or not stdout.strip():
        sys.stderr.write(stderr)
        raise RuntimeError(f"benchmark child {script.name} {' '.join(args)} failed with "
                           f"status {proc.returncode}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["loadavg_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    result["peak_rss_bytes"] = peak
    return result


class MemoryGuard:
    """Bound this benchmark process's resident memory to `limit` bytes (0: measure only).

    A thread samples the RSS twice a second; above the limit it prints why and ends the
    process at once (exit status 3), before the machine starts to swap: a stopped benchmark
    is better than a frozen machine, and its half-done results would not be written anyway.
    `peak` is the largest RSS seen, for the results."""

    def __init__(self, limit: int):
        self.limit = limit
        self.peak = 0
        self._stop = False

    def __enter__(self) -> "MemoryGuard":
        import threading

        self.peak = rss_bytes(os.getpid())
        threading.Thread(target=self._watch, daemon=True).start()
        return self

    def _watch(self) -> None:
        while not self._stop:
            self.peak = max(self.peak, rss_bytes(os.getpid()))
            if self.limit and self.peak > self.limit:
                print(f"stopped: the benchmark used {self.peak / 2**30:.2f} GiB, above its bound of "
                      f"{self.limit / 2**30:.2f} GiB (--max-mem-gib)", file=sys.stderr, flush=True)
                os._exit(3)
            time.sleep(0.5)

    def __exit__(self, *exc: Any) -> None:
        self._stop = True


class Progress:
    """Plain progress lines on stderr (they survive logs and CI), with elapsed time and an ETA.

    `weights` is the expected relative cost of each step (e.g. K x N of a shape), so the
    estimate after the small shapes does not promise an early end for the big ones.
    """

    def __init__(self, weights: Sequence[float], stream: Any = None, now: Callable[[], float] = time.monotonic):
        self.weights = list(weights)
        self.done = 0
        self.now = now
        self.started = now()
        self.stream = stream if stream is not None else sys.stderr

    def eta_seconds(self) -> float | None:
        """Seconds left, from the time per unit of weight so far; None before any step ended."""
        finished = sum(self.weights[:self.done])
        if finished <= 0:
            return None
        return (self.now() - self.started) / finished * sum(self.weights[self.done:])

    def step(self, what: str) -> None:
        """Announce the next step (call `step` again or `finish` when it is over)."""
        if self.done >= len(self.weights):
            raise ValueError(f"Progress has {len(self.weights)} steps; step {self.done + 1} was announced")
        self._line(f"[{self.done + 1}/{len(self.weights)}] {what}")
        self.done += 1

    def finish(self) -> None:
        self.done = len(self.weights)
        self._line(f"[done] {len(self.weights)} steps")

    def _line(self, text: str) -> None:
        eta = self.eta_seconds() if self.done < len(self.weights) else 0.0
        left = "ETA unknown" if eta is None else f"ETA {clock(eta)}"
        print(f"{text} (elapsed {clock(self.now() - self.started)}, {left})",
              file=self.stream, flush=True)


def clock(seconds: float) -> str:
    """`m:ss` (or `h:mm:ss`) for progress lines."""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def summarize(ns: list[int]) -> dict[str, float]:
    """Median, 10th/90th percentile and minimum (ms) of per-call times in nanoseconds."""
    ms = sorted(t / 1e6 for t in ns)
    n = len(ms)
    return {"median_ms": statistics.median(ms), "p10_ms": ms[int(0.1 * (n - 1))],
            "p90_ms": ms[int(round(0.9 * (n - 1)))], "min_ms": ms[0], "n": n}


def time_calls(call: Callable[[int], object], n: int, warmup: int) -> dict[str, float]:
    """Time `call(i)` for i = 0 .. n-1 after `call(i)` for i = 0 .. warmup-1 (untimed).

    Warm timing passes a call that ignores i (the same layer every time); cold timing passes
    one that uses layer i mod R with warmup = R, i.e. after one full cycle through the set.
    """
    for i in range(warmup):
        call(i)
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        ns = []
        for i in range(n):
            t0 = time.perf_counter_ns()
            call(i)
            ns.append(time.perf_counter_ns() - t0)
    finally:
        if gc_was_on:
            gc.enable()
    return summarize(ns)


def rel_err(y: Any, ref: Any) -> float:
    """max |y - ref| / max |ref| (float64)."""
    import numpy as np

    y64, r64 = np.asarray(y, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(y64 - r64)) / max(float(np.max(np.abs(r64))), 1e-300))


def cache_bytes(level: int = 3) -> int:
    """Size of the largest cache of this level the kernel reports (sysfs), or 0 if unknown."""
    sizes = []
    for d in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            if int((d / "level").read_text()) != level:
                continue
            text = (d / "size").read_text().strip()
        except OSError:
            continue
        unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1], 1)
        sizes.append(int(text.rstrip("KMG")) * unit)
    return max(sizes, default=0)


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() not in info:
                info[key.strip()] = value.strip()
            if not line.strip() and info:
                break
    except OSError:
        pass
    return info


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def meminfo_bytes(key: str) -> int:
    """A /proc/meminfo field ("MemTotal", "MemAvailable") in bytes, 0 if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def machine_info(threads: int) -> dict[str, Any]:
    """CPU model, relevant ISA flags, caches, memory, threads and library versions.

    Versions come from package metadata so that the orchestrator never imports torch or
    numba itself (it starts the children that do).
    """
    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    wanted = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
    try:
        git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        git = ""
    return {
        "cpu_model": cpu.get("model name", platform.processor()),
        "cpu_vendor": cpu.get("vendor_id", ""),
        "logical_cpus": os.cpu_count(),
        "isa_flags": [f for f in wanted if f in flags],
        "hypervisor": "hypervisor" in flags,
        "l2_bytes": cache_bytes(2),
        "l3_bytes": cache_bytes(3),
        "mem_total_bytes": meminfo_bytes("MemTotal"),
        "threads": threads,
        "env": {k: child_env(threads)[k] for k in
                ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS")},
        "versions": {"python": platform.python_version(),
                     **{d: _version(d) for d in ("numpy", "numba", "llvmlite", "torch", "tdsl")}},
        "git_commit": git,
        "platform": platform.platform(),
        "niceness": os.nice(0),  # children inherit it; KERNELS.md runs were at 0
        "loadavg_start": [round(v, 2) for v in os.getloadavg()],
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


NOISY = 1.5
"""p90 / p10 above this marks a measurement as disturbed (another process took the CPU)."""
DISTURBED = "~"
ABOVE_ROOF = "^"
FOOTNOTES = {
    DISTURBED: (f"{DISTURBED} disturbed: p90 > {NOISY} x p10 of the calls (another process took the CPU); "
                "a ratio is marked when either of its two timings is; rerun those rows on a quiet machine "
                "before trusting them."),
    ABOVE_ROOF: (f"{ABOVE_ROOF} above 100 % of the streaming (DRAM) roofline: the weights were served from "
                 "cache (a warm set, or a cold set that still fits a cache), so the roofline does not bound "
                 "this row; it is not a kernel faster than memory."),
}
"""The one explanation of each table marker, printed under every table that uses it."""


def is_disturbed(m: dict[str, Any]) -> bool:
    """Whether a timing's spread says the machine was busy while it ran."""
    return m["p90_ms"] > NOISY * m["p10_ms"]


def ms_cell(m: dict[str, Any], spec: str = ".3f") -> str:
    """A median in ms, marked when disturbed."""
    return format(m["median_ms"], spec) + (DISTURBED if is_disturbed(m) else "")


def roof_cell(fraction: float | None) -> str:
    """A share of the roofline in %, marked above 100 % (cache, not DRAM, served it)."""
    if fraction is None or fraction != fraction:  # NaN: no roofline measured
        return "-"
    return f"{100 * fraction:.0f}" + (ABOVE_ROOF if fraction > 1.0 else "")


def footnotes(*tables: str) -> str:
    """The FOOTNOTES of the markers that appear in `tables`, one per line ('' when none)."""
    text = "\n".join(tables)
    used = [note for mark, note in FOOTNOTES.items() if any(
        line.startswith("|") and mark in line for line in text.splitlines())]
    return "\n".join(used)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A pipe table padded to column width: valid Markdown and readable in a terminal."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *(line(r) for r in rows)])


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temporary file renamed into place, so a failure never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=False) + "\n")


def emit_child_result(data: dict[str, Any]) -> None:
    """A child's result: one JSON line, the last line of stdout."""
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()
