"""ONNX graph from the kernel-level IR (docs/KERNEL_IR.md), built with the `onnx` helper API.

One handler per op kind (`_GraphEmitter.emit`, a `singledispatchmethod`); an op without one
is a `TdslError` at the op's DSL location. Weights come from the frozen state dict (the
parameter store), keyed by the IR's param names after `inline` (docs/KERNEL_IR.md, "As built").

Graph forms, chosen so that onnxruntime with *default* session options computes what the
graph says, as fast as it runs the fp32 model (its level-2 optimiser rewrites
`DequantizeLinear` + `MatMul` into `MatMulNBits`, which quantises activations: an error of
0.07 was measured; `Conv` and `Gemm` are left alone):

| kern op, precision | graph |
|---|---|
| conv2d, ternary, form `packed` (default) | UINT8 2-bit codes [O, ⌈K/4⌉] → `Unsqueeze` → `BitShift`(0, 2, 4, 6) → `BitwiseAnd` 3 → `Reshape`/`Slice` to [O, K] → `Cast` → `Sub` 1 → `Reshape` [O, C, kh, kw] → `Mul` scale' [O, 1, 1, 1] → `Conv`(bias') |
| conv2d, ternary, form `int2` / `int8` | `DequantizeLinear`(INT2 or INT8 trits [O, C, kh, kw], scale' [O], zero point 0, axis 0) → `Conv`(bias') |
| linear, ternary | the same into `Gemm`(transB=1); never `MatMul` |
| conv_transpose2d, any form but int8 | the conv2d weight above, then `Reshape` [g, O/g, C/g, kh, kw] → `Transpose`(0, 2, 1, 3, 4) → `Reshape` [C, O/g, kh, kw] (ONNX's layout; constants, folded at load) → `ConvTranspose`(bias') |
| conv2d / linear, any precision, form `qdq` | INT8 weight [O, …] → `DequantizeLinear`(scale' [O] > 0, zero point 0 (given for linear, implied for conv), axis 0) → `Conv` / `Gemm`(bias'); a ternary weight's INT8 comes from its 2-bit codes, unpacked as in `packed` but to INT8 (`Cast` INT32, `Sub` 1, `Cast` INT8), a constant subgraph folded at load; fp32/fp16 weights are rounded to per-channel symmetric int8, int8 ones keep their values; a channel with a negative scale' has its trits/values negated; module `qdq` then adds the activations' `QuantizeLinear`/`DequantizeLinear` pairs |
| fp32 | FLOAT weight·m → `Conv` / `Gemm` |
| fp16 | FLOAT16 weight → `Cast` (→ `Mul` m) → `Conv` / `Gemm` |
| int8 | the torch backend's dynamic int8: per-tensor symmetric activation quantisation (`Abs`, `ReduceMax`, `Round`, `Clip`), `ConvInteger` / `MatMulInteger` on INT8 weights, `Cast` and the per-channel rescale in float32 (float64 when the integer sum may exceed 2^24, as torch), bias, then the batch norm as `Mul`/`Add` in torch's float32 order (not folded: the next layer's quantisation must see the same values) |

Why `packed` is the default: every input of its unpacking chain is an initializer, so
onnxruntime's constant folding (graph optimisation level 1, on by default) evaluates it
once when the session is created and runs a plain `Conv`/`Gemm` on the resulting float32
weight, exactly as fast as the fp32 model, while the file holds 2 bits per trit. A
`DequantizeLinear` is never folded (onnxruntime keeps it for its QDQ fusions), so the
`int2`/`int8` forms dequantise the weights on every run: 3-7x slower than fp32 (measured).
`int2` is the standard-typed form for tools that read ONNX's INT2 (opset 25).

then `Add` (residual), `Relu` / `Clip`(0, 6). Except for int8, the batch norm is folded
numerically (`tensors.fold_bn`): scale' = α·m, bias' = β + (b − μ)·m with m = γ/√(σ²+ε),
computed in float64 from the frozen arrays.
"""  # noqa: E501 (one Markdown table row per line)
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from functools import singledispatchmethod

import numpy as np
import onnx
from onnx import TensorProto, helper
from xdsl.dialects.builtin import TensorType
from xdsl.ir import Operation, SSAValue
from xdsl.irdl import IRDLOperation

from tdsl.backends.onnx.tensors import array_tensor, fold_bn, int2_tensor, per_channel
from tdsl.dialects import kern, tern
from tdsl.dialects import tdsl as t
from tdsl.dialects.context import weighted_ops
from tdsl.dialects.locations import loc_of
from tdsl.errors import TdslError
from tdsl.ops.composite import COMPOSITES
from tdsl.ops.elementwise import ACTIVATIONS, BINARY, BY_NAME

INT8_MAX = 127
_EXACT_F32 = 2 ** 24
"""As `tdsl.backends.torch.runtime`: an int8 sum of k products is exact in float32 while 127²·k < 2^24."""

_FLOAT_TYPES = {"f32": TensorProto.FLOAT, "f16": TensorProto.FLOAT16, "f64": TensorProto.DOUBLE}
_IO_TYPES = {**_FLOAT_TYPES, "i32": TensorProto.INT32, "i64": TensorProto.INT64}
"""Element types a graph input or output may have: floats, and integers for token ids."""


def _op_name(op: Operation) -> str:
    return op.name if isinstance(op, IRDLOperation) else type(op).__name__


def sanitize(hint: str) -> str:
    """The one source of ONNX names: letters, digits, `_` and `.` (dotted param paths stay readable)."""
    name = re.sub(r"[^A-Za-z0-9_.]", "_", hint).strip(".") or "v"
    return name if not name[0].isdigit() else f"v{name}"


class ParamStore:
    """The frozen state dict as numpy arrays, looked up by IR param name."""

    def __init__(self, state: Mapping[str, np.ndarray], layout: Mapping[str, object]):
        self.state = dict(state)
        self.key_of: dict[str, str] = {}
        self.int8_scale: dict[str, str] = {}
        self.ternary_scale: dict[str, str] = {}
        for s in layout.values():
            role, precision, weight, key = s.role, s.precision, s.weight, s.key  # type: ignore[attr-defined]
            if role == "scale":
                (self.int8_scale if precision == "int8" else self.ternary_scale)[weight] = key
            else:
                self.key_of[weight] = key

    def array(self, name: str, op: Operation) -> np.ndarray:
        key = self.key_of.get(name, name)
        if key not in self.state:
            raise TdslError(f"the ONNX backend finds no stored tensor for param '{name}'", loc_of(op))
        return self.state[key]

    def scale(self, table: Mapping[str, str], weight: str, op: Operation) -> np.ndarray:
        if weight not in table:
            raise TdslError(f"the ONNX backend finds no stored scale for weight '{weight}'", loc_of(op))
        return self.state[table[weight]]


def _ints(attr) -> list[int]:
    return [int(v) for v in attr.get_values()]


def _dims(value: SSAValue) -> list[int | None]:
    typ = value.type
    assert isinstance(typ, TensorType), typ
    return [None if d < 0 else int(d) for d in typ.get_shape()]


class _GraphEmitter:
    """Builds one graph; all state (names, nodes, initializers) is per instance."""

    def __init__(self, store: ParamStore, *, opset: int, ternary_form: str = "packed"):
        self.store = store
        self.opset = opset
        self.ternary_form = ternary_form
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.names: dict[SSAValue, str] = {}
        self.params: dict[SSAValue, str] = {}
        self.used: set[str] = set()
        self.quantised: dict[SSAValue, tuple[str, str]] = {}
        self.constants: dict[tuple, str] = {}
        self.weight_types: dict[str, str] = {}
        self.outputs: list[str] = []

    # ------------------------------------------------------------------ names and nodes

    def fresh(self, hint: str) -> str:
        base = sanitize(hint)
        name, n = base, 0
        while name in self.used:
            n += 1
            name = f"{base}_{n}"
        self.used.add(name)
        return name

    def node(self, op_type: str, inputs: Sequence[str], hint: str, **attrs) -> str:
        out = self.fresh(hint)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=self.fresh(f"{op_type}_{out}"),
                                           **attrs))
        return out

    def initializer(self, hint: str, value: np.ndarray | TensorProto) -> str:
        name = self.fresh(hint)
        if isinstance(value, TensorProto):
            value.name = name
            self.initializers.append(value)
        else:
            self.initializers.append(array_tensor(name, value))
        return name

    def constant(self, value: np.ndarray, hint: str) -> str:
        """A small shared initializer (shapes, axes, clip bounds)."""
        key = (value.dtype.str, value.shape, value.tobytes())
        if key not in self.constants:
            self.constants[key] = self.initializer(hint, value)
        return self.constants[key]

    def __getitem__(self, value: SSAValue) -> str:
        """The ONNX name of an IR value; a param read used as a plain tensor becomes a float32
        initializer (a float16 one plus `Cast` when stored as float16)."""
        if value in self.names:
            return self.names[value]
        owner = value.owner
        if value in self.params:
            assert isinstance(owner, Operation)
            stored = self.store.array(self.params[value], owner)
            if stored.dtype == np.float16:
                name = self.node("Cast", [self.initializer(self.params[value], stored)], self.params[value] + ".f32",
                                 to=TensorProto.FLOAT)
            elif stored.dtype in (np.float32, np.float64):
                name = self.initializer(self.params[value], stored.astype(np.float32))
            else:
                raise TdslError(f"the ONNX backend cannot read the {stored.dtype} param '{self.params[value]}' "
                                "as a plain tensor", loc_of(owner))
            self.names[value] = name
            return name
        raise AssertionError(f"value used before definition: {value}")

    def param_name(self, value: SSAValue | None, op: Operation) -> str | None:
        if value is None:
            return None
        if value not in self.params:
            raise TdslError(f"the ONNX backend needs '{_op_name(op)}' operands that read params directly",
                            loc_of(op))
        return self.params[value]

    def param_array(self, value: SSAValue | None, op: Operation) -> np.ndarray | None:
        name = self.param_name(value, op)
        return None if name is None else self.store.array(name, op)

    # ------------------------------------------------------------------ the forward

    def emit_forward(self, forward: t.ForwardOp, batch_dim: str) -> tuple[list[onnx.ValueInfoProto],
                                                                           list[onnx.ValueInfoProto]]:
        arg_names = [a.data for a in forward.arg_names.data] if forward.arg_names is not None else []
        inputs = []
        for i, arg in enumerate(forward.args):
            name = self.fresh(arg_names[i] if i < len(arg_names) else f"input_{i}")
            self.names[arg] = name
            inputs.append(self.value_info(name, arg, batch_dim))
        for op in forward.body.block.ops:
            self.emit(op)
        ret = forward.return_op
        names = [n.data for n in ret.names.data] if ret.names is not None else (
            ["output"] if len(ret.values) == 1 else [f"output_{i}" for i in range(len(ret.values))])
        outputs = []
        for value, hint in zip(ret.values, names):
            name = self.node("Identity", [self[value]], hint)
            outputs.append(self.value_info(name, value, batch_dim))
        return inputs, outputs

    def value_info(self, name: str, value: SSAValue, batch_dim: str) -> onnx.ValueInfoProto:
        typ = value.type
        if not isinstance(typ, TensorType) or str(typ.element_type) not in _IO_TYPES:
            raise TdslError(f"the ONNX backend needs float or int32/int64 tensor inputs and outputs, not {typ}")
        shape = [d if d is not None else (batch_dim if i == 0 else f"{name}_dim{i}")
                 for i, d in enumerate(_dims(value))]
        return helper.make_tensor_value_info(name, _IO_TYPES[str(typ.element_type)], shape)

    # ------------------------------------------------------------------ handlers

    def refuse(self, op: Operation, why: str) -> TdslError:
        """The error for an op this graph cannot hold, at the op's location."""
        return TdslError(f"the ONNX backend cannot export '{_op_name(op)}': {why}", loc_of(op))

    def composite(self, op: Operation) -> None:
        row = COMPOSITES[type(op)]
        self.names[op.results[0]] = row.onnx(self, op, [self[v] for v in op.operands], _op_name(op))

    def unsupported(self, op: Operation) -> TdslError:
        why = UNSUPPORTED.get(type(op), "it has no handler")
        return TdslError(f"the ONNX backend has no handler for '{_op_name(op)}': {why}", loc_of(op))

    @singledispatchmethod
    def emit(self, op: Operation) -> None:
        raise self.unsupported(op)

    @emit.register
    def _(self, op: t.ReturnOp) -> None:
        return None

    @emit.register
    def _(self, op: t.GetParamOp) -> None:
        self.params[op.output] = op.param.root_reference.data

    @emit.register
    def _(self, op: tern.GetPackedOp) -> None:
        self.params[op.output] = op.param.root_reference.data

    @emit.register
    def _(self, op: kern.Conv2dOp) -> None:
        stride, padding, dilation = _ints(op.stride), _ints(op.padding), _ints(op.dilation)
        geometry = {"strides": stride, "pads": padding + padding, "dilations": dilation, "group": op.groups.value.data}
        hint = self.param_name(op.weight, op) or "conv"
        hint = hint.removesuffix(".weight")
        if op.precision.data == "int8" and self.ternary_form != "qdq":
            y = self.int8_product(op, "ConvInteger", geometry, hint)
        else:
            w, b = self.float_weight(op, hint)
            y = self.node("Conv", [self[op.input], w] + ([b] if b else []), hint, **geometry)
        self.epilogue(op, y, hint)

    def conv_transpose2d(self, op: kern.Conv2dOp) -> None:
        """`ConvTranspose` on the weight as conv2d's handler makes it, with its channel dims
        swapped within each group (ONNX's layout [C, O/g, kh, kw])."""
        if op.precision.data == "int8" and self.ternary_form != "qdq":
            raise self.refuse(op, "int8 weights on conv_transpose2d have no ONNX form; keep it fp16, fp32 or ternary")
        hint = (self.param_name(op.weight, op) or "conv_transpose").removesuffix(".weight")
        geometry = op.geometry()
        (sh, sw), (ph, pw), (eh, ew), (dh, dw), g = (geometry[k] for k in ("stride", "padding", "output_padding",
                                                                            "dilation", "groups"))
        out, per_group, kh, kw = (int(d) for d in op.weight_dims())  # type: ignore[arg-type]
        w, b = self.float_weight(op, hint)
        i64 = lambda *v: self.constant(np.array(v, dtype=np.int64), "shape")  # noqa: E731
        grouped = self.node("Reshape", [w, i64(g, out // g, per_group, kh, kw)], hint + ".w_groups")
        swapped = self.node("Transpose", [grouped], hint + ".w_swapped", perm=[0, 2, 1, 3, 4])
        w = self.node("Reshape", [swapped, i64(g * per_group, out // g, kh, kw)], hint + ".w_onnx")
        y = self.node("ConvTranspose", [self[op.input], w] + ([b] if b else []), hint, strides=[sh, sw],
                      pads=[ph, pw, ph, pw], output_padding=[eh, ew], dilations=[dh, dw], group=g,
                      kernel_shape=[kh, kw])
        self.epilogue(op, y, hint)

    @emit.register
    def _(self, op: kern.LinearOp) -> None:
        hint = (self.param_name(op.weight, op) or "linear").removesuffix(".weight")
        x_dims = _dims(op.input)
        x = self[op.input]
        x2 = x if len(x_dims) == 2 else self.node("Reshape", [x, self.constant(np.array([-1, x_dims[-1]]), "shape")],
                                                   hint + ".in2d")
        if op.precision.data == "int8" and self.ternary_form != "qdq":
            y = self.int8_product(op, "MatMulInteger", {}, hint, flatten=len(x_dims) != 2)
        else:
            w, b = self.float_weight(op, hint)
            y = self.node("Gemm", [x2, w] + ([b] if b else []), hint, transB=1)
        if len(x_dims) != 2:
            y = self.node("Reshape", [y, self.reshape_target(op.output, keep=len(x_dims) - 1)], hint + ".out")
        self.epilogue(op, y, hint)

    def folded(self, op: kern.Conv2dOp | kern.LinearOp, channels: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        bn = op.bn_operands()
        arrays = None if bn is None else tuple(self.param_array(v, op) for v in bn)
        eps = op.eps.value.data if op.eps is not None else 0.0
        return fold_bn(channels, self.param_array(op.bias, op), arrays, eps)  # type: ignore[arg-type]

    def float_weight(self, op: kern.Conv2dOp | kern.LinearOp, hint: str) -> tuple[str, str | None]:
        """(weight as float32 in the graph, folded bias or None) for ternary, fp32 and fp16 weights."""
        name = self.param_name(op.weight, op)
        assert name is not None
        precision = op.precision.data
        dims = op.weight_dims()
        assert dims is not None and all(d is not None for d in dims)
        channels = int(dims[0])  # type: ignore[arg-type]
        m, c = self.folded(op, channels)
        bias = None if c is None else self.initializer(hint + ".bias", c.astype(np.float32))
        bshape = (channels,) + (1,) * (len(dims) - 1)
        if self.ternary_form == "qdq":
            return self.qdq_weight(op, name, [int(d) for d in dims], m, hint), bias  # type: ignore[arg-type]
        if precision == "ternary":
            if not op.is_packed:
                raise TdslError("the ONNX backend needs packed ternary weights (run `pack`)", loc_of(op))
            from tdsl.runtime.packing import unpack

            trits = unpack(self.store.array(name, op), dims, op.format.data if op.format else "2bit")
            scale = per_channel(self.store.scale(self.store.ternary_scale, name, op), channels)
            if m is not None:
                scale = scale * m
            if self.ternary_form == "packed":
                self.weight_types[name] = "UINT8"
                return self.unpacked_weight(name, trits, scale, hint), bias
            if self.ternary_form == "int2":
                q, zero = int2_tensor(name, trits), int2_tensor(name, np.zeros(channels, np.int8))
            else:
                q, zero = array_tensor(name, trits.astype(np.int8)), array_tensor(name, np.zeros(channels, np.int8))
            self.weight_types[name] = "INT2" if self.ternary_form == "int2" else "INT8"
            w = self.node("DequantizeLinear", [self.initializer(name, q),
                                               self.initializer(hint + ".weight_scale", scale.astype(np.float32)),
                                               self.initializer(hint + ".weight_zero_point", zero)],
                          name + ".dq", axis=0)
            return w, bias
        stored = self.store.array(name, op)
        if precision == "fp16" or stored.dtype == np.float16:
            self.weight_types[name] = "FLOAT16"
            w = self.node("Cast", [self.initializer(name, stored.astype(np.float16))], name + ".f32",
                          to=TensorProto.FLOAT)
            if m is not None:
                w = self.node("Mul", [w, self.initializer(hint + ".bn_scale", m.astype(np.float32).reshape(bshape))],
                              name + ".folded")
            return w, bias
        if precision != "fp32":
            raise TdslError(f"the ONNX backend has no weight form for precision '{precision}'", loc_of(op))
        self.weight_types[name] = "FLOAT"
        folded = stored.astype(np.float64) * (1.0 if m is None else m.reshape(bshape))
        return self.initializer(name, folded.astype(np.float32)), bias

    def trit_codes(self, name: str, trits: np.ndarray) -> str:
        """The UINT8 codes t + 1 [O, K] of `trits`, computed in the graph from tdsl's `2bit`
        rows stored as the initializer `name`: [O, ⌈K/4⌉] bytes with the code of element
        4i + j at bits 2j of byte i."""
        from tdsl.runtime.packing import pack

        rows, K = trits.shape[0], int(np.prod(trits.shape[1:]))
        codes = self.initializer(name, pack(trits.reshape(rows, K), "2bit"))
        i64 = lambda *v: self.constant(np.array(v, dtype=np.int64), "c")  # noqa: E731
        planes = self.node("BitShift", [self.node("Unsqueeze", [codes, i64(2)], name + ".bytes"),
                                        self.constant(np.array([0, 2, 4, 6], np.uint8), "shifts")],
                           name + ".shifted", direction="RIGHT")
        fields = self.node("BitwiseAnd", [planes, self.constant(np.array(3, np.uint8), "c")], name + ".codes")
        flat = self.node("Reshape", [fields, i64(rows, -1)], name + ".codes2d")
        if K % 4:  # the last byte of each row is padded
            flat = self.node("Slice", [flat, i64(0), i64(K), i64(1)], name + ".codes_k")
        return flat

    def unpacked_weight(self, name: str, trits: np.ndarray, scale: np.ndarray, hint: str) -> str:
        """The float32 weight scale'·trits, computed in the graph from 2-bit codes (form
        `packed`, module docstring)."""
        i64 = lambda *v: self.constant(np.array(v, dtype=np.int64), "c")  # noqa: E731
        rows = trits.shape[0]
        flat = self.trit_codes(name, trits)
        values = self.node("Sub", [self.node("Cast", [flat], name + ".codesf", to=TensorProto.FLOAT),
                                   self.constant(np.array(1.0, np.float32), "c")], name + ".trits")
        shaped = self.node("Reshape", [values, i64(*trits.shape)], name + ".trits_shaped")
        bshape = (rows,) + (1,) * (trits.ndim - 1)
        return self.node("Mul", [shaped, self.initializer(hint + ".weight_scale",
                                                          scale.astype(np.float32).reshape(bshape))], name + ".w")

    def qdq_weight(self, op: kern.Conv2dOp | kern.LinearOp, name: str, dims: list[int], m: np.ndarray | None,
                   hint: str) -> str:
        """`DequantizeLinear` of the weight as INT8 with per-channel scale' > 0 (form `qdq`,
        module docstring): what onnxruntime's QDQ fusions take as a quantised weight."""
        precision = op.precision.data
        channels = dims[0]
        bshape = (channels,) + (1,) * (len(dims) - 1)
        stored = self.store.array(name, op)
        if precision == "ternary":
            if not op.is_packed:
                raise TdslError("the ONNX backend needs packed ternary weights (run `pack`)", loc_of(op))
            from tdsl.runtime.packing import unpack

            values = unpack(stored, dims, op.format.data if op.format else "2bit").astype(np.int16)
            scale = per_channel(self.store.scale(self.store.ternary_scale, name, op), channels)
        elif precision == "int8":
            if stored.dtype != np.int8:
                raise TdslError(f"the int8 weight '{name}' is stored as {stored.dtype}, not int8", loc_of(op))
            values = stored.astype(np.int16)
            scale = per_channel(self.store.scale(self.store.int8_scale, name, op), channels)
        elif precision in ("fp32", "fp16"):
            w = stored.astype(np.float64).reshape(channels, -1)
            scale = np.abs(w).max(axis=1, initial=0.0) / INT8_MAX
            values = np.round(w / np.where(scale > 0, scale, 1.0)[:, None]).astype(np.int16).reshape(dims)
        else:
            raise TdslError(f"the ONNX backend has no weight form for precision '{precision}'", loc_of(op))
        scale = scale * (1.0 if m is None else m)
        values = np.clip(values * np.sign(scale).reshape(bshape), -INT8_MAX, INT8_MAX).astype(np.int8)
        values[scale == 0] = 0                      # a zero scale': the channel's weight is zero
        scale = np.where(scale == 0, 1.0, np.abs(scale))
        if precision == "ternary":
            self.weight_types[name] = "UINT8"
            codes = self.trit_codes(name, values)
            as_int = self.node("Sub", [self.node("Cast", [codes], name + ".codes32", to=TensorProto.INT32),
                                       self.constant(np.array(1, np.int32), "c")], name + ".trits32")
            q = self.node("Reshape", [self.node("Cast", [as_int], name + ".trits8", to=TensorProto.INT8),
                                      self.constant(np.array(dims, np.int64), "shape")], name + ".int8")
        else:
            self.weight_types[name] = "INT8"
            q = self.initializer(name, values)
        inputs = [q, self.initializer(hint + ".weight_scale", scale.astype(np.float32))]
        if isinstance(op, kern.LinearOp):  # onnxruntime 1.32 fuses a Gemm into QGemm only with it
            inputs.append(self.initializer(hint + ".weight_zero_point", np.zeros(channels, np.int8)))
        # a conv's zero point is left out (0, of the weight's type): [O] zeros would cost a byte a channel
        return self.node("DequantizeLinear", inputs, name + ".dq", axis=0)

    def quantise_activation(self, value: SSAValue, hint: str) -> tuple[str, str]:
        """(INT8 values, float32 scale ()) of `value`: symmetric per tensor, as `_rt.int8_activation`."""
        if value in self.quantised:
            return self.quantised[value]
        x = self[value]
        f32 = lambda v: self.constant(np.array(v, dtype=np.float32), "c")  # noqa: E731
        amax = self.node("ReduceMax", [self.node("Abs", [x], hint + ".abs")], hint + ".amax", keepdims=0)
        scale = self.node("Where", [self.node("Greater", [amax, f32(0.0)], hint + ".nonzero"),
                                    self.node("Div", [amax, f32(INT8_MAX)], hint + ".amax_127"), f32(1.0)],
                          hint + ".act_scale")
        rounded = self.node("Round", [self.node("Div", [x, scale], hint + ".scaled")], hint + ".rounded")
        clipped = self.node("Clip", [rounded, f32(-INT8_MAX), f32(INT8_MAX)], hint + ".clipped")
        q = self.node("Cast", [clipped], hint + ".act_q", to=TensorProto.INT8)
        self.quantised[value] = (q, scale)
        return q, scale

    def int8_product(self, op: kern.Conv2dOp | kern.LinearOp, op_type: str, attrs: dict, hint: str,
                     flatten: bool = False) -> str:
        """`ConvInteger` / `MatMulInteger` of the quantised input and the INT8 weight, rescaled by
        s_x·s_w, plus the bias, then the batch norm: `_rt.int8_conv2d` / `int8_linear` and
        `F.batch_norm` in their order of float operations."""
        name = self.param_name(op.weight, op)
        assert name is not None
        stored = self.store.array(name, op)
        if stored.dtype != np.int8:
            raise TdslError(f"the int8 weight '{name}' is stored as {stored.dtype}, not int8", loc_of(op))
        channels = stored.shape[0]
        sw = per_channel(self.store.scale(self.store.int8_scale, name, op), channels)
        q, sx = self.quantise_activation(op.input, hint)
        if flatten:
            q = self.node("Reshape", [q, self.constant(np.array([-1, stored.shape[1]]), "shape")], hint + ".q2d")
        weight = stored if op_type == "ConvInteger" else np.ascontiguousarray(stored.T)
        self.weight_types[name] = "INT8"
        acc = self.node(op_type, [q, self.initializer(name, weight)], hint + ".acc", **attrs)
        shape = (1, channels, 1, 1) if op_type == "ConvInteger" else (channels,)
        if INT8_MAX * INT8_MAX * math.prod(stored.shape[1:]) < _EXACT_F32:
            s = self.node("Mul", [sx, self.initializer(hint + ".weight_scale", sw.astype(np.float32).reshape(shape))],
                          hint + ".scale")
            y = self.node("Mul", [self.node("Cast", [acc], hint + ".accf", to=TensorProto.FLOAT), s],
                          hint + ".rescaled")
        else:
            # torch sums in float64 here; (acc·s_x)·s_w equals its acc·(s_x·s_w) (acc·s_x is exact:
            # < 2^27 times 24 bits). Not acc·(s_x·s_w) itself: onnxruntime 1.32 fuses that pattern
            # into MatMulIntegerToFloat, which refuses float64.
            acc64 = self.node("Cast", [acc], hint + ".acc64", to=TensorProto.DOUBLE)
            sx64 = self.node("Cast", [sx], hint + ".act_scale64", to=TensorProto.DOUBLE)
            sw64 = self.initializer(hint + ".weight_scale", sw.astype(np.float32).astype(np.float64).reshape(shape))
            y = self.node("Cast", [self.node("Mul", [self.node("Mul", [acc64, sx64], hint + ".acc_sx"), sw64],
                                             hint + ".rescaled64")], hint + ".rescaled", to=TensorProto.FLOAT)
        if op.bias is not None:
            bias = self.param_array(op.bias, op).astype(np.float32).reshape(shape)  # type: ignore[union-attr]
            y = self.node("Add", [y, self.initializer(hint + ".bias", bias)], hint + ".biased")
        bn = op.bn_operands()
        if bn is None:
            return y
        # Not folded: the batch norm runs as torch's eval batch_norm does, y·a + b with
        # a = γ·(1/√(σ²+ε)) and b = β − μ·a in float32, so that the next layer quantises the
        # same activations (a fold rounds differently and can move round(x/s_x) by one step).
        mean, var, gamma, beta = (self.param_array(v, op).astype(np.float32) for v in bn)  # type: ignore[union-attr]
        invstd = np.float32(1) / np.sqrt(var + np.float32(op.eps.value.data))  # type: ignore[union-attr]
        a = (invstd * gamma).astype(np.float32)
        b = (beta - mean * a).astype(np.float32)
        y = self.node("Mul", [y, self.initializer(hint + ".bn_scale", a.reshape(shape))], hint + ".bn_scaled")
        return self.node("Add", [y, self.initializer(hint + ".bn_shift", b.reshape(shape))], hint + ".bn")

    def epilogue(self, op: kern.Conv2dOp | kern.LinearOp, y: str, hint: str) -> None:
        if op.residual is not None:
            y = self.node("Add", [y, self[op.residual]], hint + ".residual")
        activation = op.activation.data
        if activation != "none":
            y = BY_NAME[activation].onnx(self, y, f"{hint}.{activation}")
        self.names[op.output] = y

    def reshape_target(self, out: SSAValue, keep: int = 0) -> str:
        """The `Reshape` shape of a result type: 0 (copy the input's dim) for a dynamic dim among
        the first `keep`, -1 for one other dynamic dim."""
        dims = _dims(out)
        target = [d if d is not None else (0 if i < keep else -1) for i, d in enumerate(dims)]
        if target.count(-1) > 1:
            raise TdslError(f"the ONNX backend cannot reshape to {out.type}: several dynamic dims",
                            loc_of(out.owner) if isinstance(out.owner, Operation) else None)
        return self.constant(np.array(target, dtype=np.int64), "shape")

    @emit.register
    def _(self, op: t.ActivationOp) -> None:
        row = ACTIVATIONS.get(type(op))
        if row is None:
            raise self.unsupported(op)
        self.names[op.output] = row.onnx(self, self[op.input], row.name)

    @emit.register
    def _(self, op: t.SoftmaxOp) -> None:
        self.names[op.output] = self.node("Softmax", [self[op.input]], "softmax", axis=op.dim.value.data)

    @emit.register
    def _(self, op: t.DropoutOp) -> None:
        self.names[op.output] = self[op.input]

    def binary(self, op: t.BinaryOp | t.MatmulOp, op_type: str) -> None:
        self.names[op.output] = self.node(op_type, [self[op.lhs], self[op.rhs]], op_type.lower())

    @emit.register
    def _(self, op: t.BinaryOp) -> None:
        self.binary(op, BINARY[type(op)].onnx)

    @emit.register
    def _(self, op: t.MatmulOp) -> None:
        if op.rhs in self.params and self.store.array(self.params[op.rhs], op).dtype == np.int8:
            raise TdslError("the ONNX backend supports int8 weights on conv2d and linear only", loc_of(op))
        self.binary(op, "MatMul")

    @emit.register
    def _(self, op: t.BatchNormOp) -> None:
        operands = [self[v] for v in (op.input, op.weight, op.bias, op.mean, op.var)]
        self.names[op.output] = self.node("BatchNormalization", operands, "batch_norm", epsilon=op.eps.value.data)

    def pool(self, op: t.Pool2dOp, op_type: str, **attrs) -> None:
        padding = _ints(op.padding)
        self.names[op.output] = self.node(op_type, [self[op.input]], op_type.lower(), kernel_shape=_ints(op.kernel),
                                          strides=_ints(op.stride), pads=padding + padding, **attrs)

    @emit.register
    def _(self, op: t.MaxPool2dOp) -> None:
        self.pool(op, "MaxPool")

    @emit.register
    def _(self, op: t.AvgPool2dOp) -> None:
        self.pool(op, "AveragePool", count_include_pad=1)

    @emit.register
    def _(self, op: t.AdaptiveAvgPool2dOp) -> None:
        size = _ints(op.output_size)
        if size == [1, 1]:
            self.names[op.output] = self.node("GlobalAveragePool", [self[op.input]], "global_avg_pool")
            return
        spatial = _dims(op.input)[2:]
        if any(d is None or d % s for d, s in zip(spatial, size)):
            raise TdslError(f"the ONNX backend supports adaptive_avg_pool2d to {size} only on static input sizes "
                            f"divisible by it, not {spatial}", loc_of(op))
        kernel = [int(d) // s for d, s in zip(spatial, size)]  # type: ignore[operator]
        self.names[op.output] = self.node("AveragePool", [self[op.input]], "adaptive_avg_pool",
                                          kernel_shape=kernel, strides=kernel)

    @emit.register
    def _(self, op: t.FlattenOp) -> None:
        rank = len(_dims(op.input))
        start = op.start_dim.value.data % max(rank, 1)
        self.names[op.output] = self.node("Reshape", [self[op.input], self.reshape_target(op.output, keep=start)],
                                          "flatten")

    @emit.register
    def _(self, op: t.ReshapeOp) -> None:
        shape = _ints(op.shape)
        dims = _dims(op.output)
        if -1 not in shape and dims.count(None) == 1:
            shape[dims.index(None)] = -1
        self.names[op.output] = self.node("Reshape", [self[op.input], self.constant(np.array(shape, np.int64), "shape")],
                                          "reshape")

    @emit.register
    def _(self, op: t.UnsqueezeOp) -> None:
        axis = op.axis(len(_dims(op.input)))
        self.names[op.output] = self.node("Unsqueeze", [self[op.input], self.constant(np.array([axis], np.int64),
                                                                                       "axes")], "unsqueeze")

    @emit.register
    def _(self, op: t.SqueezeOp) -> None:
        axis = op.axis(len(_dims(op.input)))
        self.names[op.output] = self.node("Squeeze", [self[op.input], self.constant(np.array([axis], np.int64),
                                                                                     "axes")], "squeeze")



for _op in COMPOSITES:  # one generic handler: the row builds the nodes
    _GraphEmitter.__dict__["emit"].register(_op)(_GraphEmitter.composite)
_GraphEmitter.__dict__["emit"].register(kern.CONVS["conv_transpose2d"])(_GraphEmitter.conv_transpose2d)

_NEEDS_FUSE = "the ONNX export reads the kernel level: lower conv2d and linear to kern ops first (`fuse`)"
_NEEDS_FREEZE = "the ONNX export holds frozen weights: freeze or quantize the model first"

UNSUPPORTED: dict[type[Operation], str] = {
    t.CallOp: "the ONNX export reads one flat forward: inline sub-layers first (`inline`)",
    t.ConstantOp: "literal tensors in a forward are not exported",
    **{cls: _NEEDS_FUSE for cls in weighted_ops("float", "trits", "packed")},
    t.TernaryMatmulOp: "a ternary matmul on a computed weight has no ONNX form; use linear with a ternary weight",
    tern.QuantizeOp: _NEEDS_FREEZE,
    tern.DequantizeOp: _NEEDS_FREEZE,
}
"""Op classes this backend refuses, with the reason users read."""
