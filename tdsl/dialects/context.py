"""The xDSL context every tdsl tool and test parses IR in."""
from __future__ import annotations

from functools import cache

from xdsl.context import Context
from xdsl.dialects.builtin import Builtin
from xdsl.dialects.func import Func
from xdsl.ir import Dialect, Operation

from tdsl.dialects.kern import KERN
from tdsl.dialects.tdsl import TDSL
from tdsl.dialects.tern import TERN
from tdsl.dialects.weighted import LEVELS, WeightedOp

DIALECTS: tuple[Dialect, ...] = (Builtin, Func, TDSL, TERN, KERN)
"""Every dialect tdsl IR may use; tools register exactly these."""


def make_context(allow_unregistered: bool = False) -> Context:
    """A context with builtin, func, tdsl, tern and kern loaded."""
    ctx = Context(allow_unregistered=allow_unregistered)
    for dialect in DIALECTS:
        ctx.load_dialect(dialect)
    return ctx


def weighted_ops(*levels: str) -> tuple[type[Operation], ...]:
    """Every weighted op class at these levels (all levels when none is given), in dialect
    order: what a backend refuses or handles as a family, without naming each class."""
    wanted = levels or LEVELS
    return tuple(cls for dialect in DIALECTS for cls in dialect.operations
                 if (trait := cls.get_trait(WeightedOp)) is not None and trait.level in wanted)


KINDS: tuple[str, ...] = tuple(dict.fromkeys(op.get_trait(WeightedOp).kind for op in weighted_ops()))  # type: ignore[union-attr]
"""The weighted kinds the dialects define (conv2d, linear, ...), each at every level."""


@cache
def op_at(kind: str, level: str) -> type[Operation]:
    """The weighted op class of `kind` at `level` (`op_at("conv2d", "packed")` is
    `tern.packed_conv2d`): the op with that `WeightedOp` trait in tdsl's dialects. It lives
    here, not in `weighted.py`, which the dialects import (an import circle otherwise)."""
    for dialect in DIALECTS:
        for cls in dialect.operations:
            trait = cls.get_trait(WeightedOp)
            if trait is not None and (trait.kind, trait.level) == (kind, level):
                return cls
    raise KeyError(f"no weighted op of kind {kind!r} at level {level!r}")
