"""Ternary GEMV/GEMM (tdsl runtime) against torch fp32, bf16 and int8-dynamic `nn.Linear`.

y = x . W^T with K inputs and N outputs (labelled K x N), batch B, two regimes:
  warm  the same layer every call (its weights may sit in cache),
  cold  layer i mod R of a set of R layers several times larger than the L3 cache.
Protocol (/work/shared/KERNELS.md, "Method"), followed here:
* One child process per (shape, library): first torch (fp32, bf16, int8 dynamic), then, after
  a 1 s pause, tdsl (the "vnni" and the "portable" kernel paths), each with `--threads`
  threads and OpenBLAS at one thread (`common.child_env`). Both children build the same
  inputs and weights from the same seeds and report a fingerprint of them, which is checked.
* Weights: uniform random trits with a per-row fp32 scale; torch gets the same matrix as
  fp32 (s * T), bf16 and int8 (quantize_dynamic). The cold set of each format holds
  R >= max(R_protocol, 4 x L3 / layer bytes) layers, where R_protocol is the KERNELS.md
  choice (4 x 32 MiB of 2-bit weights: R = 32 for 4096 x 4096, 12 for 4096 x 11008). The
  layers cycle through a few distinct matrices copied to distinct buffers (the caches
  see distinct addresses; the arithmetic is the same).
* Timed per call: the public entry (`ternary_linear`, `nn.Linear.__call__`) including the
  activation quantisation / bf16 casts and the Python dispatch. Warm: median of `repeats`
  calls after 5 warm-up calls; cold: median of max(repeats, R) calls after a full cycle.
* Before timing, each output is compared with a float64 reference of the same ternary
  weights (max |y - ref| / max |ref|); tdsl is also compared with torch fp32. The errors
  go to the JSON, and an error above 0.1 stops the benchmark.
Outputs: a table (terminal and bench_kernels.md), bench_kernels.json and bench_kernels.png
in --out. Targets (issue "Benchmarks") are checked per row; see TARGETS.

    python benchmarks/bench_kernels.py [--quick] [--out DIR] [--repeats N] [--shapes 4096x4096,...]
        [--batches 1,8,64] [--l3-mib M] [--update]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import warnings
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common import (DISTURBED, MiB, Progress, emit_child_result, footnotes, is_disturbed,
                    machine_info, markdown_table, meminfo_bytes, memory_budget, ms_cell, rel_err, roof_cell,
                    run_child, time_calls, write_json, write_text_atomic)

SCRIPT = Path(__file__).resolve()
SHAPES = ((4096, 4096), (4096, 11008))     # (K, N)
QUICK_SHAPES = ((256, 192),)
BATCHES = (1, 8, 64)
QUICK_BATCHES = (1, 8)
TORCH_LIBS = ("torch-fp32", "torch-bf16", "torch-int8")
FORMAT_OF = {"torch-fp32": "fp32", "torch-bf16": "bf16", "torch-int8": "int8",
             "tdsl-vnni": "2bit", "tdsl-portable": "2bit"}
BYTES_PER_WEIGHT = {"fp32": 4.0, "bf16": 2.0, "int8": 1.0, "2bit": 0.25}
PROTOCOL_L3 = 32 * MiB   # the prototype machine's L3, which fixed R_protocol
COLD_FACTOR = 4          # cold sets hold at least this many L3s of the format
DISTINCT_LAYERS = 4      # distinct weight matrices behind a cold set
WARMUP_CALLS = 5
MAX_REL_ERR = 0.1

# (path, batch, regime or None for both, (K, N) or None for every shape, metric, threshold).
# Metrics: "x_fp32"/"x_int8" = torch time / tdsl time; "roof" = effective weight GB/s divided
# by the measured streaming roofline.
TARGETS: tuple[tuple[str, int, str | None, tuple[int, int] | None, str, float], ...] = (
    ("vnni", 1, "cold", None, "x_fp32", 20.0),
    ("vnni", 1, "cold", None, "x_int8", 4.0),
    ("vnni", 1, "cold", None, "roof", 0.9),
    ("vnni", 1, "warm", (4096, 4096), "x_int8", 2.0),
    ("vnni", 8, None, None, "x_int8", 1.0),
    ("vnni", 64, None, None, "x_fp32", 4.0),
    ("vnni", 64, None, None, "x_int8", 0.9),
    ("portable", 1, "cold", None, "x_fp32", 9.0),
    ("portable", 1, "cold", None, "x_int8", 1.6),
)


@dataclass
class ChildConfig:
    K: int
    N: int
    batches: list[int]
    layers: dict[str, int]      # format -> R
    repeats: int
    threads: int
    seed: int
    work: str                   # folder for the outputs the parent compares


def label(K: int, N: int) -> str:
    return f"{K}x{N}"


def layer_weights(seed: int, i: int, K: int, N: int) -> tuple[Any, Any]:
    """Distinct matrix i: trits int8 [N, K] uniform in {-1, 0, 1}, scale float32 [N]."""
    import numpy as np

    rng = np.random.default_rng([seed, i])
    trits = rng.integers(-1, 2, size=(N, K), dtype=np.int8)
    scale = (rng.uniform(0.5, 1.5, N) / math.sqrt(K)).astype(np.float32)
    return trits, scale


def batch_input(seed: int, B: int, K: int) -> Any:
    import numpy as np

    return np.random.default_rng([seed, 1000 + B]).standard_normal((B, K)).astype(np.float32)


def reference(x: Any, trits: Any, scale: Any) -> Any:
    """float64 x . (s * T)^T."""
    import numpy as np

    return (x.astype(np.float64) @ trits.T.astype(np.float64)) * scale.astype(np.float64)


def fingerprint(cfg: ChildConfig) -> int:
    """CRC of the inputs and of the first weight matrix, equal in both children."""
    crc = 0
    trits, scale = layer_weights(cfg.seed, 0, cfg.K, cfg.N)
    for a in (trits, scale, *(batch_input(cfg.seed, B, cfg.K) for B in cfg.batches)):
        crc = zlib.crc32(a.tobytes(), crc)
    return crc


def cold_layers(K: int, N: int, l3: int, fixed: int | None) -> dict[str, int]:
    """R per format: max(R_protocol, COLD_FACTOR x L3 / layer bytes), or `fixed` for all."""
    if fixed:
        return {fmt: fixed for fmt in BYTES_PER_WEIGHT}
    smallest = BYTES_PER_WEIGHT["2bit"] * K * N
    r_protocol = math.ceil(COLD_FACTOR * PROTOCOL_L3 / smallest)
    return {fmt: max(r_protocol, math.ceil(COLD_FACTOR * l3 / (bpw * K * N)))
            for fmt, bpw in BYTES_PER_WEIGHT.items()}


def _measure(lib: str, cfg: ChildConfig, B: int, regime: str, t: dict[str, float], R: int,
             err: float) -> dict[str, Any]:
    fmt = FORMAT_OF[lib]
    wbytes = BYTES_PER_WEIGHT[fmt] * cfg.K * cfg.N
    return {"shape": label(cfg.K, cfg.N), "K": cfg.K, "N": cfg.N, "lib": lib, "batch": B,
            "regime": regime, **t, "weight_bytes": int(wbytes),
            "layers": R if regime == "cold" else 1,
            "set_bytes": int(wbytes * (R if regime == "cold" else 1)), "rel_err_ref": err}


# ---------------------------------------------------------------------------------------
# children


def child_torch(cfg: ChildConfig) -> dict[str, Any]:
    import numpy as np
    import torch
    from torch import nn

    warnings.filterwarnings("ignore")  # torch.ao quantisation deprecation notices
    torch.set_num_threads(cfg.threads)
    bases = [layer_weights(cfg.seed, i, cfg.K, cfg.N) for i in range(DISTINCT_LAYERS)]
    w_fp32 = [torch.from_numpy(t.astype(np.float32) * s[:, None]) for t, s in bases]
    xs = {B: batch_input(cfg.seed, B, cfg.K) for B in cfg.batches}
    refs = {B: reference(xs[B], *bases[0]) for B in cfg.batches}

    def build(fmt: str, i: int) -> nn.Module:
        lin = nn.Linear(cfg.K, cfg.N, bias=False, device="meta")  # no random init to undo
        w = w_fp32[i % DISTINCT_LAYERS]
        lin.weight = nn.Parameter(w.to(torch.bfloat16) if fmt == "bf16" else w.clone(),
                                  requires_grad=False)
        if fmt == "int8":
            return torch.ao.quantization.quantize_dynamic(nn.Sequential(lin), {nn.Linear},
                                                          dtype=torch.qint8)[0]
        return lin

    def forward(fmt: str, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if fmt == "bf16":
            return layer(x.to(torch.bfloat16)).float()
        return layer(x)

    measurements, outputs = [], {}
    with torch.inference_mode():
        for lib in TORCH_LIBS:
            fmt = FORMAT_OF[lib]
            R = cfg.layers[fmt]
            layers = [build(fmt, i) for i in range(R)]
            for B in cfg.batches:
                x = torch.from_numpy(xs[B])
                y = forward(fmt, layers[0], x).numpy()
                err = rel_err(y, refs[B])
                if fmt == "fp32":
                    outputs[f"b{B}"] = y
                warm = time_calls(lambda i: forward(fmt, layers[0], x), cfg.repeats, WARMUP_CALLS)
                cold = time_calls(lambda i: forward(fmt, layers[i % R], x), max(cfg.repeats, R), R)
                measurements += [_measure(lib, cfg, B, "warm", warm, R, err),
                                 _measure(lib, cfg, B, "cold", cold, R, err)]
            layers = []  # free this format's layers before the next
    np.savez(Path(cfg.work) / f"torch-{label(cfg.K, cfg.N)}.npz", **outputs)
    return {"lib": "torch", "fingerprint": fingerprint(cfg), "measurements": measurements,
            "torch_threads": torch.get_num_threads(),
            "quantized_engine": torch.backends.quantized.engine}


def child_tdsl(cfg: ChildConfig) -> dict[str, Any]:
    import numba
    import numpy as np

    from tdsl.runtime import compile_stats, gemm
    from tdsl.runtime.cpu_features import has_avx512_vnni
    from tdsl.runtime.packing import pack

    numba.set_num_threads(cfg.threads)
    warmup_s = gemm.warmup()
    compile_s = compile_stats.compile_seconds()
    hits, misses = compile_stats.cache_counts(gemm.kernels())
    paths = ("vnni", "portable") if has_avx512_vnni() else ("portable",)
    bases = [layer_weights(cfg.seed, i, cfg.K, cfg.N) for i in range(DISTINCT_LAYERS)]
    R = cfg.layers["2bit"]
    packed_bases = [pack(t) for t, _ in bases]
    packed = np.empty((R, *packed_bases[0].shape), np.uint8)
    for i in range(R):
        packed[i] = packed_bases[i % DISTINCT_LAYERS]
    scales = [bases[i % DISTINCT_LAYERS][1] for i in range(R)]
    xs = {B: batch_input(cfg.seed, B, cfg.K) for B in cfg.batches}
    refs = {B: reference(xs[B], *bases[0]) for B in cfg.batches}
    measurements, outputs = [], {}
    for path in paths:
        lib = f"tdsl-{path}"
        for B in cfg.batches:
            x = xs[B]
            y = gemm.ternary_linear(x, packed[0], scales[0], path=path)
            err = rel_err(y, refs[B])
            outputs[f"{path}-b{B}"] = y
            warm = time_calls(lambda i: gemm.ternary_linear(x, packed[0], scales[0], path=path),
                              cfg.repeats, WARMUP_CALLS)
            cold = time_calls(lambda i: gemm.ternary_linear(x, packed[i % R], scales[i % R],
                                                            path=path), max(cfg.repeats, R), R)
            measurements += [_measure(lib, cfg, B, "warm", warm, R, err),
                             _measure(lib, cfg, B, "cold", cold, R, err)]
    np.savez(Path(cfg.work) / f"tdsl-{label(cfg.K, cfg.N)}.npz", **outputs)
    return {"lib": "tdsl", "fingerprint": fingerprint(cfg), "measurements": measurements,
            "numba_threads": numba.get_num_threads(), "threading_layer": numba.threading_layer(),
            "paths": list(paths), "warmup_s": warmup_s, "compile_s": compile_s,
            "numba_cache_hits": hits, "numba_cache_misses": misses}


# ---------------------------------------------------------------------------------------
# parent: run the children, derive rows, checks, table and plot


def targets_for(path: str, K: int, N: int, B: int, regime: str
                ) -> list[tuple[str, float]]:
    return [(metric, thr) for p, b, reg, shape, metric, thr in TARGETS
            if p == path and b == B and reg in (None, regime) and shape in (None, (K, N))]


def derive_rows(measurements: list[dict[str, Any]], roofline_gb_s: float) -> list[dict[str, Any]]:
    """One row per tdsl measurement: ratios to each torch baseline, GB/s, checked targets."""
    index = {(m["shape"], m["lib"], m["batch"], m["regime"]): m for m in measurements}
    rows = []
    for m in measurements:
        if not m["lib"].startswith("tdsl-"):
            continue
        path = m["lib"].removeprefix("tdsl-")
        key = (m["shape"], m["batch"], m["regime"])
        gb_s = m["weight_bytes"] / (m["median_ms"] * 1e-3) / 1e9
        row = {"shape": m["shape"], "batch": m["batch"], "regime": m["regime"], "path": path,
               "ms": m["median_ms"], "p10_ms": m["p10_ms"], "p90_ms": m["p90_ms"],
               "gb_s": gb_s, "roof": gb_s / roofline_gb_s if roofline_gb_s else float("nan"),
               "rel_err_ref": m["rel_err_ref"], "rel_err_torch_fp32": m.get("rel_err_torch_fp32"),
               "disturbed": {"tdsl": is_disturbed(m)}}
        for lib in TORCH_LIBS:
            base = index.get((key[0], lib, key[1], key[2]))
            row["disturbed"][lib] = base is not None and is_disturbed(base)
            row[f"{lib}_ms"] = base["median_ms"] if base else None
            row[f"x_{lib.removeprefix('torch-')}"] = (base["median_ms"] / m["median_ms"]
                                                      if base else None)
        checks = []
        for metric, thr in targets_for(path, m["K"], m["N"], m["batch"], m["regime"]):
            value = row[metric]
            checks.append({"metric": metric, "target": thr, "value": value,
                           "pass": value is not None and value >= thr})
        row["checks"] = checks
        row["verdict"] = ("-" if not checks else
                          "PASS" if all(c["pass"] for c in checks) else "MISS")
        rows.append(row)
    return rows


def _fmt_check(c: dict[str, Any]) -> str:
    if c["metric"] == "roof":
        return f">={c['target']:.0%} roof"
    return f">={c['target']:g}x {c['metric'].removeprefix('x_')}"


def _num(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


ROW_HEADER = ["K x N", "B", "regime", "path", "tdsl ms", "fp32 ms", "bf16 ms", "int8 ms",
              "x fp32", "x bf16", "x int8", "GB/s", "% roof", "err", "target", "result"]


def rows_table(rows: list[dict[str, Any]]) -> str:
    """One line per tdsl row; `~` and `^` as explained by `common.FOOTNOTES`."""
    lines = []
    for r in rows:
        flags = r.get("disturbed", {})

        def ratio(lib: str, spec: str) -> str:
            value = r[f"x_{lib.removeprefix('torch-')}"]
            mark = DISTURBED if value is not None and (flags.get("tdsl") or flags.get(lib)) else ""
            return _num(value, spec) + mark

        def torch_ms(lib: str) -> str:
            return _num(r[f"{lib}_ms"], ".3f") + (DISTURBED if flags.get(lib) else "")

        lines.append([
            r["shape"], str(r["batch"]), r["regime"], r["path"],
            _num(r["ms"], ".3f") + (DISTURBED if flags.get("tdsl") else ""),
            torch_ms("torch-fp32"), torch_ms("torch-bf16"), torch_ms("torch-int8"),
            ratio("torch-fp32", ".1f"), ratio("torch-bf16", ".1f"), ratio("torch-int8", ".2f"),
            _num(r["gb_s"], ".1f"), roof_cell(r["roof"]),
            _num(r["rel_err_ref"], ".1e"), ", ".join(_fmt_check(c) for c in r["checks"]) or "-",
            r["verdict"] if r["verdict"] != "MISS" else "MISS " + ", ".join(
                f"{c['metric'].removeprefix('x_')}" for c in r["checks"] if not c["pass"])])
    return markdown_table(ROW_HEADER, lines)


def baselines_table(measurements: list[dict[str, Any]], roofline_gb_s: float) -> str:
    lines = []
    for m in measurements:
        gb_s = m["weight_bytes"] / (m["median_ms"] * 1e-3) / 1e9
        lines.append([m["shape"], str(m["batch"]), m["regime"], m["lib"], ms_cell(m),
                      f"{m['p10_ms']:.3f}-{m['p90_ms']:.3f}",
                      f"{gb_s:.1f}", roof_cell(gb_s / roofline_gb_s if roofline_gb_s else None),
                      str(m["layers"]), f"{m['set_bytes'] / MiB:.0f}", f"{m['rel_err_ref']:.1e}"])
    return markdown_table(["K x N", "B", "regime", "lib", "median ms", "p10-p90 ms", "GB/s",
                           "% roof", "R", "set MiB", "err vs f64"], lines)


def setup_notes(data: dict[str, Any]) -> str:
    """Where the numbers come from: caches, cold-set sizes, load average around each child."""
    m, p = data["machine"], data["protocol"]
    lines = [f"Setup: {m['cpu_model']} ({m['logical_cpus']} logical CPUs"
             f"{', KVM guest' if m['hypervisor'] else ''}; {', '.join(m['isa_flags'])}), "
             f"L2 {m['l2_bytes'] / MiB:.0f} MiB, L3 {m['l3_bytes'] / MiB:.0f} MiB (sysfs); "
             + (f"cold sets of R = {p['layers_fixed']} layers (fixed, not necessarily cold); "
                if p["layers_fixed"] else
                f"cold sets sized against {p['l3_bytes_used'] / MiB:.0f} MiB x {p['cold_factor']}; ")
             +
             f"{p['threads']} threads; niceness {m.get('niceness', 0)}; versions {m['versions']}.",
             "", "Load average (1 min) before -> after each child process, and its peak resident memory:", ""]
    for c in data["children"]:
        peak = f", peak {c['peak_rss_bytes'] / 2**30:.2f} GiB" if c.get("peak_rss_bytes") else ""
        lines.append(f"- {c['shape']} {c['lib']}: {c['loadavg_1min'][0]} -> {c['loadavg_1min'][1]}{peak}")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], measurements: list[dict[str, Any]], roofline_gb_s: float,
         path: Path, title: str) -> None:
    """Speed-up bars by (batch, regime) per shape with p10-p90 spreads, targets as dashed marks,
    disturbed timings hatched; then B = 1 cold GB/s against the roofline (`plots` has the marks)."""
    import plots

    index = {(m["shape"], m["lib"], m["batch"], m["regime"]): m for m in measurements}
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    series = [("vnni", "x_fp32", "#1f77b4"), ("vnni", "x_bf16", "#9ecae1"),
              ("vnni", "x_int8", "#d62728"), ("portable", "x_fp32", "#2ca02c"),
              ("portable", "x_int8", "#ff7f0e")]
    fig, axes = plots.figure(len(shapes) + 1, 6.5 * len(shapes) + 5, 6)
    width = 0.8 / len(series)
    any_disturbed = any_above = False
    for ax, shape in zip(axes[0], shapes):
        groups = list(dict.fromkeys((r["batch"], r["regime"]) for r in rows if r["shape"] == shape))
        drawn_target = False
        for s, (p, metric, color) in enumerate(series):
            base_lib = "torch-" + metric.removeprefix("x_")
            for g, (B, regime) in enumerate(groups):
                ours = index.get((shape, f"tdsl-{p}", B, regime))
                base = index.get((shape, base_lib, B, regime))
                row = next((r for r in rows if (r["shape"], r["batch"], r["regime"], r["path"])
                            == (shape, B, regime, p)), None)
                if row is None or ours is None or base is None:
                    continue
                x = g - 0.4 + (s + 0.5) * width
                plots.ratio_bar(ax, x, base, ours, width, color=color,
                                label=f"{p} {metric.replace('x_', 'vs ')}" if g == 0 else None)
                any_disturbed |= is_disturbed(base) or is_disturbed(ours)
                for c in row["checks"]:
                    if c["metric"] == metric:
                        ax.hlines(c["target"], x - width / 2, x + width / 2, colors="black",
                                  linestyles="dashed", linewidth=1.5,
                                  label="target" if not drawn_target else None)
                        drawn_target = True
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xticks(range(len(groups)), [f"B={B}\n{reg}" for B, reg in groups])
        ax.set_yscale("log")
        ax.set_ylabel("speed-up (torch time / tdsl time)")
        ax.set_title(f"K x N = {shape}")
        handles, labels = ax.get_legend_handles_labels()
        plots.legend_outside(ax, [*handles, plots.disturbed_handle()], [*labels, "disturbed"])
    ax = axes[0][-1]
    cold1 = [m for m in measurements if m["batch"] == 1 and m["regime"] == "cold"]
    for i, m in enumerate(cold1):
        gb = m["weight_bytes"] * 1e-6  # GB/s = bytes / (ms * 1e-3) / 1e9
        plots.timing_bar(ax, i, m, 0.8, color="#1f77b4" if m["lib"].startswith("tdsl") else "#bbbbbb",
                         scale=gb)
        any_disturbed |= is_disturbed(m)
        if roofline_gb_s and gb / m["median_ms"] > roofline_gb_s:
            plots.mark_above(ax, i, gb / m["p10_ms"])
            any_above = True
    if roofline_gb_s:
        ax.axhline(roofline_gb_s, color="black", linestyle="dashed",
                   label=f"streaming roofline {roofline_gb_s:.1f} GB/s")
        ax.axhline(0.9 * roofline_gb_s, color="black", linestyle="dotted", label="90 % target")
        plots.legend_outside(ax, side="right")
    ax.set_xticks(range(len(cold1)), [f"{m['lib']}\n{m['shape']}" for m in cold1], rotation=90, fontsize=7)
    ax.set_ylabel("effective weight GB/s")
    ax.set_title("B = 1, cold")
    fig.suptitle(title, fontsize=9)
    caption = [plots.CAPTION, plots.TARGET_CAPTION] + ([plots.ROOF_CAPTION] if any_above else [])
    if not any_disturbed:
        caption[0] += " (none in this run)"
    plots.save(fig, path, caption)


def compare_outputs(work: Path, shape: str, measurements: list[dict[str, Any]]) -> None:
    """Fill in rel_err_torch_fp32 of the tdsl measurements from the children's saved outputs."""
    import numpy as np

    torch_out = np.load(work / f"torch-{shape}.npz")
    tdsl_out = np.load(work / f"tdsl-{shape}.npz")
    for m in measurements:
        if m["shape"] == shape and m["lib"].startswith("tdsl-"):
            key = f"{m['lib'].removeprefix('tdsl-')}-b{m['batch']}"
            m["rel_err_torch_fp32"] = rel_err(tdsl_out[key], torch_out[f"b{m['batch']}"])


def parse_shapes(text: str) -> list[tuple[int, int]]:
    shapes = []
    for item in text.split(","):
        k, sep, n = item.lower().partition("x")
        if not sep or not k.isdigit() or not n.isdigit():
            raise SystemExit(f"--shapes expects KxN[,KxN...], e.g. 4096x11008; got {item!r}")
        shapes.append((int(k), int(n)))
    return shapes


def run(args: argparse.Namespace) -> int:
    """Run the children (their outputs go to a temporary folder), then write the results."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tdsl-bench-") as work:
        return _run(args, out, Path(work))


def _run(args: argparse.Namespace, out: Path, work: Path) -> int:
    from bench_roofline import default_mib, run_roofline

    shapes = parse_shapes(args.shapes) if args.shapes else list(QUICK_SHAPES if args.quick else SHAPES)
    batches = ([int(b) for b in args.batches.split(",")] if args.batches
               else list(QUICK_BATCHES if args.quick else BATCHES))
    repeats = args.repeats or (2 if args.quick else 30)
    machine = machine_info(args.threads)
    l3 = int(args.l3_mib * MiB) if args.l3_mib else (machine["l3_bytes"] or PROTOCOL_L3)
    json_path = out / "bench_kernels.json"
    previous = json.loads(json_path.read_text()) if args.update and json_path.exists() else None

    mem_limit = int(args.max_mem_gib * 2**30) if args.max_mem_gib else memory_budget()
    measure_roofline = not (previous and not args.roofline)
    # step costs ~ the weights a child streams: K x N per shape and library, the roofline as a small shape
    progress = Progress(([min(K * N for K, N in shapes) / 2] if measure_roofline else [])
                        + [K * N for K, N in shapes for _ in ("torch", "tdsl")])
    print(f"{len(shapes)} shapes x B = {batches}, {repeats} repeats; each child bounded to "
          f"{mem_limit / 2**30:.1f} GiB (--max-mem-gib)", file=sys.stderr)
    if not measure_roofline:
        roofline = previous["roofline"]
    else:
        mib = 64 if args.quick else default_mib()
        progress.step(f"roofline: streaming read of {mib} MiB")
        roofline = run_roofline(mib, 3 if args.quick else 10, args.threads)
    roof = roofline["roofline_gb_s"]

    measurements: list[dict[str, Any]] = []
    children: list[dict[str, Any]] = []
    for K, N in shapes:
        layers = cold_layers(K, N, l3, args.layers or (4 if args.quick else None))
        biggest = max(BYTES_PER_WEIGHT[f] * K * N * r for f, r in layers.items())
        avail = meminfo_bytes("MemAvailable")
        if avail and 2.5 * biggest > min(avail, mem_limit or avail):
            raise SystemExit(f"the cold sets for {label(K, N)} need about {2.5 * biggest / 2**30:.1f} "
                             f"GiB but {avail / 2**30:.1f} GiB are available and children are bounded to "
                             f"{mem_limit / 2**30:.1f} GiB; lower --l3-mib, set --layers or raise --max-mem-gib")
        cfg = ChildConfig(K, N, batches, layers, repeats, args.threads, args.seed, str(work))
        results = []
        for lib in ("torch", "tdsl"):
            progress.step(f"{label(K, N)}: {lib} (R = {layers})")
            try:
                results.append(run_child(SCRIPT, ["--child", lib, "--config", json.dumps(asdict(cfg))],
                                         args.threads, mem_limit=mem_limit))
            except RuntimeError as e:
                raise SystemExit(str(e)) from None
            time.sleep(1.0)
        if results[0]["fingerprint"] != results[1]["fingerprint"]:
            raise SystemExit(f"{label(K, N)}: the torch and tdsl children built different inputs")
        shape_ms = [m for r in results for m in r["measurements"]]
        compare_outputs(work, label(K, N), shape_ms)
        bad = [m for m in shape_ms if m["rel_err_ref"] > MAX_REL_ERR]
        if bad:
            raise SystemExit("outputs disagree with the float64 reference: "
                             + ", ".join(f"{m['lib']} B={m['batch']}: {m['rel_err_ref']:.2e}"
                                         for m in bad))
        for r in results:
            for m in r["measurements"]:
                m["loadavg_1min"] = r["loadavg_1min"]
            children.append({k: v for k, v in r.items() if k != "measurements"}
                            | {"shape": label(K, N)})
        measurements += shape_ms

    if previous:
        keys = {(m["shape"], m["lib"], m["batch"], m["regime"]) for m in measurements}
        measurements = [m for m in previous["measurements"]
                        if (m["shape"], m["lib"], m["batch"], m["regime"]) not in keys] + measurements
        children = previous["children"] + children
        machine = {**previous["machine"], "loadavg_updates": previous["machine"].get(
            "loadavg_updates", []) + [machine["loadavg_start"]]}
    order = {lib: i for i, lib in enumerate((*TORCH_LIBS, "tdsl-vnni", "tdsl-portable"))}
    measurements.sort(key=lambda m: (m["K"], m["N"], m["batch"], m["regime"] != "warm",
                                     order[m["lib"]]))
    progress.finish()
    rows = derive_rows(measurements, roof)
    machine["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    data = {"benchmark": "kernels", "quick": args.quick, "machine": machine,
            "protocol": {"threads": args.threads, "repeats": repeats, "warmup_calls": WARMUP_CALLS,
                         "mem_limit_bytes": mem_limit,
                         "cold_factor": COLD_FACTOR, "l3_bytes_used": l3,
                         "protocol_l3_bytes": PROTOCOL_L3, "distinct_layers": DISTINCT_LAYERS,
                         "layers_fixed": args.layers or (4 if args.quick else None),
                         "seed": args.seed},
            "roofline": roofline, "targets": [dict(zip(("path", "batch", "regime", "shape",
                                                        "metric", "threshold"), t)) for t in TARGETS],
            "children": children, "measurements": measurements, "rows": rows}
    write_json(json_path, data)
    header = (f"tdsl kernels vs torch, {args.threads} threads, {machine['cpu_model']}; "
              f"roofline {roof:.1f} GB/s ({roofline['roofline_reader']}); "
              f"load avg {machine['loadavg_start'][0]} -> {machine['loadavg_end'][0]}"
              + ("; QUICK (tiny shapes, not comparable)" if args.quick else ""))
    tables = (rows_table(rows), baselines_table(measurements, roof))
    notes = footnotes(*tables)
    text = (header + "\n\nRatios are torch time / tdsl time (> 1: tdsl faster); GB/s = weight "
            "bytes / median time; err = max |y - ref| / max |ref| vs float64.\n\n" + tables[0]
            + "\n\nAll measurements:\n\n" + tables[1] + ("\n\n" + notes if notes else "")
            + "\n\n" + setup_notes(data))
    print(text)
    write_text_atomic(out / "bench_kernels.md", text + "\n")
    plot(rows, measurements, roof, out / "bench_kernels.png", header)
    print(f"\nwrote {json_path}, {out / 'bench_kernels.md'}, {out / 'bench_kernels.png'}",
          file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke run: K x N = {QUICK_SHAPES}, B = {QUICK_BATCHES}, R = 4, 2 repeats")
    ap.add_argument("--out", type=Path, default=Path("bench_results"))
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per warm measurement "
                    "(cold: max(repeats, R)); default 30, 2 with --quick")
    ap.add_argument("--shapes", help="KxN list, default 4096x4096,4096x11008")
    ap.add_argument("--batches", help="default 1,8,64")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--l3-mib", type=float, default=None,
                    help="L3 size the cold sets are sized against (default: sysfs)")
    ap.add_argument("--layers", type=int, default=None, help="force R for every format")
    ap.add_argument("--max-mem-gib", type=float, default=None,
                    help="stop a timing child above this resident memory (default: 3/4 of what is available)")
    ap.add_argument("--update", action="store_true",
                    help="rerun only the given shapes/batches and replace them in the existing JSON "
                         "(keeps its roofline unless --roofline)")
    ap.add_argument("--roofline", action="store_true", help="with --update: remeasure the roofline")
    ap.add_argument("--child", choices=["torch", "tdsl"], help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        cfg = ChildConfig(**json.loads(args.config))
        emit_child_result(child_torch(cfg) if args.child == "torch" else child_tdsl(cfg))
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
