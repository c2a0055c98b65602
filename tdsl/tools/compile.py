"""`tdsl compile`: compile a model and print (or write) its IR or the emitted PyTorch code."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from tdsl.package.files import write_atomic
from tdsl.tools.common import add_force_arg, add_model_args, command_main, compile_model, refuse_overwrite


def add_parser(sub: Any) -> None:
    p = sub.add_parser("compile", help="compile a model and print its IR or emitted PyTorch code")
    add_model_args(p)
    p.add_argument("--emit", choices=["mlir", "generic", "torch"], default="mlir")
    p.add_argument("-o", "--output", help="write the output here instead of stdout")
    add_force_arg(p)
    p.set_defaults(func=cmd_compile)


def cmd_compile(args: argparse.Namespace) -> int:
    refuse_overwrite(args.output, args.force)
    model = compile_model(args)
    if args.emit == "torch":
        text = model.torch_source
    elif args.emit == "generic":
        text = model.generic_ir()
    else:
        text = model.ir
    if args.output:
        write_atomic(args.output, text)
        print(f"wrote {args.output}", file=sys.stderr)
    elif not args.print_ir_after_all or args.emit != "mlir":
        sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    return command_main(add_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
