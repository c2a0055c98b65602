"""Helpers the command-line tools share: parameters on the command line, safe output, the
model arguments of `tdsl compile` / `tdsl run`, and running one command with the `tdsl`
error handling (a user error prints one diagnostic and exits 1, never a traceback)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable

from tdsl.errors import TdslError, missing_dependency


def parse_param(text: str) -> tuple[str, object]:
    """`NAME=VALUE`; VALUE is read as JSON when it parses (ints, floats, true/false, lists)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise TdslError(f"--param expects NAME=VALUE, but got '{text}'")
    try:
        value: object = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def params_from(args: argparse.Namespace) -> dict[str, Any]:
    """The entry layer's parameters from the repeatable `--param NAME=VALUE` options."""
    return dict(parse_param(p) for p in (args.param or []))


def add_force_arg(p: argparse.ArgumentParser) -> None:
    """`--force`: the one way to let a command replace an output that already exists."""
    p.add_argument("--force", action="store_true", help="replace output files or folders that already exist")


def refuse_overwrite(path: str | os.PathLike[str] | None, force: bool, flag: str = "-o") -> None:
    """Fail before any work when `path` exists and `--force` was not given: a typo in `-o`
    must not silently replace a file (mlir-opt and most tools would; we ask instead)."""
    if path is None or str(path) == "-" or force or not os.path.lexists(path):
        return
    kind = "folder" if os.path.isdir(path) else "file"
    raise TdslError(f"{flag} {path}: the {kind} already exists; pass --force to replace it")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The model to compile and how: `tdsl compile` and `tdsl run`."""
    p.add_argument("model", help="a zoo model name (see `tdsl models`), or a .tdsl / .tri file")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="a parameter of the entry layer (repeatable), e.g. --param num_classes=10")
    p.add_argument("--entry", help="the layer to build (default: the last one in the file)")
    p.add_argument("-p", "--pipeline", default=None,
                   help="pass pipeline, e.g. 'shape-infer,canonicalize' (default)")
    p.add_argument("--print-ir-after-all", action="store_true",
                   help="print the IR after IR generation and after every pass")


def add_remote_args(p: argparse.ArgumentParser, token_env: str, url_flag: str, url_help: str) -> None:
    """`--token` and the service URL option: `tdsl publish` and `tdsl fetch`."""
    p.add_argument("--token", help=f"access token (default: {token_env}; prefer the environment)")
    p.add_argument(url_flag, dest="url", help=url_help)


def compile_model(args: argparse.Namespace) -> Any:
    """`tdsl.compile` of the model `add_model_args` describes, printing the IR after every
    pass with --print-ir-after-all."""
    from tdsl.api import compile as compile_
    from tdsl.api import print_ir

    def show(name: str, module: Any) -> None:
        if args.print_ir_after_all:
            print(f"// -----// IR after {name} //----- //")
            print(print_ir(module))

    return compile_(args.model, entry=args.entry, params=params_from(args),
                    pipeline=args.pipeline, after_pass=show)


def run_main(fn: Callable[[], int]) -> int:
    """Run a CLI body: user errors print one diagnostic and give exit status 1."""
    try:
        return fn()
    except TdslError as e:
        print(e.render(), file=sys.stderr)
        return 1
    except ModuleNotFoundError as e:
        missing = missing_dependency(e)
        if missing is None:
            raise
        print(missing.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def dispatch(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse `argv` (default: sys.argv[1:]) and run the chosen command's `func`. --help gives
    0 and a usage error 1, as returned exit statuses rather than SystemExit."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return 0 if e.code in (0, None) else 1
    return run_main(lambda: args.func(args))


def command_main(add_parser: Callable[[Any], None], argv: list[str] | None) -> int:
    """A command module's `main`: parse `argv` for that one `tdsl` subcommand, as
    `tdsl NAME ARGV...` would, and run it."""
    parser = argparse.ArgumentParser(prog="tdsl")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    (name,) = sub.choices
    return dispatch(parser, [name, *(sys.argv[1:] if argv is None else argv)])
