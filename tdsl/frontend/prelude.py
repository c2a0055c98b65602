"""The prelude: built-in layers (Conv2d, Linear, BatchNorm2d, ...) written in tdsl itself."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from tdsl.frontend import ast

PRELUDE_PATH = Path(__file__).with_name("prelude.tdsl")


@lru_cache(maxsize=1)
def prelude_program() -> ast.Program:
    """The parsed prelude, once per process."""
    from tdsl.frontend.parser import parse_program

    return parse_program(PRELUDE_PATH.read_text(encoding="utf-8"), str(PRELUDE_PATH))
