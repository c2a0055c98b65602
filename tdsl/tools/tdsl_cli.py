"""`tdsl`: the main jobs (compile, run, train, quantize, export, ...) from the command line.

One module per subcommand under `tdsl/tools/`, named for it, each with `add_parser(sub)`
(registers the command and its arguments) and `main(argv)` (that command alone); this module
builds the top-level parser from `COMMANDS` and dispatches. A thin layer over the Python API.
User errors print one diagnostic and exit 1; output files are written to a temporary name
and renamed, so a failure never leaves half a file.
"""
from __future__ import annotations

import argparse
import sys

from tdsl import __version__
from tdsl.tools import bench, export, fetch, generate, import_, models, publish, quantize, run, train
from tdsl.tools import compile as compile_cmd
from tdsl.tools.common import dispatch

COMMANDS = (compile_cmd, run, models, train, publish, fetch, quantize, bench, export, generate, import_)
"""The command modules, in the order `tdsl --help` lists them."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tdsl", description="tdsl: ternary neural network compiler")
    parser.add_argument("--version", action="version", version=f"tdsl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return dispatch(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
