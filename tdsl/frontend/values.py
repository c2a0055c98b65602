"""Compile-time values of the elaborator, and argument binding for every callable.

Layer bodies run at compile time: their values are Python ints, floats, bools, strings
and lists, plus the kinds defined here: layer definitions and instances, functions,
weight declarations (`InitSpec` before binding, `ParamRef` after) and traced tensors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tdsl.errors import SourceLoc, TdslError, TdslTypeError, did_you_mean
from tdsl.frontend import ast, limits

if TYPE_CHECKING:
    from xdsl.ir import SSAValue


@dataclass(frozen=True)
class InitSpec:
    """The value of an initialiser call (`zeros([4])`, `random_ternary([o, i])`, `...`)."""

    init: str
    shape: tuple[int, ...] | None
    args: tuple[tuple[str, Any], ...] = ()
    loc: SourceLoc | None = None


@dataclass(frozen=True)
class ParamRef:
    """A declared weight or buffer of the layer being elaborated."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass
class TensorValue:
    """A traced tensor: an SSA value in the forward being built."""

    value: SSAValue


@dataclass
class LayerDefValue:
    """A layer definition; calling it makes an instance."""

    node: ast.LayerDef


@dataclass
class FnValue:
    """A user function (top level or a helper inside a layer)."""

    node: ast.FnDef
    closure: Any = None  # the defining Scope for helpers inside a layer; None = globals


@dataclass
class LayerInstance:
    """A sub-layer instance: a specialisation of a layer, created in a layer body.

    `sym` is the `tdsl.layer` symbol of its specialisation; `params` the bound DSL
    parameter values; `loc` where it was created.
    """

    layer: str
    sym: str
    params: dict[str, Any]
    loc: SourceLoc
    children: list[LayerInstance] = field(default_factory=list)


@dataclass(frozen=True)
class BuiltinFn:
    """A built-in function: compile-time helper, initialiser, tensor op or Sequential."""

    name: str


def describe(v: Any) -> str:
    """A short, user-readable description of a value's kind, for error messages."""
    if isinstance(v, bool):
        return f"bool {str(v).lower()}"
    if isinstance(v, int):
        return f"int {v}"
    if isinstance(v, float):
        return f"float {v:g}"
    if isinstance(v, str):
        return f"string {v!r}"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, TensorValue):
        return "a tensor"
    if isinstance(v, ParamRef):
        return f"the weight '{v.name}'"
    if isinstance(v, LayerInstance):
        return f"a {v.layer} layer"
    if isinstance(v, LayerDefValue):
        return f"the layer '{v.node.name}'"
    if isinstance(v, (FnValue, BuiltinFn)):
        return "a function"
    if isinstance(v, InitSpec):
        return f"an initialiser {v.init}()"
    if v is None:
        return "nothing"
    return type(v).__name__


@dataclass(frozen=True)
class Signature:
    """Names and defaults of a callable's parameters, for binding call arguments."""

    what: str  # e.g. "conv2d()", "layer 'Conv2d'"
    names: tuple[str, ...]
    defaults: dict[str, Any]
    variadic: bool = False


def bind_args(sig: Signature, args: list[Any], kwargs: dict[str, tuple[Any, SourceLoc]],
              loc: SourceLoc) -> dict[str, Any]:
    """Bind positional and keyword arguments like Python does, with readable errors."""
    if sig.variadic:
        if kwargs:
            name, (_, kloc) = next(iter(kwargs.items()))
            raise TdslError(f"{sig.what} takes no keyword arguments, got '{name}'", kloc)
        return {"*": args}
    if len(args) > len(sig.names):
        raise TdslError(
            f"{sig.what} takes at most {len(sig.names)} positional argument"
            f"{'s' if len(sig.names) != 1 else ''} ({len(args)} given)", loc)
    bound: dict[str, Any] = dict(zip(sig.names, args))
    for name, (value, kloc) in kwargs.items():
        if name not in sig.names:
            raise TdslError(f"{sig.what} got an unexpected keyword argument '{name}'"
                            f"{did_you_mean(name, sig.names)}", kloc)
        if name in bound:
            raise TdslError(f"{sig.what} got multiple values for argument '{name}'", kloc)
        bound[name] = value
    for name in sig.names:
        if name not in bound:
            if name not in sig.defaults:
                raise TdslError(f"{sig.what} is missing the argument '{name}'", loc)
            bound[name] = sig.defaults[name]
    return bound


_SCALAR_KINDS = {
    "int": (int,), "float": (float, int), "bool": (bool,), "str": (str,), "list": (list,),
    "trit": (int,), "int8": (int,), "int32": (int,), "float16": (float, int),
    "float32": (float, int),
}
_INT_RANGES = {"trit": (-1, 1), "int8": (-128, 127), "int32": (-2**31, 2**31 - 1)}


def check_scalar(type_name: str, value: Any, what: str, loc: SourceLoc | None) -> Any:
    """Check a compile-time value against a scalar type; ints widen to floats."""
    kinds = _SCALAR_KINDS.get(type_name)
    if kinds is None:
        return value
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and type_name != "bool")
    if not ok:
        raise TdslTypeError(f"{what} expects {type_name}, got {describe(value)}", loc)
    if type_name in _INT_RANGES:
        lo, hi = _INT_RANGES[type_name]
        if not lo <= value <= hi:
            if type_name == "trit":
                raise TdslTypeError(f"{what}: trit value must be -1, 0 or 1, got {value}", loc)
            raise TdslTypeError(f"{what}: {value} is out of range for {type_name}", loc)
    if type_name in ("float", "float16", "float32"):
        return float(value)
    return value


class Scope:
    """A chain of name tables: function locals → layer → globals → built-ins."""

    def __init__(self, parent: Scope | None = None):
        self.vars: dict[str, Any] = {}
        self.parent = parent

    def lookup(self, name: str) -> tuple[bool, Any]:
        s: Scope | None = self
        while s is not None:
            if name in s.vars:
                return True, s.vars[name]
            s = s.parent
        return False, None

    def suggest(self, name: str) -> str:
        """A did-you-mean suffix, preferring names of the innermost scope."""
        s: Scope | None = self
        while s is not None:
            hint = did_you_mean(name, list(s.vars))
            if hint:
                return hint
            s = s.parent
        return ""

    def assign(self, name: str, value: Any) -> None:
        """Rebind where the name lives (Python-like), else bind locally."""
        s: Scope | None = self
        while s is not None:
            if name in s.vars:
                s.vars[name] = value
                return
            s = s.parent
        self.vars[name] = value


class TypedScalar:
    """A compile-time scalar with a declared dtype (`let x: trit = 1`)."""

    def __init__(self, value: Any, dtype: str):
        self.value = value
        self.dtype = dtype


class ConstTensor:
    """A literal tensor (`TernaryTensor[2, 2](1, 0, -1, 1)`)."""

    def __init__(self, shape: tuple[int, ...], values: tuple, dtype: str, loc: SourceLoc):
        self.shape, self.values, self.dtype, self.loc = shape, values, dtype, loc


def param_value(v: Any, what: str, loc: SourceLoc) -> Any:
    """A layer parameter as an attribute can hold it: a range becomes a list, and a value that
    is not an int, float, bool, string or list of them is refused."""
    if isinstance(v, range):
        limits.check_size(len(v), loc)
        return list(v)
    if isinstance(v, list):
        return [param_value(x, what, loc) for x in v]
    if isinstance(v, (bool, int, float, str)):
        return v
    raise TdslTypeError(f"{what} must be a compile-time value (int, float, bool, string or list), "
                        f"got {describe(v)}", loc)


def flatten_values(v: Any) -> list:
    if isinstance(v, list):
        out: list = []
        for x in v:
            out.extend(flatten_values(x))
        return out
    return [v]


def freeze_value(v: Any) -> Any:
    if isinstance(v, dict):
        return tuple(sorted((k, freeze_value(x)) for k, x in v.items()))
    if isinstance(v, list):
        return ("list", tuple(freeze_value(x) for x in v))
    return (type(v).__name__, v)


def compile_time_binop(op: str, a: Any, b: Any, loc: SourceLoc) -> Any:
    """`a op b` on compile-time values; numbers stay int64 / finite, strings bounded."""
    result = _binop(op, a, b, loc)
    if isinstance(result, bool):
        return result
    if isinstance(result, int):
        return limits.check_int(result, loc, "the integer result")
    if isinstance(result, float):
        return limits.check_float(result, loc, f"'{op}'")
    return result


def _binop(op: str, a: Any, b: Any, loc: SourceLoc) -> Any:
    num = (int, float)
    try:
        if op == "+":
            if isinstance(a, list) and isinstance(b, list):
                return a + b
            if isinstance(a, str) and isinstance(b, str):
                limits.check_size(len(a) + len(b), loc, "string", "characters")
                return a + b
            _need_numbers(num, a, b, op, loc)
            return a + b
        if op in ("-", "*", "%"):
            _need_numbers(num, a, b, op, loc)
            return {"-": lambda: a - b, "*": lambda: a * b, "%": lambda: a % b}[op]()
        if op == "/":
            _need_numbers(num, a, b, op, loc)
            if isinstance(a, int) and isinstance(b, int) and b != 0 and a % b == 0:
                return a // b
            return a / b
        if op in ("==", "!="):
            return (a == b) == (op == "==")
        if op in ("<", "<=", ">", ">="):
            _need_numbers(num, a, b, op, loc)
            return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
        if op == "@":
            raise TdslTypeError("'@' multiplies tensors, not compile-time values", loc)
    except ZeroDivisionError:
        raise TdslError("division by zero", loc) from None
    raise TdslError(f"unknown operator '{op}'", loc)


def _need_numbers(kinds: tuple, a: Any, b: Any, op: str, loc: SourceLoc) -> None:
    for v in (a, b):
        if not isinstance(v, kinds) or isinstance(v, bool):
            raise TdslTypeError(f"operator '{op}' cannot be applied to {describe(a)} and "
                                f"{describe(b)}", loc)


def show_value(v: Any) -> str:
    """A compile-time value as the user would write it."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(show_value(x) for x in v) + "]"
    return repr(v) if isinstance(v, str) else str(v)
