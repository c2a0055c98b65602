"""Helpers the command-line tools share: parameters on the command line, safe output, the
model arguments of `tdsl compile` / `tdsl run`, and running one command with the `tdsl`
error handling (a user error prints one diagnostic and exits 1, never a traceback)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tdsl.errors import TdslError, did_you_mean, missing_dependency


def parse_param(text: str) -> tuple[str, object]:
    """`NAME=VALUE`; VALUE is read as JSON when it parses (ints, floats, true/false, lists)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise TdslError(f"--param expects NAME=VALUE, but got '{text}'")
    try:
        value: object = json.loads(raw)
    except ValueError:  # not JSON, or an integer past Python's 4,300-digit conversion limit
        value = raw
    return key.strip(), value


def params_from(args: argparse.Namespace) -> dict[str, Any]:
    """The entry layer's parameters from the repeatable `--param NAME=VALUE` options."""
    return dict(parse_param(p) for p in (args.param or []))


def add_force_arg(p: argparse.ArgumentParser) -> None:
    """`--force`: the one way to let a command replace an output that already exists."""
    p.add_argument("--force", action="store_true", help="replace output files or folders that already exist")


MAX_NAME_BYTES = 255
"""The longest file name most file systems take (NAME_MAX)."""


def refuse_overwrite(path: str | os.PathLike[str] | None, force: bool, flag: str = "-o", folder: bool = False) -> None:
    """Fail before any work when `path` cannot be written: it exists and `--force` was not
    given (a typo in `-o` must not silently replace a file, as mlir-opt would), it is a folder
    where a file goes (or a file where a folder goes), a file stands where one of its parent
    folders must be, or a name in it is too long for the file system."""
    if path is None or str(path) == "-":
        return
    target = Path(path)
    for part in target.parts:
        if len(os.fsencode(part)) > MAX_NAME_BYTES:
            raise TdslError(f"{flag} {str(path)[:80]}...: a name of {len(os.fsencode(part))} bytes is longer than "
                            f"the file system allows ({MAX_NAME_BYTES})")
    for parent in target.parents:
        if os.path.lexists(parent) and not parent.is_dir():
            raise TdslError(f"{flag} {path}: '{parent}' is a file, so nothing can be written below it")
    if not os.path.lexists(target):
        return
    kind = "folder" if target.is_dir() else "file"
    if not force:
        raise TdslError(f"{flag} {path}: the {kind} already exists; pass --force to replace it")
    if target.is_dir() != folder:
        raise TdslError(f"{flag} {path}: a {kind} is there and this writes a {'folder' if folder else 'file'}; "
                        f"--force replaces a {'folder' if folder else 'file'} only (remove it, or choose another name)")


def int_option(low: int, high: int, what: str = "an integer") -> Callable[[str], int]:
    """An argparse `type` for an integer option in [low, high]: a negative, huge or malformed
    value is a usage error naming the option, never a traceback further on."""
    def parse(text: str) -> int:
        digits = text.strip().lstrip("+-")
        if not digits.isdigit() or len(digits) > 20:
            raise argparse.ArgumentTypeError(f"expected {what}, got '{text[:40]}'")
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range: expected {what} from {low} to {high}")
        return value

    parse.__name__ = "integer"
    return parse


def float_option(low: float, high: float, what: str = "a number") -> Callable[[str], float]:
    """An argparse `type` for a finite float option in [low, high] (no NaN, no Inf)."""
    def parse(text: str) -> float:
        try:
            value = float(text) if len(text) <= 40 else float("nan")
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got '{text[:40]}'") from None
        if not low <= value <= high:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"'{text[:40]}' is out of range: expected {what} from {low:g} to {high:g}")
        return value

    parse.__name__ = "number"
    return parse


def read_weights_file(path: str, flag: str = "--weights") -> dict[str, Any]:
    """The state dict of a .safetensors file given on the command line (a missing, unreadable
    or garbage file is a user error naming the option, not a safetensors traceback)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not os.path.isfile(path):
        raise TdslError(f"{flag} {path}: no such file")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise TdslError(f"{flag} {path}: not a readable .safetensors file ({str(e)[:200]})") from None


SEED = int_option(0, 2**32 - 1, "a seed")
"""numpy's seeds are 32-bit; torch's take them too."""
BATCH = int_option(1, 2**31 - 1, "a batch size")


MODEL_HELP = ("a zoo model name (see `tdsl models`), a .tdsl / .tri file, a saved package folder "
              "(one holding config.json), or - for DSL text on stdin")


def add_model_arg(p: argparse.ArgumentParser, help: str = MODEL_HELP) -> None:
    """The model positional and `--source TEXT`, its alternative for DSL text on the command line."""
    p.add_argument("model", nargs="?", help=help)
    p.add_argument("--source", metavar="TEXT", help="the DSL program itself, instead of MODEL")


@dataclass(frozen=True)
class ModelArg:
    """What the model argument named: `value` is what the API takes (a zoo name, a file path,
    DSL text, or a package folder when `package`); `name` names the model for output folders."""

    value: str
    name: str
    package: bool = False


def resolve_model(args: argparse.Namespace, what: str = "model") -> ModelArg:
    """The model of `args.model` / `args.source`, by rules a user can predict: a folder with
    config.json is a package; a path ending in .tdsl/.tri is a file that must exist; `-` is DSL
    text on stdin; a zoo name is a zoo model; anything else is an error (it used to be parsed
    as DSL text, so a mistyped path came back as an 'unknown name' in line 1)."""
    from tdsl.models import is_zoo_name, list_models
    from tdsl.package import CONFIG_FILE

    arg, source = getattr(args, "model", None), getattr(args, "source", None)
    if source is not None:
        if arg is not None:
            raise TdslError(f"give the {what} either as MODEL ('{arg}') or as --source TEXT, not both")
        return ModelArg(source, "source")
    if arg is None:
        raise TdslError(f"no {what} given: name a zoo model, a .tdsl / .tri file or a package folder, "
                        "or pass DSL text with --source TEXT or on stdin as -")
    if arg == "-":
        return ModelArg(sys.stdin.read(), "stdin")
    path = Path(arg)
    if path.is_dir():
        if (path / CONFIG_FILE).is_file():
            return ModelArg(str(path), path.resolve().name, package=True)
        raise TdslError(f"{arg}: a folder without {CONFIG_FILE}, so not a tdsl package "
                        "(no such file or package)")
    if arg.endswith((".tdsl", ".tri")):
        if not path.is_file():
            raise TdslError(f"{arg}: no such file")
        return ModelArg(arg, path.stem)
    if is_zoo_name(arg):
        return ModelArg(arg, arg)
    if path.exists():
        raise TdslError(f"{arg}: not a .tdsl / .tri file or a package folder (DSL source files end in "
                        ".tdsl or .tri; DSL text goes in --source TEXT or on stdin as -)")
    hint = did_you_mean(arg, list_models()) if not any(c in arg for c in "/\\.") else ""
    raise TdslError(f"{arg}: no such file or package, and not a zoo model name{hint} (zoo: "
                    f"{', '.join(list_models())}; DSL text goes in --source TEXT or on stdin as -)")


def no_package(model: ModelArg, command: str) -> ModelArg:
    """Refuse a package where `command` needs a program to build, saying what to do instead."""
    if model.package:
        raise TdslError(f"{model.value} is a saved package (already frozen): `tdsl {command}` takes a zoo name, "
                        "a .tdsl / .tri file or --source; `tdsl export` and `tdsl run` take packages")
    return model


TRIT_FORMATS = ("2bit", "base3")
DEFAULT_PRECISION = "ternary"
PRECISION_DEFAULT = ("default ternary, in tdsl quantize and tdsl export alike: tdsl exists to make ternary "
                     "deployments, and its default policy keeps the first and last layers at fp16 (--policy); "
                     "give fp32 for a float baseline")
"""The one default precision story of the commands that quantise, and the help that tells it."""


def add_trit_format_arg(p: argparse.ArgumentParser, old: str) -> None:
    """`--trit-format` (the packing of ternary weights), and its old spelling `old`, still
    accepted with a deprecation warning: `--format` meant this in quantize but the file
    format in export, so one flag name meant two things."""
    p.add_argument("--trit-format", choices=TRIT_FORMATS, default=None,
                   help="packed trit format of the ternary weights: 2bit (4 trits a byte, default) "
                        "or base3 (5 trits a byte)")
    p.add_argument(old, dest="old_trit_format", choices=TRIT_FORMATS, default=None, help=argparse.SUPPRESS)


def trit_format(args: argparse.Namespace, old: str, command: str) -> str:
    """The trit format `add_trit_format_arg` parsed, warning once about the old spelling."""
    if args.old_trit_format is None:
        return args.trit_format or TRIT_FORMATS[0]
    if args.trit_format is not None and args.trit_format != args.old_trit_format:
        raise TdslError(f"--trit-format {args.trit_format} and {old} {args.old_trit_format} disagree; "
                        "give --trit-format only")
    print(f"warning: `tdsl {command} {old}` is deprecated and will go: it names the trit format, "
          f"which is --trit-format now", file=sys.stderr)
    return args.old_trit_format


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The model to compile and how: `tdsl compile` and `tdsl run`."""
    add_model_arg(p)
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


def compile_model(args: argparse.Namespace, model: ModelArg | None = None) -> Any:
    """`tdsl.compile` of the model `add_model_args` describes, printing the IR after every
    pass with --print-ir-after-all. A package gives its stored program, as `tdsl.load` builds
    it (--param, --entry and --pipeline are the package's own then)."""
    from tdsl.model.compiled import compile as compile_
    from tdsl.model.compiled import print_ir

    model = model or resolve_model(args)
    if model.package:
        if args.param or args.entry or args.pipeline:
            raise TdslError(f"{model.value} is a package: its parameters, entry and pipeline are stored in it "
                            "(--param, --entry and --pipeline apply to models)")
        from tdsl.package import load

        compiled = load(model.value).compiled
        if args.print_ir_after_all:
            for name, text in compiled.stages:
                print(f"// -----// IR after {name} //----- //")
                print(text)
        return compiled

    def show(name: str, module: Any) -> None:
        if args.print_ir_after_all:
            print(f"// -----// IR after {name} //----- //")
            print(print_ir(module))

    return compile_(model.value, entry=args.entry, params=params_from(args),
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
