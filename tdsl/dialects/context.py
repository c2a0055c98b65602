"""The xDSL context every tdsl tool and test parses IR in."""
from __future__ import annotations

from xdsl.context import Context
from xdsl.dialects.builtin import Builtin
from xdsl.dialects.func import Func
from xdsl.ir import Dialect

from tdsl.dialects.kern import KERN
from tdsl.dialects.tdsl import TDSL
from tdsl.dialects.tern import TERN

DIALECTS: tuple[Dialect, ...] = (Builtin, Func, TDSL, TERN, KERN)
"""Every dialect tdsl IR may use; tools register exactly these."""


def make_context(allow_unregistered: bool = False) -> Context:
    """A context with builtin, func, tdsl, tern and kern loaded."""
    ctx = Context(allow_unregistered=allow_unregistered)
    for dialect in DIALECTS:
        ctx.load_dialect(dialect)
    return ctx
