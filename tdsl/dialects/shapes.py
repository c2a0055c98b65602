"""Shape rules as functions of dims: what every op's `result_dims` and every backend calls.

A dim is an int or `None` (a dynamic `?` dim). The same functions serve `shape-infer`
(static dims, some `None`) and the Numba plan (concrete dims of one call): an op's
`result_dims(dims)` takes its operands' dims by operand name and calls the rule here, and
`concrete_result_shape(op, shapes)` runs it for concrete shapes. A rule that does not fit
raises `ShapeInferenceError` with a message naming the op and the operands.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from xdsl.dialects.builtin import DYNAMIC_INDEX, TensorType
from xdsl.ir import Attribute

if TYPE_CHECKING:
    from tdsl.dialects.tdsl import ValueOp

Dim = int | None
"""A dimension during shape computation: `None` is a dynamic (`?`) dim."""

Shape = tuple[int, ...]


class ShapeInferenceError(Exception):
    """An op's operand types do not fit its shape rule; the message says how."""


def dims_of(t: Attribute) -> list[Dim] | None:
    """The dims of a ranked tensor type (`?` as None), or None for an unranked one."""
    if not isinstance(t, TensorType):
        return None
    return [None if d == DYNAMIC_INDEX else d for d in t.get_shape()]


def make_tensor(element_type: Attribute, dims: Sequence[Dim]) -> TensorType:
    """A ranked tensor type from dims where None stands for `?`."""
    return TensorType(element_type, [DYNAMIC_INDEX if d is None else d for d in dims])


def format_dims(dims: Sequence[Dim]) -> str:
    """`1000x256`, `?x64` — how a shape reads in messages."""
    return "x".join("?" if d is None else str(d) for d in dims)


def same_dim(a: Dim, b: Dim) -> bool:
    return a is None or b is None or a == b


def broadcast(op_name: str, a: Sequence[Dim], b: Sequence[Dim], what: str = "operands") -> list[Dim]:
    """numpy broadcasting of two shapes; `?` against n > 1 gives n, `?` against 1 or `?` gives `?`."""
    out: list[Dim] = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x == 1:
            out.append(y)
        elif y == 1:
            out.append(x)
        elif x is None:
            out.append(y)
        elif y is None or x == y:
            out.append(x)
        else:
            raise ShapeInferenceError(
                f"{op_name}: cannot broadcast {what} of shapes {format_dims(a)} and {format_dims(b)} "
                f"(dim {-i}: {x} vs {y})"
            )
    return out[::-1]


def window_out(size: Dim, kernel: int, stride: int, padding: int, dilation: int = 1) -> Dim:
    """Output size of a sliding window (floor mode), `?` for a dynamic input size."""
    if size is None:
        return None
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def linear_result_dims(op_name: str, x: Sequence[Dim], w: Sequence[Dim], b: Sequence[Dim] | None) -> list[Dim]:
    """Every linear op (tdsl, tern, kern): x[..., in], w[out, in], b[out] -> [..., out]."""
    if not same_dim(x[-1], w[1]):
        raise ShapeInferenceError(
            f"{op_name}: input has {x[-1]} features but weight expects {w[1]} (weight is {format_dims(w)})"
        )
    if b is not None and not same_dim(b[0], w[0]):
        raise ShapeInferenceError(
            f"{op_name}: bias has {b[0]} elements but weight has {w[0]} outputs (weight is {format_dims(w)})"
        )
    return [*x[:-1], w[0]]


def conv2d_result_dims(
    op_name: str,
    x: Sequence[Dim],
    w: Sequence[Dim],
    b: Sequence[Dim] | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> list[Dim]:
    """Every 2-D convolution (tdsl, tern, kern): x[N, C, H, W], w[O, C/groups, kh, kw],
    b[O] -> [N, O, oh, ow]."""
    batch_and_channels = conv_channel_dims(op_name, x, w, b, groups)
    out = [window_out(x[2 + i], w[2 + i], stride[i], padding[i], dilation[i]) for i in range(2)]
    if any(o is not None and o < 1 for o in out):
        raise ShapeInferenceError(
            f"{op_name}: kernel {w[2]}x{w[3]} (dilation {dilation[0]}x{dilation[1]}) does not fit input "
            f"{format_dims(x[2:])} with padding {padding[0]}x{padding[1]}"
        )
    return [*batch_and_channels, *out]


def conv_channel_dims(op_name: str, x: Sequence[Dim], w: Sequence[Dim], b: Sequence[Dim] | None,
                      groups: int) -> list[Dim]:
    """[N, O] of a 2-D convolution kind whose weight is w[O, C/groups, kh, kw] (conv2d and the
    kinds laid out like it), after checking channels, groups, bias and a static kernel size."""
    if x[1] is not None and w[1] is not None and x[1] != w[1] * groups:
        raise ShapeInferenceError(
            f"{op_name}: input has {x[1]} channels but weight expects {w[1] * groups} "
            f"(weight is {format_dims(w)}, groups={groups})"
        )
    if w[0] is not None and w[0] % groups != 0:
        raise ShapeInferenceError(f"{op_name}: {w[0]} output channels are not divisible by groups={groups}")
    if b is not None and not same_dim(b[0], w[0]):
        raise ShapeInferenceError(f"{op_name}: bias has {b[0]} elements but weight has {w[0]} output channels")
    if w[2] is None or w[3] is None:
        raise ShapeInferenceError(f"{op_name}: weight kernel size must be static, but weight is {format_dims(w)}")
    return [x[0], w[0]]


def pool2d_result_dims(op_name: str, x: Sequence[Dim], kernel: Sequence[int], stride: Sequence[int],
                       padding: Sequence[int]) -> list[Dim]:
    """A 2-D window pool x[N, C, H, W] -> [N, C, oh, ow] (floor mode)."""
    out = [window_out(x[2 + i], kernel[i], stride[i], padding[i]) for i in range(2)]
    if any(o is not None and o < 1 for o in out):
        raise ShapeInferenceError(
            f"{op_name}: kernel {kernel[0]}x{kernel[1]} does not fit input {format_dims(x[2:])} "
            f"with padding {padding[0]}x{padding[1]}"
        )
    return [x[0], x[1], *out]


def matmul_result_dims(op_name: str, a: Sequence[Dim], b: Sequence[Dim]) -> list[Dim]:
    """a[..., m, k] @ b[..., k, n] -> [..., m, n], batch dims broadcast."""
    if not same_dim(a[-1], b[-2]):
        raise ShapeInferenceError(
            f"{op_name}: lhs has {a[-1]} columns but rhs has {b[-2]} rows "
            f"(lhs is {format_dims(a)}, rhs is {format_dims(b)})"
        )
    return [*broadcast(op_name, a[:-2], b[:-2], "batch dims"), a[-2], b[-1]]


def reshape_result_dims(op_name: str, x: Sequence[Dim], shape: Sequence[int]) -> list[Dim]:
    """`shape` where one -1 takes the remaining size (`?` when the input is dynamic)."""
    known = math.prod(d for d in shape if d != -1)
    out: list[Dim] = list(shape)
    if any(d is None for d in x):
        if -1 in shape:
            out[list(shape).index(-1)] = None
        return out
    total = math.prod(x)  # type: ignore[arg-type]
    if -1 in shape:
        if total % known != 0:
            raise ShapeInferenceError(
                f"{op_name}: cannot reshape {format_dims(x)} ({total} elements) to {list(shape)}: "
                f"{total} is not divisible by {known}"
            )
        out[list(shape).index(-1)] = total // known
    elif total != known:
        raise ShapeInferenceError(
            f"{op_name}: cannot reshape {format_dims(x)} ({total} elements) to {list(shape)} ({known} elements)"
        )
    return out


def concrete_result_shape(op: ValueOp, shapes: Mapping[str, Shape]) -> Shape:
    """The result shape of `op` for operands of these concrete shapes (by operand name):
    the op's own shape rule, as `shape-infer` runs it, with no dynamic dim left."""
    dims = op.result_dims({name: list(s) for name, s in shapes.items()})
    if any(d is None for d in dims):
        raise ShapeInferenceError(f"{op.shape_name}: the result shape {format_dims(dims)} is not concrete")
    return tuple(int(d) for d in dims)  # type: ignore[arg-type]
