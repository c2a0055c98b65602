"""`tdsl models`: list the shipped zoo models, each with the first line of its source."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from tdsl.tools.common import command_main


def add_parser(sub: Any) -> None:
    p = sub.add_parser("models", help="list the shipped zoo models")
    p.set_defaults(func=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    from tdsl.models import list_models, zoo_path

    for name in list_models():
        first = zoo_path(name).read_text(encoding="utf-8").splitlines()[0].lstrip("# ").strip()
        print(f"{name:14s} {first}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return command_main(add_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
