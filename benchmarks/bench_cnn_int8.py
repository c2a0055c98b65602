"""CNNs with int8 activations: tdsl's NHWC int8 runtime against onnxruntime int8, each contender
alone in its own process, quiet and beside one competing busy process.

Workloads: ResNet-18 and MobileNetV2 at 224², batch 1 and 8, random weights from a seed (batch
norm statistics from a few training-mode passes so that activations have realistic ranges).
Every int8 contender is calibrated on the same batches.

Contenders (each in a fresh child process, `threads` threads):
  tdsl-nhwc-default  `tdsl.quantize(model)` (first conv and classifier kept fp16), deployed with
                     act_quant="int8-nhwc" and calibrated (static u8 scales)
  tdsl-nhwc-all      the same with every conv/linear ternary
  tdsl-int8-all      the previous runtime: per-token int8 tokens, NCHW float between layers
  ort-fp32           onnxruntime on the fp32 ONNX of the same (dequantised) weights
  ort-int8           onnxruntime on `quantize_static` of that file (QDQ, per-channel s8
                     weights, u8 activations, MinMax on the calibration batches)
  ort-ternary-qdq    onnxruntime on tdsl's calibrated ternary QDQ export (2-bit codes unpacked
                     to int8 at load; `export_onnx(..., calibrate=batches)`)

Under load: the same child run while one other process spins on a core; the slowdown is
loaded / quiet. Results: a Markdown table and JSON in --out.

    python benchmarks/bench_cnn_int8.py [--quick] [--out DIR] [--repeats N] [--threads T] [--rounds R]
                                        [--contenders NAME ...]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
CONTENDERS = ("tdsl-nhwc-default", "tdsl-nhwc-all", "tdsl-int8-all", "ort-fp32", "ort-int8", "ort-ternary-qdq")
CALIBRATION = 4


def params_of(workload: str, size: int) -> dict[str, Any]:
    return {"image_size": size} if workload == "mobilenetv2" else ({} if size == 224 else {"image_size": size})


def prepare(workload: str, size: int, work: Path, seed: int) -> None:
    """fp32 weights, calibration and test batches, and the ONNX files of one workload."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    import tdsl
    from bench_models import ort_int8
    from tdsl.backends.onnx import export_onnx

    params = params_of(workload, size)
    torch.manual_seed(seed)
    net = tdsl.compile(workload, params=params).to_torch()
    with torch.no_grad():
        net.train()
        for _ in range(4):
            net(torch.randn(8, 3, size, size))
    sd = {k: v.contiguous() for k, v in net.eval().state_dict().items()}
    save_file(sd, str(work / "weights.safetensors"))
    rng = np.random.default_rng(seed)
    calib = [rng.standard_normal((8, 3, size, size)).astype(np.float32) for _ in range(CALIBRATION)]
    np.savez(work / "calib.npz", *calib)
    fp32 = export_onnx(tdsl.quantize(workload, precision="fp32", params=params, weights=sd), work / "fp32.onnx").path
    ort_int8(fp32, work / "int8.onnx", calib)
    frozen = tdsl.quantize(workload, precision="ternary", params=params, weights=sd)
    export_onnx(frozen, work / "ternary-qdq.onnx", calibrate=calib)


def contender(name: str, workload: str, size: int, batch: int, work: Path, threads: int) -> tuple[Any, Any]:
    """(run, x): one contender built in this process, warmed up, and its input."""
    import numpy as np

    calib = list(np.load(work / "calib.npz").values())
    x = np.random.default_rng(7).standard_normal((batch, 3, size, size)).astype(np.float32)
    if name.startswith("tdsl"):
        import numba
        from safetensors.numpy import load_file

        import tdsl

        numba.set_num_threads(threads)
        policy = "default" if name.endswith("default") else "all"
        frozen = tdsl.quantize(workload, precision="ternary", policy=policy, params=params_of(workload, size),
                               weights=load_file(str(work / "weights.safetensors")))
        if name.startswith("tdsl-nhwc"):
            run = frozen.deploy("numba", act_quant="int8-nhwc", calibrate=calib)
        else:
            run = frozen.deploy("numba")
    else:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        file = {"ort-fp32": "fp32.onnx", "ort-int8": "int8.onnx", "ort-ternary-qdq": "ternary-qdq.onnx"}[name]
        session = ort.InferenceSession(str(work / file), options, providers=["CPUExecutionProvider"])
        iname = session.get_inputs()[0].name
        run = lambda a: session.run(None, {iname: a})[0]  # noqa: E731
    for _ in range(3):
        run(x)
    return run, x


def timed_calls(run: Any, x: Any, n: int) -> list[float]:
    """The ms of each of n calls run(x)."""
    ms = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        run(x)
        ms.append((time.perf_counter_ns() - t0) / 1e6)
    return ms


def child(name: str, workload: str, size: int, batch: int, work: Path, threads: int, repeats: int) -> dict[str, Any]:
    """Time one contender in this process: median and p10/p90 ms of `repeats` calls after warm-up."""
    import numpy as np

    run, x = contender(name, workload, size, batch, work, threads)
    ms = np.asarray(timed_calls(run, x, repeats))
    return {"median": float(np.median(ms)), "p10": float(np.percentile(ms, 10)), "p90": float(np.percentile(ms, 90))}


def serve(name: str, workload: str, size: int, batch: int, work: Path, threads: int) -> None:
    """A contender as a server: "ready" once built, then for each line "N" on stdin N timed calls,
    their ms as one JSON line; an empty line ends it."""
    run, x = contender(name, workload, size, batch, work, threads)
    print("ready", flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        print(json.dumps(timed_calls(run, x, int(line))), flush=True)


def paired(args: argparse.Namespace, names: tuple[str, ...], workload: str, size: int, batch: int,
           work: Path) -> dict[str, Any]:
    """Every contender in its own server process, taking turns of a few calls for `args.paired`
    turns each (A B C A B C ...; the others idle meanwhile, 50 ms apart so that a pool's spin
    has ended): neighbouring turns meet the same host, so the ratio of each turn's median to the
    ort-int8 turn beside it is robust to the host's swings of minutes that separate rounds of
    whole processes are not. Returns per contender the median, p10, p90 of all its calls and
    "vs_ort": the median over turns of ort-int8's turn median / its own."""
    import numpy as np

    procs = {}
    try:
        for name in names:
            procs[name] = subprocess.Popen(
                [sys.executable, __file__, "--serve", name, "--workload", workload, "--size", str(size), "--batch",
                 str(batch), "--work", str(work), "--threads", str(args.threads)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            if procs[name].stdout.readline().strip() != "ready":
                raise RuntimeError(f"{name} {workload} B={batch}: its server did not start")
        turns: dict[str, list[list[float]]] = {name: [] for name in names}
        for _ in range(args.paired):
            for name, proc in procs.items():
                time.sleep(0.05)
                proc.stdin.write(f"{args.repeats}\n")
                proc.stdin.flush()
                turns[name].append(json.loads(proc.stdout.readline()))
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.stdin.write("\n")
                proc.stdin.flush()
                proc.wait(timeout=60)
    out = {}
    for name, ts in turns.items():
        calls = np.concatenate(ts)
        print(f"  B={batch} {name}: {np.median(calls):.2f} ms", file=sys.stderr)
        res = {"median": float(np.median(calls)), "p10": float(np.percentile(calls, 10)),
               "p90": float(np.percentile(calls, 90)), "turns": [float(np.median(t)) for t in ts]}
        if "ort-int8" in turns:
            res["vs_ort"] = float(np.median([np.median(o) / np.median(t) for o, t in zip(turns["ort-int8"], ts)]))
        out[name] = res
    return out


def rounds(args: argparse.Namespace, names: tuple[str, ...], workload: str, size: int, batch: int,
           work: Path) -> dict[str, Any]:
    """`args.rounds` rounds of every contender, each in a fresh child process, interleaved; per
    contender its median round, every round's median beside it, and its fastest p10."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for _ in range(max(1, args.rounds)):
        for name in names:
            runs[name].append(run_child(args, name, workload, size, batch, work, loaded=False))
            print(f"  B={batch} {name}: {runs[name][-1]['median']:.2f} ms", file=sys.stderr)
    out = {}
    for name, results in runs.items():
        middle = sorted(results, key=lambda r: r["median"])[(len(results) - 1) // 2]
        out[name] = {**middle, "rounds": [r["median"] for r in results], "best_p10": min(r["p10"] for r in results)}
    return out


def run_child(args: argparse.Namespace, name: str, workload: str, size: int, batch: int, work: Path,
              loaded: bool) -> dict[str, Any]:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if loaded else None
    try:
        out = subprocess.run([sys.executable, __file__, "--child", name, "--workload", workload, "--size", str(size),
                              "--batch", str(batch), "--work", str(work), "--threads", str(args.threads),
                              "--repeats", str(args.repeats)], capture_output=True, text=True, timeout=1800)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    if out.returncode != 0:
        raise RuntimeError(f"{name} {workload} B={batch}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict[str, Any]], contenders: tuple[str, ...] = CONTENDERS) -> str:
    head = ["workload", "B"] + [f"{c} ms" for c in contenders] + ["nhwc-all / ort-int8", "nhwc-default / ort-int8",
                                                                 "qdq / ort-int8"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def ratio(q: dict[str, Any], c: str) -> str:
        if c in q and "vs_ort" in q[c]:  # paired turns: the median of the turns' ratios
            return f"{q[c]['vs_ort']:.2f}x"
        return f"{q['ort-int8']['median'] / q[c]['median']:.2f}x" if c in q and "ort-int8" in q else "-"

    for r in rows:
        q = r["quiet"]
        cells = [r["workload"], str(r["batch"])] + [f"{q[c]['median']:.2f}" for c in contenders]
        cells += [ratio(q, c) for c in ("tdsl-nhwc-all", "tdsl-nhwc-default", "ort-ternary-qdq")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Under one competing busy process (loaded ms, slowdown = loaded / quiet):", "",
              "| workload | B | " + " | ".join(f"{c}" for c in ("tdsl-nhwc-all", "ort-int8")) + " |", "|---|---|---|---|"]
    for r in rows:
        if "loaded" not in r:
            continue
        cells = [r["workload"], str(r["batch"])]
        for c in ("tdsl-nhwc-all", "ort-int8"):
            loaded = r["loaded"].get(c)
            cells.append(f"{loaded['median']:.2f} ({loaded['median'] / r['quiet'][c]['median']:.1f}x)" if loaded else "-")
        lines.append("| " + " | ".join(cells) + " |")
    if any(len(r["quiet"][c].get("rounds", ())) > 1 for r in rows for c in r["quiet"]):
        lines += ["", "Quickest calls (each contender's fastest p10 over its rounds: a noisy host only ever adds "
                  "time, so these are the least disturbed figures):", "",
                  "| workload | B | " + " | ".join(f"{c} ms" for c in contenders) + " | nhwc-all / ort-int8 | "
                  "nhwc-default / ort-int8 |", "|" + "---|" * (len(contenders) + 4)]
        for r in rows:
            q = r["quiet"]
            best = {c: q[c].get("best_p10", q[c]["p10"]) for c in contenders}
            cells = [r["workload"], str(r["batch"])] + [f"{best[c]:.2f}" for c in contenders]
            cells += [f"{best['ort-int8'] / best[c]:.2f}x" if c in best and "ort-int8" in best else "-"
                      for c in ("tdsl-nhwc-all", "tdsl-nhwc-default")]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def with_notes(text: str, old: str) -> str:
    """The new tables followed by the hand-written sections of the file they replace (from its
    first "## " heading on): a rerun updates the figures without losing their reading."""
    at = old.find("\n## ")
    return text + old[at:] if at >= 0 else text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="MobileNetV2 at 64², B=1, 3 calls: checks that it runs")
    p.add_argument("--out", default=None, help="folder for bench_cnn_int8.md / .json")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-load", action="store_true", help="skip the under-load runs")
    p.add_argument("--rounds", type=int, default=1,
                   help="quiet runs of every contender, interleaved (A B C A B C ...): the table gives the median "
                        "round, robust to a noisy host's bursts (default 1)")
    p.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS,
                   help="the contenders to run (default: all; ort-int8 is the denominator of the ratios)")
    p.add_argument("--paired", type=int, default=0, metavar="TURNS",
                   help="instead of rounds of whole processes: every contender in its own long-lived process, "
                        "taking TURNS turns of --repeats calls each (robust ratios on a noisy host)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    p.add_argument("--workload", default=None, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=224, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.workload, args.size, args.batch, Path(args.work), args.threads,
                               args.repeats)))
        return 0
    if args.serve:
        serve(args.serve, args.workload, args.size, args.batch, Path(args.work), args.threads)
        return 0
    from common import machine_info

    plan = [("mobilenetv2", 64, (1,))] if args.quick else [("resnet18", 224, (1, 8)), ("mobilenetv2", 224, (1, 8))]
    if args.quick:
        args.repeats = 3
    contenders = tuple(c for c in CONTENDERS if c in args.contenders)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for workload, size, batches in plan:
            work = Path(tmp) / workload
            work.mkdir()
            print(f"{workload}: preparing", file=sys.stderr)
            prepare(workload, size, work, seed=0)
            for batch in batches:
                row: dict[str, Any] = {"workload": workload, "batch": batch, "size": size, "quiet": {}}
                row["quiet"] = (paired if args.paired else rounds)(args, contenders, workload, size, batch, work)
                if not args.no_load and not args.quick:
                    row["loaded"] = {name: run_child(args, name, workload, size, batch, work, loaded=True)
                                     for name in ("tdsl-nhwc-all", "ort-int8") if name in contenders}
                rows.append(row)
    info = machine_info(args.threads)
    text = (f"# CNNs with int8 activations, each contender alone in its process\n\n{info['cpu_model']} "
            f"({', '.join(info['isa_flags'])}), {info['logical_cpus']} CPUs, load average at start "
            f"{info['loadavg_start']}, commit {info['git_commit']}; {args.threads} threads, "
            f"median of {args.repeats} calls after 3 warm-ups"
            + (f", the median of {args.rounds} interleaved rounds" if args.rounds > 1 and not args.paired else "")
            + (f"; paired: each contender one process, {args.paired} turns of these calls taken in turn, ms the "
               "median of all its calls, ratios the median over turns of ort-int8's turn / the contender's beside it"
               if args.paired else "")
            + ".\n\n" + table(rows, contenders) + "\n")
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        md = out / "bench_cnn_int8.md"
        md.write_text(with_notes(text, md.read_text() if md.exists() else ""))
        (out / "bench_cnn_int8.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
