"""End to end: tdsl's Numba deployment against what a user would deploy instead, in one process.

Workloads (ImageNet shapes, random weights from a seed): ResNet-18 and MobileNetV2 at 224²
with batch 1 and 8, and a stack of 16 Linear(4096, 4096) at batch 1, 8 and 64. Every
contender computes the same function: the weights of `tdsl.quantize` (default policy for
the CNNs, all-ternary for the linear stack), dequantised for the float contenders.

Contenders (all with `threads` threads, in this one process):
  tdsl-default   `tdsl.quantize(model)` (first conv and classifier kept fp16) on the Numba CPU runtime
  tdsl-all       `tdsl.quantize(model, policy="all")`, every conv/linear ternary
  torch-fp32     eager fp32 module with the dequantised weights
  torch-int8     `torch.ao.quantization.quantize_dynamic` of that module (Linear layers; linear stack only)
  ort-fp32       onnxruntime on tdsl's fp32 ONNX of the dequantised weights
  ort-int8       onnxruntime on `quantize_static` of that file: QDQ, per-channel int8 weights,
                 uint8 activations calibrated (MinMax) on 8 random batches
  ort-ternary    onnxruntime on tdsl's ternary ONNX (`export_onnx` default form: 2-bit codes
                 unpacked once at session load)

Two timing modes, both reported:
  interleaved    R rounds; each round calls every contender once (order rotated), as in an
                 application that mixes libraries: a pool that spins after its call (torch's
                 OpenMP, onnxruntime's intra-op pool) takes CPU from the next one;
  alone          each contender's calls back to back after a pause: its own pool warm, the
                 others idle (the best case for each).
Times: median (p10-p90) over the calls, after 2 warm-up calls. Outputs are checked against
torch fp32 on the same weights (max |y - y_ref| / max |y_ref|, top-1 agreement).

Targets (issue "Deployment that beats what users already run"): CNNs faster than ort-int8;
linear stack B=1 >= 3x torch-int8, B=8 and B=64 >= 1x; ort-ternary >= 1x ort-fp32 at
<= 1/10 of its bytes.

    python benchmarks/bench_models.py [--quick] [--out DIR] [--repeats N] [--workloads resnet18,...]
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy's BLAS spins otherwise (KERNELS.md)

from common import (DISTURBED, MemoryGuard, Progress, footnotes, is_disturbed, machine_info,  # noqa: E402
                    markdown_table, memory_budget, rel_err, summarize, write_json, write_text_atomic)

LINEAR_STACK = str(Path(__file__).with_name("linear_stack.tdsl"))
WORKLOADS = {"resnet18": (1, 8), "mobilenetv2": (1, 8), "linear4096": (1, 8, 64)}
QUICK = {"resnet18": (1, 2), "linear4096": (1, 8)}
WARMUP = 2
CALIBRATION_BATCHES = 8
MAX_REL_ERR = 0.25  # int8 activations through ~20 layers; the measured values go to the JSON
CONTENDERS = ("tdsl-default", "tdsl-all", "torch-fp32", "torch-int8", "ort-fp32", "ort-int8", "ort-ternary")


@dataclass
class Contender:
    name: str
    call: Callable[[Any], Any]
    """numpy float32 batch -> numpy output."""
    weight_bytes: int
    ref: str
    """The torch-fp32 module (by name) whose function this one computes."""
    times: dict[str, list[int]] = field(default_factory=dict)


def params_of(workload: str, quick: bool) -> dict[str, Any]:
    if workload == "linear4096":
        return {"d": 256, "depth": 4} if quick else {"d": 4096, "depth": 16}
    return {"num_classes": 10, "image_size": 32} if quick else {"num_classes": 1000, "image_size": 224}


def input_batch(workload: str, params: dict[str, Any], B: int, seed: int) -> Any:
    import numpy as np

    shape = (B, params["d"]) if workload == "linear4096" else (B, 3, params["image_size"], params["image_size"])
    return np.random.default_rng([seed, B]).standard_normal(shape).astype(np.float32)


def fp32_weights(source: str, workload: str, params: dict[str, Any], seed: int) -> dict[str, Any]:
    """Seeded initial weights; for the CNNs, batch-norm statistics measured on random inputs
    (with mean 0 / variance 1 a fresh MobileNetV2 gives the same logits for every input,
    which would make the agreement check vacuous)."""
    import torch

    import tdsl

    torch.manual_seed(seed)
    net = tdsl.compile(source, params=params, pipeline="shape-infer").to_torch()
    if workload != "linear4096":
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None
        net.train()
        with torch.no_grad():
            for _ in range(4):
                net(torch.randn(8, 3, params["image_size"], params["image_size"]))
    return net.eval().state_dict()


def ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def ort_int8(fp32_path: Path, out: Path, calib: list[Any]) -> Path:
    """`quantize_static` as onnxruntime's documentation does it: pre-processing, QDQ,
    per-channel QInt8 weights, QUInt8 activations, MinMax calibration."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = onnx.load(str(fp32_path), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{name: x} for x in calib])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    pre = out.with_name(out.stem + ".pre.onnx")
    quant_pre_process(str(fp32_path), str(pre))
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def torch_call(module: Any) -> Callable[[Any], Any]:
    import torch

    def call(x: Any) -> Any:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return call


def build(workload: str, params: dict[str, Any], seed: int, threads: int, work: Path,
          log: Callable[[str], None]) -> tuple[dict[str, Contender], dict[str, Any]]:
    """Every contender of one workload, and the reference modules they are checked against."""
    import torch

    import tdsl
    from tdsl.backends.onnx import export_onnx

    source = LINEAR_STACK if workload == "linear4096" else workload
    weights = fp32_weights(source, workload, params, seed)
    policies = {"tdsl-all": "all"} if workload == "linear4096" else {"tdsl-default": "default", "tdsl-all": "all"}
    contenders: dict[str, Contender] = {}
    refs: dict[str, Any] = {}
    first = next(iter(policies))
    for name, policy in policies.items():
        log(f"  quantize + deploy {name}")
        frozen = tdsl.quantize(source, precision="ternary", policy=policy, params=params, weights=weights)
        eager = tdsl.compile(source, params=params, pipeline="shape-infer").to_torch()
        eager.load_state_dict(frozen.dequantized_state_dict(), strict=True)
        refs[name] = eager.eval()
        run = frozen.deploy("numba")
        contenders[name] = Contender(name, run, int(frozen.memory_report().total), name)
        if name == first:
            base, base_frozen = frozen.dequantized_state_dict(), frozen
    eager = refs[first]
    contenders["torch-fp32"] = Contender("torch-fp32", torch_call(eager),
                                         sum(v.numel() * 4 for v in base.values() if v.is_floating_point()), first)
    if workload == "linear4096":
        # what a torch user deploys: nn.Linear layers (tdsl's emitted Linear is its own module,
        # which quantize_dynamic would leave in fp32), quantised dynamically
        plain = torch.nn.Sequential(*(torch.nn.Linear(params["d"], params["d"], bias=False)
                                      for _ in range(params["depth"])))
        plain.load_state_dict({k.removeprefix("layers."): v for k, v in base.items()}, strict=True)
        dyn = torch.ao.quantization.quantize_dynamic(plain.eval(), {torch.nn.Linear}, dtype=torch.qint8)
        assert sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in dyn.modules()) == params["depth"]
        contenders["torch-int8"] = Contender("torch-int8", torch_call(dyn),
                                             sum(p.numel() for p in eager.parameters()), first)
    log("  export ONNX (fp32, ternary) and quantize_static (int8)")
    fp32_path = export_onnx(tdsl.quantize(source, precision="fp32", params=params, weights=base),
                            work / f"{workload}.fp32.onnx").path
    ternary_path = export_onnx(base_frozen, work / f"{workload}.ternary.onnx").path
    calib = [input_batch(workload, params, 8, seed + 100 + i) for i in range(CALIBRATION_BATCHES)]
    int8_path = ort_int8(fp32_path, work / f"{workload}.int8.onnx", calib)
    for name, path in (("ort-fp32", fp32_path), ("ort-int8", int8_path), ("ort-ternary", ternary_path)):
        contenders[name] = Contender(name, ort_session(path, threads), path.stat().st_size, first)
    return contenders, refs


def check(contenders: dict[str, Contender], refs: dict[str, Any], x: Any) -> dict[str, dict[str, float]]:
    """Each contender's output against torch fp32 on the weights it computes with."""
    import numpy as np
    import torch

    out = {}
    with torch.inference_mode():
        want = {name: m(torch.from_numpy(x)).numpy() for name, m in refs.items()}
    for c in contenders.values():
        y, ref = c.call(x), want[c.ref]
        agree = float(np.mean(np.argmax(y, axis=-1) == np.argmax(ref, axis=-1)))
        out[c.name] = {"rel_err": rel_err(y, ref), "top1_agree": agree}
    return out


def time_workload(contenders: dict[str, Contender], x: Any, repeats: int) -> None:
    """Fill `times["interleaved"]` and `times["alone"]` (ns per call) of every contender."""
    import torch

    order = list(contenders.values())
    with torch.inference_mode():
        for c in order:
            for _ in range(WARMUP):
                c.call(x)
        gc.disable()
        try:
            for c in order:
                c.times["interleaved"] = []
            for r in range(repeats):
                for c in order[r % len(order):] + order[:r % len(order)]:
                    t0 = time.perf_counter_ns()
                    c.call(x)
                    c.times["interleaved"].append(time.perf_counter_ns() - t0)
            for c in order:
                time.sleep(0.3)  # let the previous library's spinning workers go to sleep
                c.call(x)
                ns = []
                for _ in range(repeats):
                    t0 = time.perf_counter_ns()
                    c.call(x)
                    ns.append(time.perf_counter_ns() - t0)
                c.times["alone"] = ns
        finally:
            gc.enable()


def targets(workload: str, B: int, ms: dict[str, float], sizes: dict[str, int]) -> list[dict[str, Any]]:
    """The issue's targets for one row: (what, ratio, bar, verdict)."""
    rows = []

    def add(what: str, ratio: float, bar: float) -> None:
        rows.append({"target": what, "ratio": ratio, "bar": bar, "verdict": "PASS" if ratio >= bar else "MISS"})

    if workload == "linear4096":
        add("tdsl-all / torch-int8", ms["torch-int8"] / ms["tdsl-all"], 3.0 if B == 1 else 1.0)
    else:
        for name in ("tdsl-default", "tdsl-all"):
            add(f"{name} / ort-int8", ms["ort-int8"] / ms[name], 1.0)
    add("ort-ternary / ort-fp32 speed", ms["ort-fp32"] / ms["ort-ternary"], 1.0)
    add("ort-fp32 bytes / ort-ternary bytes", sizes["ort-fp32"] / sizes["ort-ternary"], 10.0)
    return rows


def tables(rows: list[dict[str, Any]], mode: str) -> str:
    present = [c for c in CONTENDERS if any(c in r["stats"][mode] for r in rows)]
    body = []
    for r in rows:
        cells = [r["workload"], str(r["batch"])]
        for c in present:
            s = r["stats"][mode].get(c)
            cells.append("-" if s is None else f"{s['median_ms']:.2f}{DISTURBED if is_disturbed(s) else ''}")
        body.append(cells)
    return markdown_table(["workload", "B", *(f"{c} ms" for c in present)], body)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Median ms per contender and workload (log scale), p10-p90 error bars, disturbed timings
    hatched, interleaved and alone; legend and caption outside the axes (`plots`)."""
    import plots

    fig, axes = plots.figure(2, 15, 6)
    labels = [f"{r['workload']}\nB={r['batch']}" for r in rows]
    present = [c for c in CONTENDERS if any(c in r["stats"]["alone"] for r in rows)]
    colors = dict(zip(CONTENDERS, ("#1f77b4", "#17becf", "#7f7f7f", "#bcbd22", "#ff7f0e", "#d62728", "#2ca02c")))
    width = 0.8 / len(present)
    any_disturbed = False
    for ax, mode in zip(axes[0], ("interleaved", "alone")):
        for i, c in enumerate(present):
            first = True
            for j, r in enumerate(rows):
                s = r["stats"][mode].get(c)
                if s is None:
                    continue
                plots.timing_bar(ax, j + (i - (len(present) - 1) / 2) * width, s, width, color=colors[c],
                                 label=c if first else None)
                first = False
                any_disturbed |= is_disturbed(s)
        ax.set_yscale("log")
        ax.set_xticks(range(len(rows)), labels, fontsize=8)
        ax.set_ylabel("ms per call")
        ax.set_title(f"{mode}: median ms per call (lower is better)")
    handles, names = axes[0][1].get_legend_handles_labels()
    plots.legend_outside(axes[0][1], [*handles, plots.disturbed_handle()], [*names, "disturbed"], side="right")
    caption = [plots.CAPTION + ("" if any_disturbed else " (none in this run)")]
    plots.save(fig, path, caption)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes (32x32 images, d=256), 3 repeats")
    ap.add_argument("--out", type=Path, default=Path("bench_results"))
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per contender and mode (default 15)")
    ap.add_argument("--workloads", default=None, help=f"comma list of {', '.join(WORKLOADS)}")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-mem-gib", type=float, default=None,
                    help="stop above this resident memory (default: 3/4 of what is available at the start)")
    args = ap.parse_args(argv)
    import numba
    import torch

    torch.set_num_threads(args.threads)
    numba.set_num_threads(args.threads)
    plan = QUICK if args.quick else WORKLOADS
    names = args.workloads.split(",") if args.workloads else list(plan)
    for name in names:
        if name not in WORKLOADS:
            raise SystemExit(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    repeats = args.repeats or (3 if args.quick else 15)
    args.out.mkdir(parents=True, exist_ok=True)
    machine = machine_info(args.threads)
    started = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - started:6.0f} s] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    rows, checks = [], {}
    # one step per workload build and per batch timed; the ETA assumes they cost alike (roughly so)
    steps = [(name, B) for name in names for B in plan.get(name, WORKLOADS[name])]
    progress = Progress([1.0] * (len(names) + len(steps)))
    guard = MemoryGuard(int(args.max_mem_gib * 2**30) if args.max_mem_gib else memory_budget())
    print(f"{len(steps)} workload x batch steps, {repeats} calls each; bounded to {guard.limit / 2**30:.1f} GiB "
          "(--max-mem-gib)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="tdsl-bench-models-") as tmp, guard:
        for name in names:
            params = params_of(name, args.quick)
            progress.step(f"{name} {params}: building {len(CONTENDERS)} contenders")
            contenders, refs = build(name, params, args.seed, args.threads, Path(tmp), log)
            sizes = {c.name: c.weight_bytes for c in contenders.values()}
            for B in plan.get(name, WORKLOADS[name]):
                x = input_batch(name, params, B, args.seed)
                checks[f"{name}/B{B}"] = agreement = check(contenders, refs, x)
                for c, a in agreement.items():
                    if a["rel_err"] <= MAX_REL_ERR:
                        continue
                    if c.startswith("tdsl") or c == "torch-fp32":  # ours, or the reference itself: a bug to stop on
                        raise SystemExit(f"{name} B={B}: {c} disagrees with torch fp32 (rel. error {a['rel_err']:.3g})")
                    # another library's own quantisation (onnxruntime 1.32's quantize_static of the
                    # linear stack: 0.81): timed and reported as it is, in the agreement table
                    print(f"warning: {name} B={B}: {c} disagrees with torch fp32 (rel. error {a['rel_err']:.3g}); "
                          "its times are reported with its agreement figures", file=sys.stderr)
                progress.step(f"{name} B={B}: timing {len(contenders)} contenders x {repeats} calls x 2 modes")
                time_workload(contenders, x, repeats)
                stats = {mode: {c.name: summarize(c.times[mode]) for c in contenders.values()}
                         for mode in ("interleaved", "alone")}
                rows.append({"workload": name, "batch": B, "params": params, "stats": stats, "bytes": sizes,
                             "agreement": agreement,
                             "targets": {mode: targets(name, B, {c: s["median_ms"] for c, s in stats[mode].items()},
                                                       sizes) for mode in stats}})
            del contenders, refs
            gc.collect()
    progress.finish()
    machine["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    machine["peak_rss_bytes"], machine["mem_limit_bytes"] = guard.peak, guard.limit
    data = {"benchmark": "models", "quick": args.quick, "machine": machine, "repeats": repeats, "rows": rows}
    write_json(args.out / "bench_models.json", data)
    plot(rows, args.out / "bench_models.png")
    header = (f"Models end to end, {args.threads} threads, {machine['cpu_model']} "
              f"({', '.join(machine['isa_flags'])}); load avg {machine['loadavg_start'][0]} -> "
              f"{machine['loadavg_end'][0]}; median of {repeats} calls; peak memory {guard.peak / 2**30:.2f} GiB"
              + ("; QUICK (not comparable)" if args.quick else ""))
    target_rows = [[r["workload"], str(r["batch"]), t["target"], f"{t['ratio']:.2f}",
                    f">= {t['bar']:g}", t["verdict"], f"{r['targets']['alone'][i]['ratio']:.2f}"]
                   for r in rows for i, t in enumerate(r["targets"]["interleaved"])]
    size_rows = [[r["workload"], *(f"{r['bytes'][c] / 2**20:.1f}" if c in r["bytes"] else "-" for c in CONTENDERS)]
                 for r in rows if r["batch"] == plan.get(r["workload"], WORKLOADS[r["workload"]])[0]]
    agree_rows = [[r["workload"], str(r["batch"]),
                   *(f"{r['agreement'][c]['rel_err']:.1e} / {r['agreement'][c]['top1_agree']:.0%}"
                     if c in r["agreement"] else "-" for c in CONTENDERS)] for r in rows]
    text = "\n\n".join([
        header,
        "### Interleaved (one call of each contender per round)",
        tables(rows, "interleaved"),
        "### Alone (each contender's calls back to back)", tables(rows, "alone"),
        footnotes(tables(rows, "interleaved"), tables(rows, "alone")) or "No disturbed timings.",
        "### Targets (ratio > 1 means tdsl or the ternary ONNX is faster / smaller; last column: alone)",
        markdown_table(["workload", "B", "target", "interleaved", "bar", "result", "alone"], target_rows),
        "### Weight bytes (MiB: tdsl frozen model, torch fp32 parameters, ONNX files)",
        markdown_table(["workload", *CONTENDERS], size_rows),
        "### Agreement with torch fp32 on the same weights (max rel. error / top-1)",
        markdown_table(["workload", "B", *CONTENDERS], agree_rows),
    ])
    print(text)
    write_text_atomic(args.out / "bench_models.md", text + "\n")
    print(f"\nwrote {args.out / 'bench_models.json'}, .md and .png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
