"""The torch call of each weighted kind, written once.

The emitter writes `CALLS[kind](geometry, x, w, bias)` into generated source for the op of that
kind at every level (float, trits, packed: only the weight expression differs), and
`weight_call` makes the same text a function f(x, w), so code that runs one layer's op by
itself (threshold calibration) computes exactly what the emitted module does. The kinds are
the dialects' (`tdsl.dialects.context.KINDS`), the geometry the op's `WeightedOp.geometry`
(constructor keywords: tuples of ints and `groups`); a kind without a row is an error that
names it.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tdsl.errors import TdslError

Call = Callable[[Mapping[str, Any], str, str, "str | None"], str]
"""(geometry, input, weight, bias or None) expressions -> the call's expression."""


def _pair(values: Sequence[int]) -> str:
    return repr(tuple(int(v) for v in values))


def conv_geometry(geometry: Mapping[str, Any]) -> str:
    """`stride=(…), padding=(…), dilation=(…), groups=g`, the keywords conv2d-like calls share."""
    return (f"stride={_pair(geometry['stride'])}, padding={_pair(geometry['padding'])}, "
            f"dilation={_pair(geometry['dilation'])}, groups={int(geometry['groups'])}")


def _linear(geometry: Mapping[str, Any], x: str, w: str, bias: str | None) -> str:
    return f"F.linear({x}, {w}{'' if bias is None else ', ' + bias})"


def _conv2d(geometry: Mapping[str, Any], x: str, w: str, bias: str | None) -> str:
    return f"F.conv2d({x}, {w}, {bias or 'None'}, {conv_geometry(geometry)})"


def _conv_transpose2d(geometry: Mapping[str, Any], x: str, w: str, bias: str | None) -> str:
    """F.conv_transpose2d takes the weight [O, C/g, kh, kw] as [C, O/g, kh, kw] (docs of
    `tdsl.dialects.tdsl.ConvTransposeGeometry`): dims 0 and 1 swapped within each group."""
    groups = int(geometry["groups"])
    swapped = f"{w}.transpose(0, 1)" if groups == 1 else f"{w}.unflatten(0, ({groups}, -1)).transpose(1, 2).flatten(0, 1)"
    return (f"F.conv_transpose2d({x}, {swapped}, {bias or 'None'}, stride={_pair(geometry['stride'])}, "
            f"padding={_pair(geometry['padding'])}, output_padding={_pair(geometry['output_padding'])}, "
            f"groups={groups}, dilation={_pair(geometry['dilation'])})")


CALLS: dict[str, Call] = {
    "linear": _linear,
    "conv2d": _conv2d,
    "conv_transpose2d": _conv_transpose2d,
}
"""One row per weighted kind: its torch call from the geometry and the operand expressions."""


def call_of(kind: str) -> Call:
    """The row of `kind`; a kind without one is a user-facing error naming it."""
    call = CALLS.get(kind)
    if call is None:
        raise TdslError(f"the torch backend has no call for weighted ops of kind '{kind}'; "
                        f"it knows {', '.join(CALLS)}")
    return call


def weight_call(kind: str, geometry: Mapping[str, Any]) -> Callable[[Any, Any], Any]:
    """f(x, w) computing the op of `kind` with `geometry` and no bias, as the emitted module
    does: the row's text, compiled once (torch is imported here, lazily)."""
    import torch
    import torch.nn.functional as F

    text = call_of(kind)(geometry, "x", "w", None)
    return eval(f"lambda x, w: {text}", {"torch": torch, "F": F})  # noqa: S307 - our own emitted text
