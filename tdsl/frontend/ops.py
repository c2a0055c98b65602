"""The built-in functions of the language: compile-time helpers, initialisers, tensor ops.

Each tensor built-in has a `Signature` (so argument errors read like Python's) and names
the `tdsl` op class it emits (`BUILTINS`, `builtin_of`); option values are checked here,
where the DSL location is known. Activations and binary arithmetic come from the rows of
`tdsl.ops.elementwise`: a new activation op is a built-in without an edit here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from tdsl.dialects import tdsl as d
from tdsl.errors import SourceLoc, TdslError, TdslTypeError
from tdsl.frontend import limits
from tdsl.frontend.values import InitSpec, ParamRef, Signature, TensorValue, bind_args, describe
from tdsl.ops.elementwise import ACTIVATIONS, BINARY

if TYPE_CHECKING:
    from tdsl.frontend.irgen import Elaborator

Kwargs = dict[str, tuple[Any, SourceLoc]]


# ---------------------------------------------------------------- compile-time helpers
def _num(v: Any, what: str, loc: SourceLoc) -> float | int:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TdslTypeError(f"{what} needs a number, got {describe(v)}", loc)
    return v


def _ct(name: str, names: tuple[str, ...], fn: Callable[..., Any], defaults: dict | None = None,
        variadic: bool = False) -> Callable[[list, Kwargs, SourceLoc], Any]:
    sig = Signature(f"{name}()", names, defaults or {}, variadic)

    def call(args: list, kwargs: Kwargs, loc: SourceLoc) -> Any:
        bound = bind_args(sig, args, kwargs, loc)
        return fn(loc, *(bound["*"],) if variadic else (bound[n] for n in names))

    return call


def _range(loc: SourceLoc, a: Any, b: Any, step: Any) -> range:
    if b is None and step is not None:  # would be taken for the stop
        raise TdslError("range() with a step needs a stop: range(start, stop, step)", loc)
    vals = [a] if b is None else [a, b] if step is None else [a, b, step]
    for v in vals:  # `none` (or a `let` without a value) included
        if isinstance(v, bool) or not isinstance(v, int):
            raise TdslTypeError(f"range() needs integers, got {describe(v)}", loc)
    if step == 0:
        raise TdslError("range() step must not be zero", loc)
    return range(*vals)


def _minmax(pick: Callable) -> Callable:
    def f(loc: SourceLoc, items: list) -> Any:
        if len(items) == 1 and isinstance(items[0], list):
            items = items[0]
        if not items:
            raise TdslError("needs at least one value", loc)
        return pick(_num(v, "min()/max()", loc) for v in items)
    return f


def _len(loc: SourceLoc, v: Any) -> int:
    if not isinstance(v, (list, str)):
        raise TdslTypeError(f"len() needs a list, got {describe(v)}", loc)
    return len(v)


def _sqrt(loc: SourceLoc, v: Any) -> float:
    v = _num(v, "sqrt()", loc)
    if v < 0:
        raise TdslError(f"sqrt() of a negative number ({v})", loc)
    return math.sqrt(v)


COMPILE_TIME_FNS: dict[str, Callable[[list, Kwargs, SourceLoc], Any]] = {
    "range": _ct("range", ("start", "stop", "step"), _range, {"stop": None, "step": None}),
    "len": _ct("len", ("value",), _len),
    "min": _ct("min", (), _minmax(min), variadic=True),
    "max": _ct("max", (), _minmax(max), variadic=True),
    "int": _ct("int", ("value",), lambda loc, v: int(_num(v, "int()", loc))),
    "float": _ct("float", ("value",), lambda loc, v: float(_num(v, "float()", loc))),
    "round": _ct("round", ("value",), lambda loc, v: int(round(_num(v, "round()", loc)))),
    "abs": _ct("abs", ("value",), lambda loc, v: abs(_num(v, "abs()", loc))),
    "sqrt": _ct("sqrt", ("value",), _sqrt),
}


# ---------------------------------------------------------------- initialisers
def _shape_arg(v: Any, loc: SourceLoc) -> tuple[int, ...] | None:
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, list):
        raise TdslTypeError(f"a shape is a list of integers, got {describe(v)}", loc)
    dims = []
    for dim in v:
        if isinstance(dim, float) and dim.is_integer():
            dim = int(dim)
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TdslTypeError(f"a shape dimension must be an integer, got {describe(dim)}", loc)
        if dim <= 0:
            raise TdslTypeError(f"a shape dimension must be positive, got {dim}", loc)
        if dim > limits.MAX_TENSOR_ELEMENTS:
            raise limits.LimitError(f"a shape dimension of {dim} is larger than the limit of "
                                    f"{limits.MAX_TENSOR_ELEMENTS}", loc)
        dims.append(dim)
    return tuple(dims)


def _init(name: str, extra: tuple[str, ...] = (), defaults: dict | None = None):
    sig = Signature(f"{name}()", ("shape",) + extra, {"shape": None, **(defaults or {})})

    def call(args: list, kwargs: Kwargs, loc: SourceLoc) -> InitSpec:
        bound = bind_args(sig, args, kwargs, loc)
        opts = []
        for k in extra:
            v = bound[k]
            if v is None:
                raise TdslError(f"{name}() is missing the argument '{k}'", loc)
            opts.append((k, float(_num(v, f"{name}() argument '{k}'", loc))))
        return InitSpec(name, _shape_arg(bound["shape"], loc), tuple(opts), loc)

    return call


INIT_FNS: dict[str, Callable[[list, Kwargs, SourceLoc], InitSpec]] = {
    "random_ternary": _init("random_ternary"),
    "zeros": _init("zeros"),
    "ones": _init("ones"),
    "randn": _init("randn"),
    "kaiming_uniform": _init("kaiming_uniform"),
    "uniform": _init("uniform", ("bound",), {"bound": None}),
}


# ---------------------------------------------------------------- tensor ops
def _pair(v: Any, what: str, loc: SourceLoc, minimum: int) -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v, v]
    if (not isinstance(v, list) or len(v) != 2
            or any(isinstance(x, bool) or not isinstance(x, int) for x in v)):
        raise TdslTypeError(f"{what} must be an integer or a list of two, got {describe(v)}", loc)
    if min(v) < minimum:
        raise TdslError(f"{what} must be at least {minimum}, got {v[0] if v[0] == v[1] else v}", loc)
    return (v[0], v[1])


def _int(v: Any, what: str, loc: SourceLoc, minimum: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TdslTypeError(f"{what} must be an integer, got {describe(v)}", loc)
    if minimum is not None and v < minimum:
        raise TdslError(f"{what} must be at least {minimum}, got {v}", loc)
    return v


def _prob(v: Any, what: str, loc: SourceLoc) -> float:
    v = float(_num(v, what, loc))
    if not 0.0 <= v < 1.0:
        raise TdslError(f"{what} must be in [0, 1), got {v:g}", loc)
    return v


def _loc_of(kwargs: Kwargs, name: str, loc: SourceLoc) -> SourceLoc:
    return kwargs[name][1] if name in kwargs else loc


PropsFn = Callable[[dict, Kwargs, SourceLoc], dict]


@dataclass(frozen=True)
class Builtin:
    """A tensor built-in: its signature, which arguments are tensors, the op class it emits
    and the function that checks the other arguments and returns the op's keyword options."""

    names: tuple[str, ...]
    defaults: dict[str, Any]
    tensors: tuple[str, ...]
    op: type[d.ValueOp]
    props: PropsFn


def _none(b: dict, kw: Kwargs, loc: SourceLoc) -> dict:
    return {}


def _conv_props(b: dict, kw: Kwargs, loc: SourceLoc) -> dict:
    return {"stride": _pair(b["stride"], "stride", _loc_of(kw, "stride", loc), 1),
            "padding": _pair(b["padding"], "padding", _loc_of(kw, "padding", loc), 0),
            "dilation": _pair(b["dilation"], "dilation", _loc_of(kw, "dilation", loc), 1),
            "groups": _int(b["groups"], "groups", _loc_of(kw, "groups", loc), 1)}


def _conv_transpose_props(b: dict, kw: Kwargs, loc: SourceLoc) -> dict:
    props = _conv_props(b, kw, loc)
    where = _loc_of(kw, "output_padding", loc)
    extra = _pair(b["output_padding"], "output_padding", where, 0)
    if any(e >= max(s, d) for e, s, d in zip(extra, props["stride"], props["dilation"])):
        raise TdslError(f"output_padding must be smaller than stride or dilation, got {list(extra)} with stride "
                        f"{list(props['stride'])} and dilation {list(props['dilation'])}", where)
    return {**props, "output_padding": extra}


def _eps(b: dict, kw: Kwargs, loc: SourceLoc) -> float:
    eps = float(_num(b["eps"], "eps", _loc_of(kw, "eps", loc)))
    if eps <= 0:
        raise TdslError(f"eps must be positive, got {eps:g}", _loc_of(kw, "eps", loc))
    return eps


def _bn_props(b: dict, kw: Kwargs, loc: SourceLoc) -> dict:
    return {"eps": _eps(b, kw, loc), "momentum": _prob(b["momentum"], "momentum", _loc_of(kw, "momentum", loc))}


def _pool_props(b: dict, kw: Kwargs, loc: SourceLoc) -> dict:
    kernel = _pair(b["kernel"], "kernel", _loc_of(kw, "kernel", loc), 1)
    stride = kernel if b["stride"] in (None, 0) else _pair(b["stride"], "stride",
                                                            _loc_of(kw, "stride", loc), 1)
    padding = _pair(b["padding"], "padding", _loc_of(kw, "padding", loc), 0)
    if padding[0] * 2 > kernel[0] or padding[1] * 2 > kernel[1]:
        raise TdslError(f"padding {list(padding)} must be at most half the kernel {list(kernel)}",
                        _loc_of(kw, "padding", loc))
    return {"kernel": kernel, "stride": stride, "padding": padding}


def _adaptive_props(b: dict, kw: Kwargs, loc: SourceLoc) -> dict:
    return {"output_size": _pair(b["size"], "size", _loc_of(kw, "size", loc), 1)}


def _global_props(b: dict, kw: Kwargs, loc: SourceLoc) -> dict:
    return {"output_size": (1, 1)}


def _ln_props(b: dict, kw: Kwargs, loc: SourceLoc) -> dict:
    return {"eps": _eps(b, kw, loc)}


def _softmax_props(b: dict, kw: Kwargs, loc: SourceLoc) -> dict:
    return {"dim": _int(b["dim"], "dim", _loc_of(kw, "dim", loc))}


def _flatten_props(b: dict, kw: Kwargs, loc: SourceLoc) -> dict:
    return {"start_dim": _int(b["start_dim"], "start_dim", _loc_of(kw, "start_dim", loc)),
            "end_dim": _int(b["end_dim"], "end_dim", _loc_of(kw, "end_dim", loc))}


def _reshape_props(b: dict, kw: Kwargs, loc: SourceLoc) -> dict:
    shape = b["shape"]
    where = _loc_of(kw, "shape", loc)
    if not isinstance(shape, list) or any(isinstance(d, bool) or not isinstance(d, int) for d in shape):
        raise TdslTypeError(f"reshape() needs a list of integers, got {describe(shape)}", where)
    if sum(1 for d in shape if d == -1) > 1 or any(d == 0 or d < -1 for d in shape):
        raise TdslError(f"reshape() shape {shape} may hold one -1 and positive sizes only", where)
    return {"shape": tuple(shape)}


def _dim_props(b: dict, kw: Kwargs, loc: SourceLoc) -> dict:
    return {"dim": _int(b["dim"], "dim", _loc_of(kw, "dim", loc))}


def _dropout_props(b: dict, kw: Kwargs, loc: SourceLoc) -> dict:
    return {"p": _prob(b["p"], "p", _loc_of(kw, "p", loc))}


def _rms_props(b: dict, kw: Kwargs, loc: SourceLoc) -> dict:
    return {"eps": _eps(b, kw, loc)}


def _ints_arg(v: Any, what: str, loc: SourceLoc) -> tuple[int, ...]:
    if not isinstance(v, list) or any(isinstance(x, bool) or not isinstance(x, int) for x in v):
        raise TdslTypeError(f"{what} must be a list of integers, got {describe(v)}", loc)
    return tuple(v)


def _permute_props(b: dict, kw: Kwargs, loc: SourceLoc) -> dict:
    where = _loc_of(kw, "dims", loc)
    dims = _ints_arg(b["dims"], "dims", where)
    if sorted(dims) != list(range(len(dims))):
        raise TdslError(f"permute() dims {list(dims)} must be a permutation of 0..{len(dims) - 1}", where)
    return {"dims": dims}


def _pad2d_props(b: dict, kw: Kwargs, loc: SourceLoc) -> dict:
    where = _loc_of(kw, "pads", loc)
    pads = _ints_arg(b["pads"], "pads", where)
    if len(pads) != 4 or min(pads) < 0:
        raise TdslError(f"pad2d() pads must be four non-negative integers [left, right, top, bottom], got "
                        f"{list(pads)}", where)
    return {"pads": pads}


def _transpose_props(b: dict, kw: Kwargs, loc: SourceLoc) -> dict:
    return {"dim0": _int(b["dim0"], "dim0", _loc_of(kw, "dim0", loc)),
            "dim1": _int(b["dim1"], "dim1", _loc_of(kw, "dim1", loc))}


def _slice_props(b: dict, kw: Kwargs, loc: SourceLoc) -> dict:
    start = _int(b["start"], "start", _loc_of(kw, "start", loc))
    end = _int(b["end"], "end", _loc_of(kw, "end", loc))
    if start >= 0 and end >= 0 and end <= start:
        raise TdslError(f"slice() end ({end}) must be greater than start ({start})", _loc_of(kw, "end", loc))
    return {"dim": _int(b["dim"], "dim", _loc_of(kw, "dim", loc)), "start": start, "end": end}


def _heads(b: dict, kw: Kwargs, loc: SourceLoc, name: str) -> int:
    return _int(b[name], name, _loc_of(kw, name, loc), 1)


def _rope_props(b: dict, kw: Kwargs, loc: SourceLoc) -> dict:
    base = float(_num(b["base"], "base", _loc_of(kw, "base", loc)))
    if base <= 1.0:
        raise TdslError(f"base must be greater than 1, got {base:g}", _loc_of(kw, "base", loc))
    return {"heads": _heads(b, kw, loc, "heads"), "base": base}


def _attention_props(b: dict, kw: Kwargs, loc: SourceLoc) -> dict:
    heads = _heads(b, kw, loc, "heads")
    kv_heads = heads if b["kv_heads"] is None else _heads(b, kw, loc, "kv_heads")
    if heads % kv_heads:
        raise TdslError(f"heads ({heads}) must be a multiple of kv_heads ({kv_heads})", _loc_of(kw, "kv_heads", loc))
    if not isinstance(b["causal"], bool):
        raise TdslTypeError(f"causal must be true or false, got {describe(b['causal'])}", _loc_of(kw, "causal", loc))
    return {"heads": heads, "kv_heads": kv_heads, "causal": b["causal"]}


_POOL = (("x", "kernel", "stride", "padding"), {"stride": None, "padding": 0}, ("x",))

BUILTINS: dict[str, Builtin] = {
    "linear": Builtin(("x", "w", "b"), {"b": None}, ("x", "w", "b"), d.LinearOp, _none),
    "matmul": Builtin(("a", "b"), {}, ("a", "b"), d.MatmulOp, _none),
    "ternary_matmul": Builtin(("x", "w"), {}, ("x", "w"), d.TernaryMatmulOp, _none),
    "conv2d": Builtin(("x", "w", "b", "stride", "padding", "dilation", "groups"),
                      {"b": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1},
                      ("x", "w", "b"), d.Conv2dOp, _conv_props),
    "conv_transpose2d": Builtin(("x", "w", "b", "stride", "padding", "output_padding", "dilation", "groups"),
                                {"b": None, "stride": 1, "padding": 0, "output_padding": 0, "dilation": 1,
                                 "groups": 1}, ("x", "w", "b"), d.CONVS["conv_transpose2d"], _conv_transpose_props),
    "batch_norm": Builtin(("x", "mean", "var", "weight", "bias", "eps", "momentum"),
                          {"eps": 1e-5, "momentum": 0.1}, ("x", "mean", "var", "weight", "bias"),
                          d.BatchNormOp, _bn_props),
    "layer_norm": Builtin(("x", "weight", "bias", "eps"), {"eps": 1e-5}, ("x", "weight", "bias"), d.LayerNormOp,
                          _ln_props),
    "softmax": Builtin(("x", "dim"), {"dim": -1}, ("x",), d.SoftmaxOp, _softmax_props),
    "max_pool2d": Builtin(*_POOL, d.MaxPool2dOp, _pool_props),
    "avg_pool2d": Builtin(*_POOL, d.AvgPool2dOp, _pool_props),
    "adaptive_avg_pool2d": Builtin(("x", "size"), {}, ("x",), d.AdaptiveAvgPool2dOp, _adaptive_props),
    "global_avg_pool": Builtin(("x",), {}, ("x",), d.AdaptiveAvgPool2dOp, _global_props),
    "flatten": Builtin(("x", "start_dim", "end_dim"), {"start_dim": 1, "end_dim": -1}, ("x",), d.FlattenOp,
                       _flatten_props),
    "reshape": Builtin(("x", "shape"), {}, ("x",), d.ReshapeOp, _reshape_props),
    "dropout": Builtin(("x", "p"), {"p": 0.5}, ("x",), d.DropoutOp, _dropout_props),
    "unsqueeze": Builtin(("x", "dim"), {}, ("x",), d.UnsqueezeOp, _dim_props),
    "squeeze": Builtin(("x", "dim"), {}, ("x",), d.SqueezeOp, _dim_props),
    **{row.name: Builtin(("x",), {}, ("x",), row.op, _none) for row in ACTIVATIONS.values()},
    **{row.name: Builtin(("a", "b"), {}, ("a", "b"), row.op, _none) for row in BINARY.values()},
    "residual": Builtin(("a", "b"), {}, ("a", "b"), d.AddOp, _none),
    # sequence models (issue 15)
    "rms_norm": Builtin(("x", "weight", "eps"), {"eps": 1e-6}, ("x", "weight"), d.RmsNormOp, _rms_props),
    "embedding": Builtin(("ids", "weight"), {}, ("ids", "weight"), d.EmbeddingOp, _none),
    "positions": Builtin(("ids",), {}, ("ids",), d.PositionsOp, _none),
    "permute": Builtin(("x", "dims"), {}, ("x",), d.PermuteOp, _permute_props),
    "pad2d": Builtin(("x", "pads"), {}, ("x",), d.Pad2dOp, _pad2d_props),
    "transpose": Builtin(("x", "dim0", "dim1"), {"dim0": -2, "dim1": -1}, ("x",), d.TransposeOp, _transpose_props),
    "slice": Builtin(("x", "dim", "start", "end"), {}, ("x",), d.SliceOp, _slice_props),
    "concat": Builtin(("a", "b", "dim"), {"dim": -1}, ("a", "b"), d.ConcatOp, _softmax_props),
    "rope": Builtin(("x", "heads", "base"), {"base": 10000.0}, ("x",), d.RotaryOp, _rope_props),
    "attention": Builtin(("q", "k", "v", "heads", "kv_heads", "causal"), {"kv_heads": None, "causal": True},
                         ("q", "k", "v"), d.AttentionOp, _attention_props),
}
"""Every tensor built-in of the language, by DSL name."""


ELABORATED: dict[type[d.ValueOp], str] = {
    d.GetParamOp: "a weight's name in a forward",
    d.CallOp: "a sub-layer call",
    d.ConstantOp: "a literal",
}
"""`tdsl` ops that no built-in emits: the elaborator writes them for this syntax."""


def builtin_of(op: type[d.ValueOp]) -> str | None:
    """The DSL built-in that emits `op` (its first name), or None for ops no program writes."""
    return next((name for name, b in BUILTINS.items() if b.op is op), None)


def emit_tensor_op(el: Elaborator, name: str, args: list, kwargs: Kwargs, loc: SourceLoc) -> TensorValue:
    """Bind a tensor built-in's arguments, check its options and emit its op."""
    spec = BUILTINS[name]
    bound = bind_args(Signature(f"{name}()", spec.names, spec.defaults), args, kwargs, loc)
    binary = issubclass(spec.op, d.BinaryOp)  # a number operand takes the other one's type
    operands = []
    for i, n in enumerate(spec.tensors):
        v = bound[n]
        if v is None and n in spec.defaults:  # an optional operand left out; a required one holding
            continue                          # nothing (`let y` with no value) is refused below
        if not isinstance(v, (TensorValue, ParamRef)) and not binary:
            where = _loc_of(kwargs, n, loc)
            raise TdslTypeError(f"{name}() argument '{n}' must be a tensor, got {describe(v)}", where)
        other = bound[spec.tensors[1 - i]] if binary else None
        operands.append(el._as_tensor(v, loc, like=other))
    return TensorValue(el.ir.op(spec.op, operands, spec.props(bound, kwargs, loc), loc))
