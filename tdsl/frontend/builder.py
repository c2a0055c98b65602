"""Builds `tdsl` dialect ops for the elaborator, stamping each with its DSL location.

The elaborator speaks in DSL terms (dtype names, Python option values); this module
turns them into xDSL types and attributes, so `irgen` never touches xDSL details.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from xdsl.dialects.builtin import (ArrayAttr, BoolAttr, DenseIntOrFPElementsAttr, FloatAttr, IntegerAttr, IntegerType,
                                   ModuleOp, StringAttr,
                                   SymbolRefAttr, TensorType, UnrankedTensorType, f16, f32, f64,
                                   i64)
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue

from tdsl.dialects import tdsl as d
from tdsl.dialects.locations import set_loc
from tdsl.dialects.storage import EXAMPLE_SHAPE
from tdsl.dialects.weighted import WeightedOp
from tdsl.errors import SourceLoc
from tdsl.frontend.limits import check_scalar_range

DYNAMIC = -(2**63)

_ELEMENT = {"float32": f32, "float16": f16, "int8": IntegerType(8), "int32": IntegerType(32),
            "trit": IntegerType(2), "int64": i64}
_DTYPE_OF = {str(v): k for k, v in _ELEMENT.items()}


def tensor_type(dtype: str, dims: tuple[int | None, ...] | None) -> Attribute:
    """`tensor<...>` for a DSL dtype; `None` dims are dynamic, `None` shape is unranked."""
    elem = _ELEMENT[dtype]
    if dims is None:
        return UnrankedTensorType(elem)
    return TensorType(elem, [DYNAMIC if x is None else x for x in dims])


def to_attr(v: Any) -> Attribute:
    """A DSL compile-time value as an upstream-MLIR-compatible attribute."""
    if isinstance(v, bool):
        return BoolAttr.from_bool(v)
    if isinstance(v, int):
        return IntegerAttr(v, i64)
    if isinstance(v, float):
        return FloatAttr(v, f64)
    if isinstance(v, str):
        return StringAttr(v)
    if isinstance(v, (list, tuple)):
        return ArrayAttr([to_attr(x) for x in v])
    raise TypeError(f"no attribute form for {v!r}")


class _Forward:
    """A forward being traced: its block, inputs and names."""

    def __init__(self, types: list[Attribute], names: list[str], loc: SourceLoc):
        self.block = Block(arg_types=types)
        self.types = types
        self.names = names
        self.loc = loc
        self.op: d.ForwardOp | None = None
        self.examples: list[list[int | None]] = []

    @property
    def args(self) -> tuple[SSAValue, ...]:
        return tuple(self.block.args)


class IRBuilder:
    """Collects layers in creation order (callees before callers) and builds the module."""

    def __init__(self) -> None:
        self.layers: list[d.LayerOp] = []
        self.outputs: dict[str, tuple[Attribute, ...]] = {}
        self.stack: list[_Forward] = []

    # ---------------------------------------------------------------- structure
    def begin_forward(self, types: list[Attribute], names: list[str], loc: SourceLoc,
                      examples: list[list[int | None]] | None = None) -> _Forward:
        fwd = _Forward(types, names, loc)
        fwd.examples = examples or []
        for arg, name in zip(fwd.block.args, names):
            arg.name_hint = _hint(name)
        self.stack.append(fwd)
        return fwd

    def end_forward(self, fwd: _Forward) -> _Forward:
        assert self.stack and self.stack[-1] is fwd
        self.stack.pop()
        ret = fwd.block.last_op
        assert isinstance(ret, d.ReturnOp)
        fwd.op = d.ForwardOp(fwd.types, [v.type for v in ret.values], Region(fwd.block), fwd.names)
        set_loc(fwd.op, fwd.loc)
        if any(e is not None for shape in fwd.examples for e in shape):
            fwd.op.attributes[EXAMPLE_SHAPE] = ArrayAttr([ArrayAttr([IntegerAttr(-1 if e is None else e, 64) for e in shape])
                                                          for shape in fwd.examples])
        return fwd

    def emit_return(self, values: list[SSAValue], names: list[str] | None, loc: SourceLoc) -> None:
        self._append(d.ReturnOp(values, names), loc)

    def param_decl(self, ref: Any, init: Any, kind: str, precision: str | None,
                   loc: SourceLoc) -> d.ParamOp:
        args: dict[str, Attribute] = {}
        for k, v in init.args:
            if k == "value":
                args[k] = DenseIntOrFPElementsAttr.from_list(
                    TensorType(IntegerType(2), list(init.shape)), list(v))
            else:
                args[k] = to_attr(v)
        op = d.ParamOp(ref.name, tensor_type(ref.dtype, ref.shape), init.init, kind,
                       args or None, precision)
        set_loc(op, loc)
        return op

    def emit_layer(self, sym: str, layer: str, params: dict[str, Any], param_ops: list[d.ParamOp],
                   children: list[tuple[str, str, SourceLoc]], fwd: _Forward, loc: SourceLoc) -> None:
        body = Block()
        body.add_ops(param_ops)
        for name, callee, cloc in children:
            inst = d.InstanceOp(name, callee)
            set_loc(inst, cloc)
            body.add_op(inst)
        assert fwd.op is not None
        body.add_op(fwd.op)
        op = d.LayerOp(sym, layer, {k: to_attr(v) for k, v in params.items()}, Region(body))
        set_loc(op, loc)
        self.layers.append(op)
        self.outputs[sym] = tuple(fwd.op.function_type.outputs.data)

    def finish(self, entry_sym: str, source: str) -> ModuleOp:
        module = ModuleOp(self.layers)
        module.attributes["tdsl.entry"] = SymbolRefAttr(entry_sym)
        module.attributes["tdsl.source"] = StringAttr(recorded_source(source))
        self.layers = []
        return module

    # ---------------------------------------------------------------- values
    def _append(self, op: Operation, loc: SourceLoc) -> Operation:
        set_loc(op, loc)
        self.stack[-1].block.add_op(op)
        return op

    def get_param(self, name: str, shape: tuple[int, ...], dtype: str, loc: SourceLoc) -> SSAValue:
        op = self._append(d.GetParamOp(name, tensor_type(dtype, shape)), loc)
        op.results[0].name_hint = _hint(name)
        return op.results[0]

    def call(self, instance: str, callee_sym: str, operands: list[SSAValue], loc: SourceLoc) -> SSAValue:
        outs = self.outputs[callee_sym]
        op = self._append(d.CallOp(instance, operands, list(outs)), loc)
        if len(op.results) != 1:
            from tdsl.errors import TdslError

            raise TdslError(f"'{instance}' returns {len(op.results)} values; use it where one "
                            "tensor is expected", loc)
        return op.results[0]

    def constant_scalar(self, value: Any, dtype: str, loc: SourceLoc) -> SSAValue:
        check_scalar_range(value, dtype, loc)
        if dtype.startswith("float"):
            value = float(value)
        try:
            attr = DenseIntOrFPElementsAttr.from_list(tensor_type(dtype, ()), [value])
        except (struct.error, OverflowError, ValueError, TypeError):  # a dtype the range check does not know
            from tdsl.errors import TdslTypeError

            raise TdslTypeError(f"{value!r} cannot be an element of a {dtype} tensor", loc) from None
        return self._append(d.ConstantOp(attr), loc).results[0]

    def constant_tensor(self, shape: tuple[int, ...], values: tuple, dtype: str,
                        loc: SourceLoc) -> SSAValue:
        attr = DenseIntOrFPElementsAttr.from_list(tensor_type(dtype, shape), list(values))
        return self._append(d.ConstantOp(attr), loc).results[0]

    def element_of(self, value: SSAValue) -> str:
        return _DTYPE_OF.get(str(d.element_type_of(value.type)), "float32")

    def op(self, cls: type[Operation], operands: list[SSAValue], props: dict[str, Any], loc: SourceLoc) -> SSAValue:
        """Append a `cls` op built from its operands (x, w, optional b for a weighted op) and options."""
        if cls.get_trait(WeightedOp) is not None:
            x, w, *rest = operands
            op = cls(x, w, rest[0] if rest else None, **props)
        else:
            op = cls(*operands, **props)
        return self._append(op, loc).results[0]


def _hint(name: str) -> str | None:
    """A valid SSA name hint from a DSL name (xDSL rejects some characters)."""
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return cleaned if cleaned and not cleaned[0].isdigit() else None



def recorded_source(filename: str) -> str:
    """What the IR records as its source: a file installed with tdsl (a zoo model) as its path
    inside the package (`tdsl/models/mlp.tdsl`), not the absolute path of this installation,
    which would leak into every emitted and exported file and differ between machines."""
    installed = Path(__file__).resolve().parents[1]
    try:
        return (Path(installed.name) / Path(filename).resolve().relative_to(installed)).as_posix()
    except (ValueError, OSError):
        return filename
