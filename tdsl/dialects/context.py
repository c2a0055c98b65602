"""The xDSL context every tdsl tool and test parses IR in."""
from __future__ import annotations

from xdsl.context import Context
from xdsl.dialects.builtin import Builtin
from xdsl.dialects.func import Func

from tdsl.dialects.tdsl import TDSL


def make_context(allow_unregistered: bool = False) -> Context:
    """A context with builtin, func and tdsl loaded."""
    ctx = Context(allow_unregistered=allow_unregistered)
    for dialect in (Builtin, Func, TDSL):
        ctx.load_dialect(dialect)
    # The ternary level goes here: ctx.load_dialect(TERN) from tdsl.dialects.tern.
    return ctx
