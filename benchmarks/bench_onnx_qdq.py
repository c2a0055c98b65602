"""tdsl's calibrated ternary ONNX (QDQ form) against onnxruntime's own int8 QDQ model, in onnxruntime.

Workloads: ResNet-18 and MobileNetV2 at 224², seeded random weights with batch-norm statistics
measured on random inputs (`bench_models.fp32_weights`), `tdsl.quantize` with the default
policy (first conv and classifier kept fp16) and all-ternary.

Contenders (each file timed alone in its own process, `threads` intra-op threads, B=1):
  tdsl-qdq   `export_onnx(frozen, calibrate=batches)`: 2-bit codes unpacked at load into INT8
             weights, static uint8 activations; onnxruntime fuses it into QLinearConv/QGemm
  ort-int8   `quantize_static` (QDQ, per-channel int8 weights, uint8 activations, MinMax) of
             tdsl's fp32 ONNX of the same dequantised weights, calibrated on the same batches
Both compute the same function (the frozen ternary model); each output is compared with the
torch backend's on one held-out batch (max |y - y_ref| / max |y_ref|, top-1 agreement).

Timing: `rounds` rounds, each running every contender's child once (order alternated); a child
times `repeats` calls after 5 warm-up calls and reports the median; a contender's figure is the
median of its rounds' medians. Targets (issue 20, item 7): tdsl-qdq >= 0.9x ort-int8 speed at
<= 1/3 of its file bytes.

    python benchmarks/bench_onnx_qdq.py [--quick] [--out DIR] [--rounds 3] [--repeats 30]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from common import (emit_child_result, machine_info, markdown_table, rel_err, run_child,  # noqa: E402
                    time_calls, write_json, write_text_atomic)

WORKLOADS = ("resnet18", "mobilenetv2")
POLICIES = ("default", "all")
CONTENDERS = ("tdsl-qdq", "ort-int8")
SPEED_BAR, BYTES_BAR = 0.9, 3.0
WARMUP = 5


def time_file(path: str, threads: int, repeats: int, image_size: int) -> dict[str, Any]:
    """The child: one onnxruntime session on `path`, B=1, median of `repeats` calls."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    started = time.perf_counter()
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    load_s = time.perf_counter() - started
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((1, 3, image_size, image_size)).astype(np.float32)
    stats = time_calls(lambda i: session.run(None, {name: x}), repeats, WARMUP)
    return {**stats, "load_s": load_s}


def build(workload: str, policy: str, params: dict[str, Any], seed: int, batches: int, batch: int, work: Path,
          log: Any) -> dict[str, Any]:
    """Both files of one (workload, policy), their sizes and their agreement with torch."""
    import numpy as np
    import torch

    import tdsl
    from bench_models import fp32_weights, ort_int8
    from tdsl.backends.onnx import export_onnx
    from tdsl.backends.onnx.verify import run_onnx

    size = params["image_size"]
    weights = fp32_weights(workload, workload, params, seed)
    frozen = tdsl.quantize(workload, precision="ternary", policy=policy, params=params, weights=weights)
    calib = [np.random.default_rng([seed, 100 + i]).standard_normal((batch, 3, size, size)).astype(np.float32)
             for i in range(batches)]
    log(f"  {workload}/{policy}: export tdsl-qdq")
    t0 = time.perf_counter()
    qdq = export_onnx(frozen, work / f"{workload}.{policy}.qdq.onnx", calibrate=calib)
    export_s = time.perf_counter() - t0
    log(f"  {workload}/{policy}: fp32 export + quantize_static")
    fp32 = tdsl.quantize(workload, precision="fp32", params=params, weights=frozen.dequantized_state_dict())
    fp32_path = export_onnx(fp32, work / f"{workload}.{policy}.fp32.onnx").path
    t0 = time.perf_counter()
    int8_path = ort_int8(fp32_path, work / f"{workload}.{policy}.int8.onnx", calib)
    quantize_s = time.perf_counter() - t0
    x = np.random.default_rng([seed, 7]).standard_normal((16, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        ref = frozen.module(torch.from_numpy(x)).numpy()
    files = {"tdsl-qdq": qdq.path, "ort-int8": int8_path}
    checks = {}
    for name, path in files.items():
        y = run_onnx(path, [x])[0]
        checks[name] = {"rel_err": rel_err(y, ref), "top1_agree": float(np.mean(y.argmax(-1) == ref.argmax(-1)))}
    return {"files": {k: str(v) for k, v in files.items()},
            "bytes": {k: Path(v).stat().st_size for k, v in files.items()},
            "checks": checks, "export_s": {"tdsl-qdq": export_s, "ort-int8": quantize_s}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="32x32 images, 10 classes, 1 round of 5 calls")
    ap.add_argument("--out", type=Path, default=Path("bench_results"))
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=None, help="child runs per contender (default 3)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per child (default 30)")
    ap.add_argument("--calib-batches", type=int, default=4)
    ap.add_argument("--calib-batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time", metavar="ONNX", help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--image-size", type=int, default=224, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    repeats = args.repeats or (5 if args.quick else 30)
    if args.time:
        emit_child_result(time_file(args.time, args.threads, repeats, args.image_size))
        return 0
    import torch

    torch.set_num_threads(args.threads)
    params = {"num_classes": 10, "image_size": 32} if args.quick else {"num_classes": 1000, "image_size": 224}
    rounds = args.rounds or (1 if args.quick else 3)
    started = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - started:6.0f} s] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for workload in args.workloads.split(","):
            for policy in args.policies.split(","):
                row = build(workload, policy, params, args.seed, args.calib_batches, args.calib_batch, Path(tmp), log)
                runs: dict[str, list[dict[str, Any]]] = {c: [] for c in CONTENDERS}
                for r in range(rounds):
                    for c in (CONTENDERS if r % 2 == 0 else CONTENDERS[::-1]):
                        log(f"  {workload}/{policy}: time {c} (round {r + 1}/{rounds})")
                        runs[c].append(run_child(Path(__file__), ["--time", row["files"][c], "--threads",
                                                                  str(args.threads), "--repeats", str(repeats),
                                                                  "--image-size", str(params["image_size"])],
                                                 args.threads))
                ms = {c: statistics.median(run["median_ms"] for run in runs[c]) for c in CONTENDERS}
                row.update(workload=workload, policy=policy, ms=ms, runs=runs,
                           speed_ratio=ms["ort-int8"] / ms["tdsl-qdq"],
                           bytes_ratio=row["bytes"]["ort-int8"] / row["bytes"]["tdsl-qdq"])
                del row["files"]
                results.append(row)
                log(f"  {workload}/{policy}: {ms}, speed {row['speed_ratio']:.2f}x, bytes {row['bytes_ratio']:.2f}x")
    machine = machine_info(args.threads)
    body = []
    for r in results:
        body.append([r["workload"], r["policy"], f"{r['ms']['tdsl-qdq']:.2f}", f"{r['ms']['ort-int8']:.2f}",
                     f"{r['speed_ratio']:.2f}x {'PASS' if r['speed_ratio'] >= SPEED_BAR else 'MISS'}",
                     f"{r['bytes']['tdsl-qdq']:,}", f"{r['bytes']['ort-int8']:,}",
                     f"1/{r['bytes_ratio']:.2f} {'PASS' if r['bytes_ratio'] >= BYTES_BAR else 'MISS'}",
                     f"{r['checks']['tdsl-qdq']['rel_err']:.3f} / {r['checks']['ort-int8']['rel_err']:.3f}",
                     f"{r['checks']['tdsl-qdq']['top1_agree']:.2f} / {r['checks']['ort-int8']['top1_agree']:.2f}"])
    table = markdown_table(["model", "policy", "tdsl-qdq ms", "ort-int8 ms", "speed (ort/tdsl)", "tdsl-qdq bytes",
                            "ort-int8 bytes", "bytes", "rel err vs torch (tdsl / ort)", "top-1 agree (tdsl / ort)"],
                           body)
    text = (f"# tdsl QDQ ONNX vs onnxruntime int8 QDQ\n\n`python benchmarks/bench_onnx_qdq.py"
            f"{' --quick' if args.quick else ''}`: B=1, {args.threads} threads, each file alone in its own process, "
            f"median of {rounds} rounds x {repeats} calls; both calibrated on the same {args.calib_batches} batches "
            f"of {args.calib_batch}. Targets: speed >= {SPEED_BAR}x, bytes <= 1/{BYTES_BAR:g}.\n\n{table}\n\n"
            f"Machine: {machine['cpu_model']} ({machine['logical_cpus']} logical CPUs; {', '.join(machine['isa_flags'])}), "
            f"load average {machine['loadavg_start'][0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.\n")
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "bench_onnx_qdq.md", text)
    write_json(args.out / "bench_onnx_qdq.json", {"machine": machine, "results": results})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
