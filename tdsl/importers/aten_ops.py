"""ATen ops of an exported graph as tdsl built-in calls: one row per op.

A row turns one graph node into the DSL expression that computes it, as a list of tokens:
text, `Hole`s (numbers the program writer may turn into layer parameters) and the tokens of
the node's tensor arguments. `IDENTITY` ops are the value of their first argument in
inference (dropout, copies, broadcasting `expand`). An op in neither table is refused by
`unsupported`, naming the op, the module it came from and what is supported.
"""
from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tdsl.errors import TdslError

if TYPE_CHECKING:
    from torch.fx import Node


@dataclass(frozen=True)
class Hole:
    """A number in the generated program that may differ between instances of a layer."""

    value: int | float | bool
    hint: str


@dataclass(frozen=True)
class Opt:
    """A keyword argument left out where its value is `default` (`, stride=2`)."""

    key: str
    hole: Hole
    default: Any


Token = Any  # str | Hole | Opt | a program-writer reference
Tokens = list[Token]


class Context:
    """What a row needs from the program writer: the tokens of a tensor argument, and the
    node's static facts (example values, extra padding folded in from a `pad`)."""

    def arg(self, node: Node, index: int, name: str) -> Tokens:  # pragma: no cover - interface
        raise NotImplementedError

    def rank(self, node: Node) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def shape(self, node: Node) -> list[Any]:  # pragma: no cover - interface
        raise NotImplementedError

    def extra_padding(self, node: Node) -> tuple[int, int]:  # pragma: no cover - interface
        raise NotImplementedError

    def is_symbolic(self, value: Any) -> bool:  # pragma: no cover - interface
        raise NotImplementedError


def lit(value: Any, hint: str) -> Tokens:
    return [Hole(value, hint)]


def pair(values: Any, hint: str, default: int) -> Tokens:
    """One number when both entries agree (the DSL's `stride=2`), else a list."""
    if values is None or values == []:
        return lit(default, hint)
    if isinstance(values, int):
        return lit(values, hint)
    values = list(values)
    if len(values) == 1 or values[0] == values[1]:
        return lit(values[0], hint)
    return ["[", Hole(values[0], hint), ", ", Hole(values[1], hint), "]"]


def int_list(values: Any, hint: str) -> Tokens:
    out: Tokens = ["["]
    for i, v in enumerate(values):
        out += ([", "] if i else []) + [Hole(v, hint)]
    return out + ["]"]


OPEN, CLOSE = "\x01(", ")\x01"
"""The parentheses around a binary expression, dropped where it is a whole argument."""


def bare(tokens: Tokens) -> Tokens:
    """`tokens` without the parentheses of a binary expression that is all of it."""
    if len(tokens) >= 2 and tokens[0] == OPEN and tokens[-1] == CLOSE:
        depth = 0
        for tok in tokens[:-1]:
            depth += (tok == OPEN) - (tok == CLOSE)
            if depth == 0:
                return tokens
        return tokens[1:-1]
    return tokens


def call(name: str, *parts: Tokens, **kwargs: Tokens) -> Tokens:
    out: Tokens = [name, "("]
    items = [bare(p) for p in parts] + [[k, "="] + bare(v) for k, v in kwargs.items()]
    for i, item in enumerate(items):
        out += ([", "] if i else []) + item
    return out + [")"]


def _args(node: Node, *defaults: Any) -> list[Any]:
    """The node's first len(defaults) positional arguments, defaults where it has fewer."""
    return [node.args[i] if i < len(node.args) else d for i, d in enumerate(defaults)]


class Unsupported(Exception):
    """A row that cannot express this use of its op; the message says why."""


def _conv2d(n: Node, c: Context) -> Tokens:
    _, _, b, stride, padding, dilation, groups = _args(n, None, None, None, [1, 1], [0, 0], [1, 1], 1)
    if isinstance(padding, str):
        raise Unsupported(f"padding='{padding}' (give numbers)")
    extra = c.extra_padding(n)
    padding = [int(p) + e for p, e in zip(padding if len(padding) == 2 else [padding[0]] * 2, extra)]
    parts = [c.arg(n, 0, "x"), c.arg(n, 1, "weight")] + ([c.arg(n, 2, "bias")] if b is not None else [])
    kw: dict[str, Tokens] = {}
    if list(stride) != [1, 1]:
        kw["stride"] = pair(stride, "stride", 1)
    if padding != [0, 0]:
        kw["padding"] = pair(padding, "padding", 0)
    if list(dilation) != [1, 1]:
        kw["dilation"] = pair(dilation, "dilation", 1)
    if groups != 1:
        kw["groups"] = lit(groups, "groups")
    return call("conv2d", *parts, **kw)


def _convolution(n: Node, c: Context) -> Tokens:
    _, _, _, _, _, _, transposed, output_padding, _ = n.args
    if transposed:
        raise Unsupported("transposed convolution")
    if c.rank(n.args[0]) != 4:
        raise Unsupported(f"a {c.rank(n.args[0]) - 2}-d convolution (2-d only here)")
    return _conv2d(n, c)


def _linear(n: Node, c: Context) -> Tokens:
    parts = [c.arg(n, 0, "x"), c.arg(n, 1, "weight")]
    if len(n.args) > 2 and n.args[2] is not None:
        parts.append(c.arg(n, 2, "bias"))
    return call("linear", *parts)


def _batch_norm(n: Node, c: Context) -> Tokens:
    training, eps = n.args[5], (n.args[7] if len(n.args) > 7 else 1e-5)
    if training:
        raise Unsupported("batch norm in training mode (export the model in eval mode)")
    return _bn(n, c, eps)


def _bn(n: Node, c: Context, eps: float) -> Tokens:
    if any(a is None for a in n.args[1:5]):
        raise Unsupported("batch norm without affine weights or running statistics")
    return call("batch_norm", c.arg(n, 0, "x"), c.arg(n, 3, "mean"), c.arg(n, 4, "var"), c.arg(n, 1, "weight"),
                c.arg(n, 2, "bias"), eps=lit(float(eps), "eps"))


def _bn_no_training(n: Node, c: Context) -> Tokens:
    return _bn(n, c, n.args[6])


def _layer_norm(n: Node, c: Context) -> Tokens:
    x, shape, w, b, eps = _args(n, None, None, None, None, 1e-5)
    if len(shape) != 1:
        raise Unsupported(f"normalisation over {len(shape)} dims (the last dim only)")
    if w is None or b is None:
        raise Unsupported("layer norm without weight and bias (elementwise_affine=False)")
    return call("layer_norm", c.arg(n, 0, "x"), c.arg(n, 2, "weight"), c.arg(n, 3, "bias"),
                eps=lit(float(eps), "eps"))


def _rms_norm(n: Node, c: Context) -> Tokens:
    x, shape, w, eps = _args(n, None, None, None, None)
    if len(shape) != 1 or w is None:
        raise Unsupported("RMS norm over more than the last dim, or without a weight")
    if eps is None:
        import torch

        eps = torch.finfo(torch.float32).eps
    return call("rms_norm", c.arg(n, 0, "x"), c.arg(n, 2, "weight"), eps=lit(float(eps), "eps"))


def _unary(name: str) -> Callable[[Node, Context], Tokens]:
    def render(n: Node, c: Context) -> Tokens:
        return call(name, c.arg(n, 0, "x"))
    return render


def _hardtanh(n: Node, c: Context) -> Tokens:
    _, lo, hi = _args(n, None, -1.0, 1.0)
    if (float(lo), float(hi)) != (0.0, 6.0):
        raise Unsupported(f"hardtanh({lo}, {hi}) (only hardtanh(0, 6), ReLU6)")
    return call("relu6", c.arg(n, 0, "x"))


def _gelu(n: Node, c: Context) -> Tokens:
    approximate = n.kwargs.get("approximate", n.args[1] if len(n.args) > 1 else "none")
    if approximate != "none":
        raise Unsupported(f"gelu(approximate='{approximate}') (the exact erf form only)")
    return call("gelu", c.arg(n, 0, "x"))


def _softmax(n: Node, c: Context) -> Tokens:
    return call("softmax", c.arg(n, 0, "x"), dim=lit(n.args[1], "dim"))


def _pool(name: str) -> Callable[[Node, Context], Tokens]:
    def render(n: Node, c: Context) -> Tokens:
        if name == "max_pool2d":
            _, kernel, stride, padding, dilation, ceil = _args(n, None, None, [], 0, 1, False)
            if dilation not in (1, [1, 1], [1]):
                raise Unsupported("dilated pooling")
        else:
            _, kernel, stride, padding, ceil, include, divisor = _args(n, None, None, [], 0, False, True, None)
            if not include or divisor is not None:
                raise Unsupported("average pooling with count_include_pad=False or a divisor_override")
        if ceil:
            raise Unsupported("ceil_mode=True")
        kw: dict[str, Tokens] = {"stride": pair(stride or kernel, "stride", 1)}
        if padding not in (0, [0, 0], [0]):
            kw["padding"] = pair(padding, "padding", 0)
        return call(name, c.arg(n, 0, "x"), pair(kernel, "kernel", 1), **kw)
    return render


def _adaptive_avg_pool2d(n: Node, c: Context) -> Tokens:
    size = list(n.args[1])
    if len(set(size)) != 1:
        raise Unsupported(f"output size {size} (square sizes only)")
    return call("adaptive_avg_pool2d", c.arg(n, 0, "x"), lit(size[0], "size"))


def _mean(n: Node, c: Context) -> Tokens:
    _, dims, keepdim = _args(n, None, None, False)
    rank = c.rank(n.args[0])
    if rank != 4 or sorted(d % 4 for d in dims) != [2, 3]:
        raise Unsupported("a mean over other dims than the spatial ones of an [N, C, H, W] tensor")
    pooled = call("adaptive_avg_pool2d", c.arg(n, 0, "x"), lit(1, "size"))
    return pooled if keepdim else call("flatten", pooled, start_dim=lit(1, "start_dim"))


def _binary(symbol: str) -> Callable[[Node, Context], Tokens]:
    def render(n: Node, c: Context) -> Tokens:
        if not all(hasattr(a, "op") for a in n.args[:2]):
            raise Unsupported("a tensor with a Python number (tensors on both sides only)")
        if n.kwargs.get("alpha", 1) != 1:
            raise Unsupported("alpha != 1")
        return [OPEN] + c.arg(n, 0, "a") + [f" {symbol} "] + c.arg(n, 1, "b") + [CLOSE]
    return render


def _cat(n: Node, c: Context) -> Tokens:
    tensors, dim = _args(n, None, 0)
    out = c.arg(n, (0, 0), "a")
    for i in range(1, len(tensors)):
        out = call("concat", out, c.arg(n, (0, i), "b"), dim=lit(dim, "dim"))
    return out


def _flatten(n: Node, c: Context) -> Tokens:
    _, start, end = _args(n, None, 0, -1)
    if end not in (-1, c.rank(n.args[0]) - 1):
        raise Unsupported("flatten with an end_dim other than the last")
    return call("flatten", c.arg(n, 0, "x"), start_dim=lit(start, "start_dim"))


def _reshape(n: Node, c: Context) -> Tokens:
    dims = []
    free = 0
    for d in n.args[1]:
        if hasattr(d, "op") or c.is_symbolic(d) or d == -1:
            free += 1
            dims.append(-1)
        else:
            dims.append(int(d))
    if free > 1:
        known = [int(v) for v in c.shape(n)]
        raise Unsupported(f"a shape with {free} unknown dims ({known} on the example); make all but one static")
    return call("reshape", c.arg(n, 0, "x"), int_list(dims, "dim"))


def _permute(n: Node, c: Context) -> Tokens:
    return call("permute", c.arg(n, 0, "x"), int_list(list(n.args[1]), "dim"))


def _transpose(n: Node, c: Context) -> Tokens:
    return call("transpose", c.arg(n, 0, "x"), dim0=lit(n.args[1], "dim0"), dim1=lit(n.args[2], "dim1"))


def _t(n: Node, c: Context) -> Tokens:
    return call("transpose", c.arg(n, 0, "x"), dim0=lit(0, "dim0"), dim1=lit(1, "dim1"))


def _unsqueeze(n: Node, c: Context) -> Tokens:
    return call("unsqueeze", c.arg(n, 0, "x"), lit(n.args[1], "dim"))


def _squeeze(n: Node, c: Context) -> Tokens:
    dim = n.args[1]
    if isinstance(dim, (list, tuple)):
        if len(dim) != 1:
            raise Unsupported("squeezing several dims at once")
        dim = dim[0]
    return call("squeeze", c.arg(n, 0, "x"), lit(dim, "dim"))


def _embedding(n: Node, c: Context) -> Tokens:
    return call("embedding", c.arg(n, 1, "ids"), c.arg(n, 0, "weight"))


def _slice(n: Node, c: Context) -> Tokens:
    _, dim, start, end, step = _args(n, None, 0, None, None, 1)
    if step not in (1, None):
        raise Unsupported("a slice with a step")
    size = c.shape(n.args[0])[dim]
    if c.is_symbolic(size):
        raise Unsupported("slicing a dim whose size is symbolic")
    start = 0 if start is None else int(start)
    end = int(size) if end is None or int(end) > int(size) else int(end)
    return call("slice", c.arg(n, 0, "x"), lit(dim, "dim"), lit(start, "start"), lit(end, "end"))


def _pad(n: Node, c: Context) -> Tokens:
    pads = [int(p) for p in n.args[1]]
    mode = n.args[2] if str(n.target) == "aten.pad.default" and len(n.args) > 2 else "constant"
    value = n.args[3] if str(n.target) == "aten.pad.default" and len(n.args) > 3 else (
        n.args[2] if str(n.target) == "aten.constant_pad_nd.default" and len(n.args) > 2 else 0)
    if mode != "constant" or (value or 0) != 0 or len(pads) not in (2, 4) or min(pads) < 0:
        raise Unsupported(f"a pad {pads} in mode '{mode}' with value {value} (zero pads of the last two dims only)")
    pads = pads + [0] * (4 - len(pads))
    return call("pad2d", c.arg(n, 0, "x"), int_list(pads, "pad"))


def _matmul(n: Node, c: Context) -> Tokens:
    return call("matmul", c.arg(n, 0, "a"), c.arg(n, 1, "b"))


def _sdpa(n: Node, c: Context) -> Tokens:
    raise Unsupported("scaled dot-product attention on tensors that are not [N, heads, T, head_dim] views of "
                      "[N, T, heads * head_dim] projections")


ROWS: dict[str, Callable[[Node, Context], Tokens]] = {
    "aten.conv2d.default": _conv2d,
    "aten.convolution.default": _convolution,
    "aten.linear.default": _linear,
    "aten.batch_norm.default": _batch_norm,
    "aten._native_batch_norm_legit_no_training.default": _bn_no_training,
    "aten.layer_norm.default": _layer_norm,
    "aten.rms_norm.default": _rms_norm,
    "aten.relu.default": _unary("relu"),
    "aten.relu_.default": _unary("relu"),
    "aten.hardtanh.default": _hardtanh,
    "aten.hardtanh_.default": _hardtanh,
    "aten.gelu.default": _gelu,
    "aten.silu.default": _unary("silu"),
    "aten.silu_.default": _unary("silu"),
    "aten.sigmoid.default": _unary("sigmoid"),
    "aten.tanh.default": _unary("tanh"),
    "aten.hardswish.default": _unary("hardswish"),
    "aten.hardswish_.default": _unary("hardswish"),
    "aten.softmax.int": _softmax,
    "aten._softmax.default": _softmax,
    "aten.max_pool2d.default": _pool("max_pool2d"),
    "aten.avg_pool2d.default": _pool("avg_pool2d"),
    "aten.adaptive_avg_pool2d.default": _adaptive_avg_pool2d,
    "aten.mean.dim": _mean,
    "aten.add.Tensor": _binary("+"),
    "aten.add_.Tensor": _binary("+"),
    "aten.sub.Tensor": _binary("-"),
    "aten.mul.Tensor": _binary("*"),
    "aten.mul_.Tensor": _binary("*"),
    "aten.cat.default": _cat,
    "aten.flatten.using_ints": _flatten,
    "aten.view.default": _reshape,
    "aten.reshape.default": _reshape,
    "aten._unsafe_view.default": _reshape,
    "aten.permute.default": _permute,
    "aten.transpose.int": _transpose,
    "aten.t.default": _t,
    "aten.unsqueeze.default": _unsqueeze,
    "aten.squeeze.dim": _squeeze,
    "aten.squeeze.dims": _squeeze,
    "aten.embedding.default": _embedding,
    "aten.slice.Tensor": _slice,
    "aten.matmul.default": _matmul,
    "aten.mm.default": _matmul,
    "aten.bmm.default": _matmul,
    "aten.scaled_dot_product_attention.default": _sdpa,
    "aten.pad.default": _pad,
    "aten.constant_pad_nd.default": _pad,
}
"""Op (`str(node.target)`) to the function that writes its DSL expression."""

IDENTITY = frozenset({
    "aten.dropout.default", "aten.dropout_.default", "aten.feature_dropout.default", "aten.alpha_dropout.default",
    "aten.clone.default", "aten.contiguous.default", "aten.alias.default", "aten.detach.default",
    "aten.lift_fresh_copy.default", "aten.expand.default", "aten.expand_as.default",
})
"""Ops that are their first argument in inference."""

GETITEM = operator.getitem

PAD_OPS = frozenset({"aten.pad.default", "aten.constant_pad_nd.default"})


def supported() -> str:
    """The supported ops, for error messages."""
    names = sorted({k.split(".")[1] for k in ROWS} | {k.split(".")[1] for k in IDENTITY})
    return ", ".join(names)


def unsupported(node: Node, module: str, why: str | None = None) -> TdslError:
    """The error for a node no row can express."""
    op = str(node.target)
    where = f"module '{module}'" if module else "the top-level module"
    if why is None:
        return TdslError(f"cannot import op {op} (node '{node.name}' in {where}): tdsl has no equivalent; "
                         f"supported ops: {supported()}")
    return TdslError(f"cannot import op {op} (node '{node.name}' in {where}): {why} is not supported")


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
