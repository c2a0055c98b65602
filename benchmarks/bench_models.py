"""ResNet-18 and MobileNetV2 end to end: tdsl's Numba deployment against torch fp32 eager.

Each zoo model (ImageNet shape: 3 x 224 x 224 inputs, 1000 classes) is initialised from a
seed and quantised to ternary by `tdsl.quantize` (default policy). Two child processes per
model, so that torch's and Numba's thread pools never meet (KERNELS.md, "Pitfalls"):
  torch  builds the fp32 eager module of the same program, loaded with the frozen model's
         dequantised weights (the numbers the ternary model computes with), saves the package
         (`tdsl.save`), its inputs and outputs, and times the eager module;
  tdsl   loads the package without torch (`tdsl.load(...).deploy("numba")`), checks its
         outputs against torch's (max |y - y_torch| / max |y_torch| and top-1 agreement;
         above MAX_REL_ERR it stops) and times the deployed model.
Times: median of `repeats` calls after 2 warm-up calls (the first deployed call compiles;
its time is recorded apart). Target (issue "Benchmarks"): ResNet-18, batch 1, >= 2x torch fp32.

    python benchmarks/bench_models.py [--quick] [--out DIR] [--repeats N] [--models resnet18,...]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (emit_child_result, machine_info, markdown_table, rel_err, run_child,
                    time_calls, write_json, write_text_atomic)

SCRIPT = Path(__file__).resolve()
MODELS = ("resnet18", "mobilenetv2")
BATCHES = (1, 32)
QUICK_BATCHES = (1, 2)
WARMUP_CALLS = 2
MAX_REL_ERR = 0.25  # int8 activations through ~20 layers; measured values go to the JSON
CALIBRATION_BATCHES = 4
TARGETS = {("resnet18", 1): 2.0}  # (model, batch) -> speed-up over torch fp32 eager


def model_params(quick: bool) -> dict[str, int]:
    return {"num_classes": 10, "image_size": 32} if quick else {"num_classes": 1000, "image_size": 224}


def inputs(seed: int, B: int, size: int) -> Any:
    import numpy as np

    return np.random.default_rng([seed, B]).standard_normal((B, 3, size, size)).astype(np.float32)


def calibrated_fp32(model: str, params: dict[str, int]) -> Any:
    """The fp32 module at its seeded initialisation with batch-norm statistics measured on
    random inputs: with the default running statistics (mean 0, variance 1) the activations
    of a freshly initialised MobileNetV2 die out and every input gives the same logits,
    which would make the agreement check vacuous."""
    import torch

    import tdsl

    net = tdsl.compile(model, params=params, pipeline="shape-infer").to_torch()
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the calibration batches
    net.train()
    with torch.no_grad():
        for _ in range(CALIBRATION_BATCHES):
            net(torch.randn(8, 3, params["image_size"], params["image_size"]))
    return net.eval()


def child_torch(cfg: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    import tdsl

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"])
    start = time.perf_counter()
    frozen = tdsl.quantize(cfg["model"], precision="ternary", params=cfg["params"],
                           weights=calibrated_fp32(cfg["model"], cfg["params"]).state_dict())
    eager = tdsl.compile(cfg["model"], params=cfg["params"], pipeline="shape-infer").to_torch()
    eager.load_state_dict(frozen.dequantized_state_dict(), strict=True)
    eager.eval()
    tdsl.save(frozen, cfg["package"], overwrite=True)
    setup_s = time.perf_counter() - start
    out, results = {}, []
    with torch.inference_mode():
        for B in cfg["batches"]:
            x = torch.from_numpy(inputs(cfg["seed"], B, cfg["params"]["image_size"]))
            out[f"b{B}"] = eager(x).numpy()
            t = time_calls(lambda i: eager(x), cfg["repeats"], WARMUP_CALLS)
            results.append({"model": cfg["model"], "lib": "torch-fp32-eager", "batch": B, **t})
    np.savez(cfg["outputs"], **out)
    mem = frozen.memory_report()
    return {"lib": "torch", "measurements": results, "setup_s": setup_s,
            "frozen_bytes": int(mem.total), "fp32_bytes": int(mem.fp32_total),
            "torch_threads": torch.get_num_threads()}


def child_tdsl(cfg: dict[str, Any]) -> dict[str, Any]:
    import numba
    import numpy as np

    import tdsl
    from tdsl.runtime.cpu_features import kernel_path

    numba.set_num_threads(cfg["threads"])
    start = time.perf_counter()
    model = tdsl.load(cfg["package"]).deploy("numba")
    load_s = time.perf_counter() - start
    expected = np.load(cfg["outputs"])
    results = []
    for B in cfg["batches"]:
        x = inputs(cfg["seed"], B, cfg["params"]["image_size"])
        t0 = time.perf_counter()
        y = model(x)
        first_s = time.perf_counter() - t0
        ref = expected[f"b{B}"]
        err = rel_err(y, ref)
        top1 = float(np.mean(np.argmax(y, axis=1) == np.argmax(ref, axis=1)))
        if B > 1 and float(np.max(np.std(ref, axis=0))) == 0.0:
            raise SystemExit(f"{cfg['model']} B={B}: torch gives the same logits for every "
                             f"input, so agreement would prove nothing")
        if err > MAX_REL_ERR:
            raise SystemExit(f"{cfg['model']} B={B}: the Numba deployment disagrees with torch "
                             f"fp32 (max rel. error {err:.3g} > {MAX_REL_ERR})")
        t = time_calls(lambda i: model(x), cfg["repeats"], WARMUP_CALLS)
        results.append({"model": cfg["model"], "lib": "tdsl-numba", "batch": B, **t,
                        "first_call_s": first_s, "rel_err_torch_fp32": err, "top1_agree": top1})
    return {"lib": "tdsl", "measurements": results, "load_s": load_s,
            "compile_s": model.compile_seconds, "kernel_path": kernel_path(),
            "numba_threads": numba.get_num_threads(), "torch_imported": "torch" in sys.modules}


def derive_rows(measurements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    index = {(m["model"], m["lib"], m["batch"]): m for m in measurements}
    rows = []
    for m in measurements:
        if m["lib"] != "tdsl-numba":
            continue
        base = index[(m["model"], "torch-fp32-eager", m["batch"])]
        speedup = base["median_ms"] / m["median_ms"]
        target = TARGETS.get((m["model"], m["batch"]))
        rows.append({"model": m["model"], "batch": m["batch"], "tdsl_ms": m["median_ms"],
                     "torch_fp32_ms": base["median_ms"], "x_fp32": speedup,
                     "rel_err_torch_fp32": m["rel_err_torch_fp32"], "top1_agree": m["top1_agree"],
                     "first_call_s": m["first_call_s"], "target": target,
                     "verdict": "-" if target is None else "PASS" if speedup >= target else "MISS"})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    return markdown_table(
        ["model", "B", "tdsl numba ms", "torch fp32 ms", "x fp32", "err vs torch", "top-1 agree",
         "first call s", "target", "result"],
        [[r["model"], str(r["batch"]), f"{r['tdsl_ms']:.2f}", f"{r['torch_fp32_ms']:.2f}",
          f"{r['x_fp32']:.2f}", f"{r['rel_err_torch_fp32']:.1e}", f"{r['top1_agree']:.0%}",
          f"{r['first_call_s']:.1f}", "-" if r["target"] is None else f">={r['target']:g}x fp32",
          r["verdict"]] for r in rows])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="32 x 32 inputs, 10 classes, B = 1, 2")
    ap.add_argument("--out", type=Path, default=Path("bench_results"))
    ap.add_argument("--repeats", type=int, default=None, help="timed calls (default 10, quick 1)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", choices=["torch", "tdsl"], help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        cfg = json.loads(args.config)
        emit_child_result(child_torch(cfg) if args.child == "torch" else child_tdsl(cfg))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    machine = machine_info(args.threads)
    measurements, children = [], []
    with tempfile.TemporaryDirectory(prefix="tdsl-bench-models-") as work:
        for name in args.models.split(","):
            cfg = {"model": name, "params": model_params(args.quick), "seed": args.seed,
                   "batches": list(QUICK_BATCHES if args.quick else BATCHES),
                   "repeats": args.repeats or (1 if args.quick else 10), "threads": args.threads,
                   "package": os.path.join(work, f"{name}.pkg"),
                   "outputs": os.path.join(work, f"{name}.npz")}
            for lib in ("torch", "tdsl"):
                print(f"{name}: {lib} ...", file=sys.stderr)
                result = run_child(SCRIPT, ["--child", lib, "--config", json.dumps(cfg)], args.threads)
                measurements += result.pop("measurements")
                children.append({"model": name, **result})
                time.sleep(1.0)
    rows = derive_rows(measurements)
    machine["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    data = {"benchmark": "models", "quick": args.quick, "machine": machine,
            "params": model_params(args.quick), "children": children,
            "measurements": measurements, "rows": rows}
    write_json(args.out / "bench_models.json", data)
    header = (f"tdsl Numba deployment vs torch fp32 eager, {args.threads} threads, "
              f"{machine['cpu_model']}; load avg {machine['loadavg_start'][0]} -> "
              f"{machine['loadavg_end'][0]}" + ("; QUICK (not comparable)" if args.quick else ""))
    text = header + "\n\n" + table(rows)
    print(text)
    write_text_atomic(args.out / "bench_models.md", text + "\n")
    print(f"\nwrote {args.out / 'bench_models.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
