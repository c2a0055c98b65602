"""The xDSL context every tdsl tool and test parses IR in."""
from __future__ import annotations

from xdsl.context import Context
from xdsl.dialects.builtin import Builtin
from xdsl.dialects.func import Func

from tdsl.dialects.tdsl import TDSL
from tdsl.dialects.tern import TERN


def make_context(allow_unregistered: bool = False) -> Context:
    """A context with builtin, func, tdsl and tern loaded."""
    ctx = Context(allow_unregistered=allow_unregistered)
    for dialect in (Builtin, Func, TDSL, TERN):
        ctx.load_dialect(dialect)
    return ctx
