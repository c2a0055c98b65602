"""Compile-time limits: every way a program can make the compiler work without end stops here.

A layer body is a program that runs at compile time, so a hostile or mistaken one can
loop, recurse, nest or grow values without bound. Each limit below turns that into a
located `TdslError` in bounded time and memory; docs/LANGUAGE.md ("Limits") states them.
The checks that need a location take one; the callers pass the DSL text that caused it.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tdsl.errors import SourceLoc, TdslError

MAX_SOURCE_CHARS = 4_000_000
"""A source text longer than this is refused before lexing (the zoo's largest is ~5,000)."""
MAX_NESTING = 200
"""Levels of the parse tree: each nested call, bracket, block, `if` or operator adds one or two."""
MAX_CHAIN = 4_000
"""Terms of one left-associative operator chain (`a0 + a1 + ...`; the original project's
valid_030.tri sums 1,000); a chain link costs the tree walks about two Python frames."""
FRAMES_PER_LEVEL = 5
"""Python frames the recursive tree walks take per level of nesting (a chain link takes ~2)."""
MAX_CALL_DEPTH = 64
"""Nested layer instantiations and `fn` calls together (recursion ends here)."""
MAX_UNROLL = 10_000
"""Iterations of one `for` loop."""
MAX_STEPS = 100_000
"""Statements run, loop iterations, calls made and list elements built in one compilation, all
together (the zoo's largest, mobilenetv2, takes about 1,200; 100,000 take a few seconds)."""
MAX_LIST_ELEMENTS = 65_536
"""Elements of one compile-time list or characters of one string, nested lists counted flat."""
MAX_TENSOR_ELEMENTS = 2**31 - 1
"""Elements of one weight, literal or input tensor (its static dims); also the largest dim."""
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""Compile-time integers are int64: they end up in i64 attributes."""
FLOAT32_MAX = 3.4028234663852886e38
FLOAT16_MAX = 65504.0
INT_RANGES = {"trit": (-1, 1), "int8": (-128, 127), "int32": (-(2**31), 2**31 - 1), "int64": (INT64_MIN, INT64_MAX)}


@contextmanager
def recursion_room() -> Iterator[None]:
    """Let the recursive tree walks (AST building, checks, elaboration) take the frames that a
    program within `MAX_NESTING` and `MAX_CHAIN` can need, on top of Python's usual limit."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(old + FRAMES_PER_LEVEL * (MAX_NESTING + MAX_CHAIN))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


class LimitError(TdslError):
    """A program that exceeds one of the compile-time limits."""


def check_int(value: int, loc: SourceLoc | None, what: str = "integer") -> int:
    """`value` if it is an int64, else a located error (a huge value is not printed whole)."""
    if not INT64_MIN <= value <= INT64_MAX:
        raise LimitError(f"{what} {_short(value)} is out of the int64 range "
                         f"[{INT64_MIN}, {INT64_MAX}]", loc)
    return value


def check_float(value: float, loc: SourceLoc | None, what: str = "number") -> float:
    if not math.isfinite(value):
        raise LimitError(f"{what} overflows: the result is not a finite float64", loc)
    return value


def check_scalar_range(value: int | float, dtype: str, loc: SourceLoc | None) -> None:
    """A compile-time number that becomes an element of a `dtype` tensor must fit it."""
    if dtype in INT_RANGES:
        lo, hi = INT_RANGES[dtype]
        if isinstance(value, float):
            raise LimitError(f"the float {value:g} cannot be an element of {'an' if dtype[0] in 'aeiou' else 'a'} {dtype} tensor "
                             "(convert the tensor, or use an integer)", loc)
        if not lo <= value <= hi:
            raise LimitError(f"{_short(value)} is out of range for {dtype} [{lo}, {hi}]", loc)
    elif dtype in ("float32", "float16"):
        top = FLOAT32_MAX if dtype == "float32" else FLOAT16_MAX
        if not abs(float(value)) <= top:
            raise LimitError(f"{value:g} is out of range for {dtype} (largest {top:g})", loc)


def check_volume(shape: tuple[int, ...] | list[int], loc: SourceLoc | None, what: str = "tensor") -> None:
    """A static shape whose element count the runtimes can index (int32)."""
    count = 1
    for d in shape:
        count *= d
        if count > MAX_TENSOR_ELEMENTS:
            raise LimitError(f"{what} of shape {list(shape)} has more than {MAX_TENSOR_ELEMENTS} "
                             "elements", loc)


def check_value(value: Any, loc: SourceLoc | None, what: str = "value") -> Any:
    """A compile-time value from outside (API or --param): numbers in range, lists bounded."""
    budget = [MAX_LIST_ELEMENTS]
    _check_value(value, loc, what, budget, 0)
    return value


def _check_value(value: Any, loc: SourceLoc | None, what: str, budget: list[int], depth: int) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        check_int(value, loc, f"{what}:")
    elif isinstance(value, float):
        check_float(value, loc, what)
    elif isinstance(value, str):
        check_size(len(value), loc, "string", "characters")
    elif isinstance(value, list):
        budget[0] -= len(value)
        if budget[0] < 0:
            raise LimitError(f"{what}: a list of more than {MAX_LIST_ELEMENTS} elements", loc)
        if depth > MAX_NESTING:
            raise LimitError(f"{what}: lists nested more than {MAX_NESTING} deep", loc)
        for item in value:
            _check_value(item, loc, what, budget, depth + 1)


def check_size(n: int, loc: SourceLoc | None, what: str = "list", unit: str = "elements") -> None:
    if n > MAX_LIST_ELEMENTS:
        raise LimitError(f"a {what} of {n} {unit} is longer than the limit of {MAX_LIST_ELEMENTS}", loc)


def flat_size(value: list, loc: SourceLoc | None) -> int:
    """Elements of a (nested) list counted flat, stopping as soon as the limit is passed.

    Nested lists may share sublists (`l = [l, l]` doubles the flat size each time), so the
    walk is bounded by the limit, not by the value.
    """
    count = 0
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            count += len(item)
            if count > MAX_LIST_ELEMENTS:
                raise LimitError(f"a list of more than {MAX_LIST_ELEMENTS} elements (nested lists "
                                 "counted flat)", loc)
            stack.extend(item)
    return count


def _short(value: int) -> str:
    """An integer as text, or its size when printing it would be long."""
    if abs(value) < 10**30:
        return str(value)
    return f"of about 2**{value.bit_length()}"
