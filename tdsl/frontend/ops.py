"""The built-in functions of the language: compile-time helpers, initialisers, tensor ops.

Each tensor built-in has a `Signature` (so argument errors read like Python's) and maps
to one `tdsl` op; option values are checked here, where the DSL location is known.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

from tdsl.errors import SourceLoc, TdslError, TdslTypeError
from tdsl.frontend.values import (InitSpec, ParamRef, Signature, TensorValue, bind_args,
                                  describe)

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
    vals = [v for v in (a, b, step) if v is not None]
    for v in vals:
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
    for d in v:
        if isinstance(d, float) and d.is_integer():
            d = int(d)
        if isinstance(d, bool) or not isinstance(d, int):
            raise TdslTypeError(f"a shape dimension must be an integer, got {describe(d)}", loc)
        if d <= 0:
            raise TdslTypeError(f"a shape dimension must be positive, got {d}", loc)
        dims.append(d)
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


# name -> (signature names, defaults, tensor argument names, op kind, property builder)
_Spec = tuple[tuple[str, ...], dict[str, Any], tuple[str, ...], str,
              Callable[[dict, Kwargs, SourceLoc], dict]]


def _none(b: dict, kw: Kwargs, loc: SourceLoc) -> dict:
    return {}


def _conv_props(b: dict, kw: Kwargs, loc: SourceLoc) -> dict:
    return {"stride": _pair(b["stride"], "stride", _loc_of(kw, "stride", loc), 1),
            "padding": _pair(b["padding"], "padding", _loc_of(kw, "padding", loc), 0),
            "dilation": _pair(b["dilation"], "dilation", _loc_of(kw, "dilation", loc), 1),
            "groups": _int(b["groups"], "groups", _loc_of(kw, "groups", loc), 1)}


def _bn_props(b: dict, kw: Kwargs, loc: SourceLoc) -> dict:
    eps = float(_num(b["eps"], "eps", _loc_of(kw, "eps", loc)))
    if eps <= 0:
        raise TdslError(f"eps must be positive, got {eps:g}", _loc_of(kw, "eps", loc))
    return {"eps": eps, "momentum": _prob(b["momentum"], "momentum", _loc_of(kw, "momentum", loc))}


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


_UNARY = {"relu", "relu6", "gelu", "sigmoid", "tanh"}
_BINARY = {"add": "add", "residual": "add", "sub": "sub", "mul": "mul", "div": "div"}

TENSOR_OPS: dict[str, _Spec] = {
    "linear": (("x", "w", "b"), {"b": None}, ("x", "w", "b"), "linear", _none),
    "matmul": (("a", "b"), {}, ("a", "b"), "matmul", _none),
    "ternary_matmul": (("x", "w"), {}, ("x", "w"), "ternary_matmul", _none),
    "conv2d": (("x", "w", "b", "stride", "padding", "dilation", "groups"),
               {"b": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1},
               ("x", "w", "b"), "conv2d", _conv_props),
    "batch_norm": (("x", "mean", "var", "weight", "bias", "eps", "momentum"),
                   {"eps": 1e-5, "momentum": 0.1}, ("x", "mean", "var", "weight", "bias"),
                   "batch_norm", _bn_props),
    "softmax": (("x", "dim"), {"dim": -1}, ("x",), "softmax", _softmax_props),
    "max_pool2d": (("x", "kernel", "stride", "padding"), {"stride": None, "padding": 0}, ("x",),
                   "max_pool2d", _pool_props),
    "avg_pool2d": (("x", "kernel", "stride", "padding"), {"stride": None, "padding": 0}, ("x",),
                   "avg_pool2d", _pool_props),
    "adaptive_avg_pool2d": (("x", "size"), {}, ("x",), "adaptive_avg_pool2d", _adaptive_props),
    "global_avg_pool": (("x",), {}, ("x",), "adaptive_avg_pool2d", _global_props),
    "flatten": (("x", "start_dim", "end_dim"), {"start_dim": 1, "end_dim": -1}, ("x",), "flatten",
                _flatten_props),
    "reshape": (("x", "shape"), {}, ("x",), "reshape", _reshape_props),
    "dropout": (("x", "p"), {"p": 0.5}, ("x",), "dropout", _dropout_props),
    "unsqueeze": (("x", "dim"), {}, ("x",), "unsqueeze", _dim_props),
    "squeeze": (("x", "dim"), {}, ("x",), "squeeze", _dim_props),
    **{n: (("x",), {}, ("x",), n, _none) for n in _UNARY},
    **{n: (("a", "b"), {}, ("a", "b"), k, _none) for n, k in _BINARY.items()},
}


def emit_tensor_op(el: Elaborator, name: str, args: list, kwargs: Kwargs, loc: SourceLoc) -> TensorValue:
    """Bind a tensor built-in's arguments, check its options and emit its op."""
    names, defaults, tensor_args, kind, props_fn = TENSOR_OPS[name]
    bound = bind_args(Signature(f"{name}()", names, defaults), args, kwargs, loc)
    operands = []
    for i, n in enumerate(tensor_args):
        v = bound[n]
        if v is None:
            continue
        if not isinstance(v, (TensorValue, ParamRef)) and kind not in ("add", "sub", "mul", "div"):
            where = _loc_of(kwargs, n, loc)
            raise TdslTypeError(f"{name}() argument '{n}' must be a tensor, got {describe(v)}", where)
        other = bound[tensor_args[1 - i]] if kind in ("add", "sub", "mul", "div") else None
        operands.append(el._as_tensor(v, loc, like=other))
    props = props_fn(bound, kwargs, loc)
    return TensorValue(el.ir.op(kind, operands, props, loc))
