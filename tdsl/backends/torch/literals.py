"""Python literals of IR values in emitted torch source: every literal the emitter writes comes
from `literal` (repr-based, so strings stay escaped), every dtype from `torch_dtype`."""
from __future__ import annotations

import math
from collections.abc import Sequence

from xdsl.dialects.builtin import (
    DenseIntOrFPElementsAttr,
    TensorType,
    UnregisteredOp,
)
from xdsl.ir import Attribute, Operation

from tdsl.dialects.locations import loc_of
from tdsl.dialects.storage import attr_value
from tdsl.errors import TdslError

PyValue = bool | int | float | str | tuple
"""A DSL parameter value as the emitted code spells it."""


_DTYPES = {
    "f16": "torch.float16", "bf16": "torch.bfloat16", "f32": "torch.float32", "f64": "torch.float64",
    "i2": "torch.int8", "i8": "torch.int8", "i32": "torch.int32", "i64": "torch.int64", "i1": "torch.bool",
}
"""Element type -> torch dtype; trits (`i2`) are stored as int8."""


def py_value(attr: Attribute, op: Operation) -> PyValue:
    return attr_value(attr, op, "the torch backend cannot pass the value {attr} to Python")


def literal(value: PyValue | list) -> str:
    """Python source for a value; repr keeps strings escaped, math spells inf and nan."""
    if isinstance(value, float) and not math.isfinite(value):
        return "math.nan" if math.isnan(value) else ("math.inf" if value > 0 else "-math.inf")
    if isinstance(value, tuple):
        inner = ", ".join(literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    return repr(value)


def docstring(text: str) -> str:
    """A docstring literal for `text`, which may hold user-chosen file names."""
    plain = text.isprintable() and "\\" not in text and '"""' not in text and not text.endswith('"')
    return f'"""{text}"""' if plain else repr(text)


def op_name(op: Operation) -> str:
    """The name the user sees, also for ops parsed without their dialect."""
    return op.op_name.data if isinstance(op, UnregisteredOp) else op.name


def torch_dtype(type_: Attribute, op: Operation) -> str:
    element = type_.get_element_type() if isinstance(type_, TensorType) else type_
    dtype = _DTYPES.get(str(element))
    if dtype is None:
        raise TdslError(f"the torch backend has no dtype for element type {element}", loc_of(op))
    return dtype


def tensor_literal(value: DenseIntOrFPElementsAttr, op: Operation, device: str | None = None) -> str:
    """`torch.tensor(<nested list>, dtype=...)` for a dense attribute; trits read as signed 2-bit."""
    values = list(value.get_values())
    element = str(value.get_element_type())
    if element == "i2":
        values = [(int(v) + 2) % 4 - 2 for v in values]
    shape = value.get_shape()

    def nest(flat: list, dims: Sequence[int]) -> list:
        if len(dims) <= 1:
            return flat
        step = len(flat) // dims[0]
        return [nest(flat[i * step:(i + 1) * step], dims[1:]) for i in range(dims[0])]

    data = literal(values[0]) if not shape else literal(nest(values, shape))
    where = f", device={device}" if device is not None else ""
    return f"torch.tensor({data}, dtype={torch_dtype(value.type, op)}{where})"

