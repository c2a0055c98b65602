"""`tdsl bench kernels|roofline|models|all`: run the speed benchmarks of a source checkout.

The benchmarks live in `benchmarks/` at the repository root, not in the installed package:
they time tdsl against torch, need a checkout anyway (their results are committed under
docs/results/) and start one child process per library so that torch's and Numba's thread
pools never share a process (KERNELS.md, "Pitfalls"). This command therefore only finds the
scripts next to the `tdsl` package (an editable install or a checkout on PYTHONPATH) and runs
each in its own process; it imports neither torch nor numba. `all` runs `kernels` (which
measures the roofline itself) and then `models`. More options (shapes, batches, L3 size,
rerunning rows into an existing JSON): `python benchmarks/bench_<what>.py --help`.
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
                           "models": "bench_models.py"}
ALL: tuple[str, ...] = ("kernels", "models")


def benchmarks_dir() -> Path:
    """The checkout's `benchmarks/` folder, or a TdslError saying that a checkout is needed."""
    folder = Path(tdsl.__file__).resolve().parents[1] / "benchmarks"
    if not (folder / "common.py").is_file():
        raise TdslError(f"tdsl bench runs the scripts in a source checkout's benchmarks/ folder, "
                        f"but {folder} has none: install tdsl from a checkout (pip install -e .)")
    return folder


def cmd_bench(args: argparse.Namespace) -> int:
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
    p.set_defaults(func=cmd_bench)


def main(argv: list[str] | None = None) -> int:
    return command_main(add_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
