"""Streaming read bandwidth: the roofline a bandwidth-bound kernel (ternary GEMV, B = 1 cold) can reach.

Readers, each summing one float32 buffer much larger than the last-level cache:
  numba-prange-Nt   a Numba `prange` sum with N threads (the roofline: the kernels use the
                    same threading layer and thread count),
  numba-prange-1t   the same with one thread (how much one core pulls),
  numba-serial      a plain Numba loop,
  numpy-sum         `a.sum()` (numpy, one thread).
The buffer is max(512 MiB, 4 x L3) by default (KERNELS.md used 512 MiB on a 32 MiB L3; this
VM reports a much larger L3). All readers run in one child process without torch.

    python benchmarks/bench_roofline.py [--mib N] [--repeats N] [--out DIR]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from common import (MiB, cache_bytes, emit_child_result, machine_info, markdown_table, run_child,
                    time_calls, write_json, write_text_atomic)

SCRIPT = Path(__file__).resolve()


def default_mib() -> int:
    return max(512, -(-4 * cache_bytes(3) // MiB))


def measure(mib: int, repeats: int, threads: int) -> dict[str, Any]:
    """Child body: GB/s of each reader (medians over `repeats` full passes after 2 warm-ups)."""
    import numba
    import numpy as np
    from numba import njit, prange

    @njit(parallel=True, fastmath=True)
    def psum(a):
        t = np.float32(0.0)
        for i in prange(a.size):
            t += a[i]
        return t

    @njit(fastmath=True)
    def ssum(a):
        t = np.float32(0.0)
        for i in range(a.size):
            t += a[i]
        return t

    a = np.ones(mib * MiB // 4, np.float32)
    readers: dict[str, tuple[Any, int]] = {
        f"numba-prange-{threads}t": (psum, threads), "numba-prange-1t": (psum, 1),
        "numba-serial": (ssum, threads), "numpy-sum": (np.sum, threads)}
    out = {}
    for name, (fn, nthreads) in readers.items():
        numba.set_num_threads(nthreads)
        t = time_calls(lambda i: fn(a), repeats, warmup=2)
        out[name] = {**t, "gb_s": a.nbytes / (t["median_ms"] * 1e-3) / 1e9,
                     "gb_s_best": a.nbytes / (t["min_ms"] * 1e-3) / 1e9}
    numba.set_num_threads(threads)
    return {"buffer_bytes": a.nbytes, "threads": threads, "readers": out,
            "roofline_reader": f"numba-prange-{threads}t",
            "roofline_gb_s": out[f"numba-prange-{threads}t"]["gb_s"]}


def run_roofline(mib: int, repeats: int, threads: int) -> dict[str, Any]:
    """Measure in a fresh child process (no torch in it)."""
    return run_child(SCRIPT, ["--child", "--mib", str(mib), "--repeats", str(repeats),
                              "--threads", str(threads)], threads)


def table(result: dict[str, Any]) -> str:
    rows = [[name, f"{r['median_ms']:.2f}", f"{r['gb_s']:.1f}", f"{r['gb_s_best']:.1f}", str(r["n"])]
            for name, r in result["readers"].items()]
    return markdown_table(["reader", "median ms", "GB/s (median)", "GB/s (best)", "passes"], rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=None, help="buffer size (default max(512, 4 x L3))")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="64 MiB, 3 passes: a smoke run")
    ap.add_argument("--out", type=Path, default=Path("bench_results"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    mib = args.mib or (64 if args.quick else default_mib())
    repeats = 3 if args.quick and args.repeats == 10 else args.repeats
    if args.child:
        emit_child_result(measure(mib, repeats, args.threads))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    result = run_roofline(mib, repeats, args.threads)
    data = {"benchmark": "roofline", "machine": machine_info(args.threads), **result}
    text = (f"streaming read of {result['buffer_bytes'] / MiB:.0f} MiB, {args.threads} threads; "
            f"roofline = {result['roofline_reader']}: {result['roofline_gb_s']:.1f} GB/s\n\n"
            + table(result))
    print(text)
    write_json(args.out / "bench_roofline.json", data)
    write_text_atomic(args.out / "bench_roofline.md", text + "\n")
    print(f"\nwrote {args.out / 'bench_roofline.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
