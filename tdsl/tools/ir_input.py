"""Reading `.mlir` input so that every diagnostic has a `file:line:col`, as in mlir-opt.

xDSL leaves an op without `loc(...)` at `loc(unknown)` and reports an attribute or type
whose verifier fails while parsing (or an integer past Python's 4300-digit conversion
limit) with no position at all. mlir-opt instead gives each op
the position it was parsed from. `LocatingParser` does the same: ops parsed without a
location get `loc("file":line:col)` of their first token, and a verifier failure while
parsing becomes a `ParseError` at the text that failed. The stamped locations are only for
diagnostics: `strip_stamped` takes them off again before the IR is printed, so output and
round trips are unchanged.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

from xdsl.context import Context
from xdsl.dialects.builtin import FileLineColLoc, IntAttr, ModuleOp, StringAttr, UnknownLoc
from xdsl.ir import Attribute, Operation, TypeAttribute
from xdsl.parser import Parser
from xdsl.utils.exceptions import VerifyException
from xdsl.utils.mlir_lexer import MLIRLexer

from tdsl.errors import TdslError

T = TypeVar("T")


# xDSL 0.74's string-literal pattern nests `+` inside `*` ("(?:[^"\\...]+|...)*"): on a string
# that never closes, Python's regex engine backtracks exponentially (the .mlir fuzzer hung
# tdsl-opt on `!tern.packed<4x8x1, "2bit>, ...` for minutes). The same language, one character
# per step, fails in linear time.
MLIRLexer._unescaped_characters_regex = re.compile(r'"(?:[^"\\\n\v\f]|\\(?:["nt\\]|[0-9A-Fa-f]{2}))*"')


class LocatingParser(Parser):
    """An xDSL parser that locates ops and parse-time verifier failures in its input."""

    def __init__(self, ctx: Context, text: str | bytes, name: str, line_offset: int = 0):
        super().__init__(ctx, text, name)
        self.line_offset = line_offset
        self.stamped: set[FileLineColLoc] = set()

    def parse_operation(self) -> Operation:
        start = self._current_token.span
        try:
            op = super().parse_operation()
        except (VerifyException, ValueError) as e:  # ValueError: e.g. Python's 4300-digit int limit
            self.raise_error(_first_line(e), start)
        if isinstance(op.location, UnknownLoc):
            where = start.get_location()
            loc = FileLineColLoc(StringAttr(where.file), IntAttr(where.line + self.line_offset), IntAttr(where.col))
            op.location = loc
            self.stamped.add(loc)
        return op

    def parse_optional_type(self) -> TypeAttribute | None:
        return self._located(super().parse_optional_type)

    def parse_optional_attribute(self) -> Attribute | None:
        return self._located(super().parse_optional_attribute)

    def _located(self, parse: Callable[[], T]) -> T:
        """`parse()`, with a verifier failure (or an over-long integer) raised as a parse
        error spanning the text it consumed."""
        start = self._current_token.span.start
        try:
            return parse()
        except (VerifyException, ValueError) as e:
            self.raise_error(_first_line(e), start, max(start + 1, self._current_token.span.start))


def parse_located(ctx: Context, text: bytes, name: str, line_offset: int = 0,
                  implicit_module: bool = True) -> tuple[ModuleOp, set[FileLineColLoc]]:
    """Parse `text`; returns the module and the locations this parser made up."""
    parser = LocatingParser(ctx, text, name, line_offset)
    try:
        module = parser.parse_module(implicit_module)
    except RecursionError:  # xDSL's parser recurses per nesting level (types, regions)
        parser.raise_error("input nested too deeply to parse", parser._current_token.span)
    return module, parser.stamped


def strip_stamped(module: Operation, stamped: set[FileLineColLoc]) -> None:
    """Put `loc(unknown)` back on ops whose location the parser made up (or a pass copied)."""
    if not stamped:
        return
    for op in module.walk():
        if op.location in stamped:
            op.location = UnknownLoc()


def _first_line(e: Exception) -> str:
    if isinstance(e, ValueError) and "integer string conversion" in str(e):
        return "integer literal too long (more than 4300 digits)"
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def check_symbols(module: ModuleOp) -> None:
    """Refuse a symbol defined twice in one symbol table, at the second definition (xDSL's
    verifier names only the table, so the error pointed at the module's first line)."""
    from xdsl.traits import SymbolTable

    from tdsl.dialects.locations import loc_of

    for table in module.walk():
        if not table.has_trait(SymbolTable) or len(table.regions) != 1 or len(table.regions[0].blocks) != 1:
            continue
        seen: dict[str, Operation] = {}
        for op in table.regions[0].blocks[0].ops:
            name = op.get_attr_or_prop("sym_name")
            if not isinstance(name, StringAttr):
                continue
            first = seen.setdefault(name.data, op)
            if first is not op:
                where = loc_of(first)
                raise TdslError(f'redefinition of symbol "{name.data}"', loc_of(op),
                                (f"first defined at {where}",) if where is not None else ())
