"""`tdsl bench kernels|roofline|models|llm|all`: run the speed benchmarks of a source checkout.

The benchmarks live in `benchmarks/` at the repository root, not in the installed package:
they time tdsl against torch, need a checkout anyway (their results are committed under
docs/results/). `kernels` starts one child process per library so that torch's and Numba's
thread pools never share a process (KERNELS.md, "Pitfalls"); `models` times every contender
(tdsl, torch, onnxruntime) in one process, interleaved and alone, as an application that mixes
them would see them (docs/results/bench_models.md). This command therefore only finds the
scripts next to the `tdsl` package (an editable install or a checkout on PYTHONPATH) and runs
each in its own process; it imports neither torch nor numba. `all` runs `kernels` (which
measures the roofline itself) and then `models`. More options (shapes, batches, L3 size,
rerunning rows into an existing JSON): `python benchmarks/bench_<what>.py --help`. `llm` times
decoder prefill and decode tokens/s (tdsl b1.58 on Numba vs torch fp32, bf16, int8 dynamic).

`tdsl bench models --profile MODEL` needs no checkout: it quantizes a zoo model (random
weights, the default precision policy unless `--policy all`), deploys it on the Numba CPU
runtime with profiling on, and prints where the time of one forward goes, step by step.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import tdsl
from tdsl.errors import TdslError
from tdsl.tools.common import command_main

SCRIPTS: dict[str, str] = {"kernels": "bench_kernels.py", "roofline": "bench_roofline.py",
                           "models": "bench_models.py", "llm": "bench_llm.py"}
ALL: tuple[str, ...] = ("kernels", "models")


def benchmarks_dir() -> Path:
    """The checkout's `benchmarks/` folder, or a TdslError saying that a checkout is needed."""
    folder = Path(tdsl.__file__).resolve().parents[1] / "benchmarks"
    if not (folder / "common.py").is_file():
        raise TdslError(f"tdsl bench runs the scripts in a source checkout's benchmarks/ folder, "
                        f"but {folder} has none: install tdsl from a checkout (pip install -e .)")
    return folder


def cmd_profile(args: argparse.Namespace) -> int:
    """The per-step table of one zoo model on the Numba CPU runtime (imports torch to quantize)."""
    import time

    import numpy as np

    from tdsl.models import zoo_path
    from tdsl.model.precision import quantize
    from tdsl.tools.run import input_shape_for

    zoo_path(args.profile)  # an unknown name fails here, naming the zoo
    params = {"image_size": args.image_size} if args.image_size else {}
    policy = {} if args.policy == "default" else {"policy": args.policy}
    frozen = quantize(args.profile, precision="ternary", params=params, **policy)
    shape = input_shape_for(frozen.compiled, args.batch, None)  # every zoo model has one ranked input
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    calibrate = [rng.standard_normal(shape).astype(np.float32) for _ in range(2)] \
        if args.act_quant == "int8-nhwc" else None
    run = frozen.deploy(profile=True, act_quant=args.act_quant, calibrate=calibrate)
    start = time.perf_counter()
    run(x)
    first = time.perf_counter() - start
    walls = []
    for _ in range(args.calls):
        start = time.perf_counter()
        run(x)
        walls.append(time.perf_counter() - start)
    rows = run.profile()
    from tdsl.backends.numba.profile import format_table

    print(f"{args.profile} {'x'.join(map(str, shape))}, policy {args.policy}, act_quant {args.act_quant}: "
          f"first call {first * 1e3:.0f} ms (compiles or loads the kernels), median of {args.calls} calls below")
    print(format_table(rows, args.top))
    wall, steps = 1e3 * float(np.median(walls)), sum(r.ms for r in rows)
    print(f"call {wall:.3f} ms (median): the steps {steps:.3f} ms, outside them {max(wall - steps, 0.0):.3f} ms "
          "(input checks, binding, threads and BLAS setup, output copies)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.profile is not None:
        if args.what != "models":
            raise TdslError("--profile goes with `tdsl bench models`")
        return cmd_profile(args)
    folder = benchmarks_dir()
    names = ALL if args.what == "all" else (args.what,)
    scripts = [folder / SCRIPTS[name] for name in names]
    for script in scripts:
        if not script.is_file():
            raise TdslError(f"{script} does not exist in this checkout")
    for script in scripts:
        argv = [sys.executable, str(script), "--out", str(args.out)]
        if args.quick:
            argv.append("--quick")
        if args.repeats is not None:
            argv += ["--repeats", str(args.repeats)]
        if args.max_mem_gib is not None and script.name in (SCRIPTS["kernels"], SCRIPTS["models"]):
            argv += ["--max-mem-gib", str(args.max_mem_gib)]
        status = subprocess.call(argv)
        if status != 0:
            raise TdslError(f"{script.name} failed with exit status {status}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run the speed benchmarks (table, JSON and PNG in --out)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=[*SCRIPTS, "all"], help="which benchmark to run")
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes and 1-2 repeats: checks that it runs, times mean nothing")
    p.add_argument("--out", type=Path, default=Path("bench_results"),
                   help="folder for the JSON, Markdown table and PNG (default ./bench_results)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed calls per measurement (default: each script's own)")
    p.add_argument("--max-mem-gib", type=float, default=None,
                   help="with `kernels` and `models`: stop a benchmark process above this resident memory "
                        "(default: 3/4 of the memory available at the start)")
    p.add_argument("--profile", metavar="MODEL", default=None,
                   help="with `models`: print the per-step time table of one zoo model (no checkout needed)")
    p.add_argument("--batch", type=int, default=1, help="with --profile: the batch size (default 1)")
    p.add_argument("--image-size", type=int, default=None,
                   help="with --profile: the model's image_size parameter (default: the model's own)")
    p.add_argument("--policy", choices=["default", "all"], default="default",
                   help="with --profile: 'default' keeps the first and last layers fp16, 'all' is all-ternary")
    p.add_argument("--act-quant", choices=["int8", "float", "int8-nhwc"], default="int8",
                   help="with --profile: the packed kernels' activations (default int8; int8-nhwc: u8 NHWC "
                        "between layers, static scales calibrated on 2 random batches)")
    p.add_argument("--calls", type=int, default=10, help="with --profile: timed calls (default 10)")
    p.add_argument("--top", type=int, default=None, help="with --profile: only the N slowest steps")
    p.set_defaults(func=cmd_bench)


def main(argv: list[str] | None = None) -> int:
    return command_main(add_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
