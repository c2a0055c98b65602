"""Lower the kernel-level IR (docs/KERNEL_IR.md) to a `Plan`: ordered steps, weights, buffers.

Input: a module after `...,pack{format=2bit},inline,fuse` (or an fp32 / fp16 / int8 program
after `inline,fuse`) and its parameter store, numpy arrays keyed by the frozen state-dict
names (`layer1.0.conv1.weight_packed`, `conv1.weight` float16, `fc.weight` int8 plus
`fc.weight_scale`). `build_plan` walks the entry forward once, one handler per op class
(`_HANDLERS`), and materialises every weight the way its kernel wants it:

| op | step kind | weights prepared at build time |
|---|---|---|
| `kern.conv2d` / `kern.linear`, ternary | `conv2d_ternary` / `linear_ternary` | packed "2bit" trits (base3 repacked), bn folded into scale' and bias' (`fold_batchnorm`) |
| the same, fp32 / fp16 | `conv2d_float` / `linear_float` | float32 weight with the bn folded in, bias' |
| the same, int8 | `conv2d_int8` / `linear_int8` | int8 values as float (exact), per-channel scale with the bn folded in, bias' |
| `tdsl.ternary_matmul` | `linear_ternary` | round-and-clamp of the weight, packed, scale 1 |
| pools, softmax, unary, binary, batch_norm, matmul | one kind each | bn as a per-channel affine |
| flatten, reshape, squeeze, unsqueeze, dropout | `view` | none: the output is the input's buffer |

An op without a handler is a `TdslError` naming the op and its DSL location.

Shapes are resolved when the plan first sees an input shape (`Plan.schedule`): every step
has a shape rule, the result is checked against the IR's static dims, and buffers are
assigned by liveness: a value's buffer returns to a free list after its last reader, and a
new value takes the smallest free buffer that fits (or grows one), so peak activation memory
stays near the two or three activations a residual block keeps live. A schedule is cached
per input shape (batch is the only dynamic dim of the zoo models).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from xdsl.dialects.builtin import ModuleOp, TensorType, UnrankedTensorType
from xdsl.ir import Operation, SSAValue

from tdsl.dialects import kern
from tdsl.dialects import tdsl as t
from tdsl.dialects import tern
from tdsl.dialects.locations import loc_of
from tdsl.dialects.tdsl import dims_of, entry_layer
from tdsl.errors import SourceLoc, TdslError
from tdsl.runtime.conv_int8 import workspace_sizes as conv_int8_workspace
from tdsl.runtime.gemm import fold_batchnorm
from tdsl.runtime.packing import bytes_per_row, matrix_shape, pack, unpack
from tdsl.runtime.reference import conv_out_size

PACKED_SUFFIX = "_packed"
"""Store key of a packed weight: the IR keeps the latent weight's name (docs/KERNEL_IR.md)."""
SCALE_SUFFIX = "_scale"
"""Store key of a frozen int8 weight's per-channel scale (docs/TERNARY.md)."""

_NUMPY_DTYPES = {"f16": np.float16, "f32": np.float32, "f64": np.float64, "i2": np.int8, "i8": np.int8,
                 "i32": np.int32, "i64": np.int64, "i1": np.bool_}
_ACTIVATIONS = {"none": None, "relu": "relu", "relu6": "relu6"}

Shape = tuple[int, ...]


@dataclass
class Step:
    """One kernel call: `outputs = kind(inputs, weights, attrs)`; values are indices."""

    kind: str
    inputs: tuple[int, ...]
    output: int
    attrs: dict[str, Any]
    weights: dict[str, np.ndarray]
    op_name: str
    loc: SourceLoc | None

    @property
    def is_view(self) -> bool:
        return self.kind == "view"

    def error(self, message: str) -> TdslError:
        return TdslError(f"{self.op_name}: {message}", self.loc)


@dataclass
class Schedule:
    """A plan resolved for one input shape: shapes, buffer of every value, memory."""

    shapes: list[Shape | None]
    buffer_of: list[int | None]
    """Value -> index into `buffer_bytes` (None: a constant)."""
    buffer_bytes: list[int]
    workspace: dict[str, int]
    """Scratch float32 elements per name shared by all steps: im2col columns and GEMM
    result (act_quant="float"), or the NHWC input, int8 rows and scales of `conv_int8`."""

    @property
    def peak_activation_bytes(self) -> int:
        return sum(self.buffer_bytes)

    @property
    def workspace_bytes(self) -> int:
        return 4 * sum(self.workspace.values())


@dataclass
class Plan:
    """The lowered program: steps in execution order over numbered values."""

    steps: list[Step]
    inputs: list[int]
    outputs: list[int]
    output_names: list[str] | None
    value_types: list[Any]
    """IR type of every value (for static-dim checks and the output dtype)."""
    consts: dict[int, np.ndarray]
    """Values that are weights or literals, not activations."""
    entry: str
    act_quant: str
    compile_seconds: float = 0.0
    """Seconds Numba spent compiling during the first call (0 when every kernel came from
    Numba's on-disk cache); `first_call_seconds` is that call's whole wall time."""
    first_call_seconds: float | None = None
    _schedules: dict[tuple[Shape, ...], Schedule] = field(default_factory=dict, repr=False)

    @property
    def weight_bytes(self) -> int:
        """Bytes of every weight array the steps hold (packed trits, folded scales, ...)."""
        seen: dict[int, int] = {}
        for step in self.steps:
            for a in step.weights.values():
                seen[id(a)] = a.nbytes
        for a in self.consts.values():
            seen[id(a)] = a.nbytes
        return sum(seen.values())

    def describe(self) -> str:
        """One line per step: kind, value numbers, attributes (for reading a plan)."""
        lines = [f"plan @{self.entry}: inputs {self.inputs} -> outputs {self.outputs}"]
        for i, s in enumerate(self.steps):
            attrs = ", ".join(f"{k}={v}" for k, v in s.attrs.items())
            wts = ", ".join(f"{k}:{w.dtype}{list(w.shape)}" for k, w in s.weights.items())
            lines.append(f"  {i:3d} %{s.output} = {s.kind}({', '.join(f'%{v}' for v in s.inputs)})"
                         f" {{{attrs}}} [{wts}]  # {s.op_name} @ {s.loc}")
        return "\n".join(lines)

    def schedule(self, input_shapes: tuple[Shape, ...]) -> Schedule:
        """Shapes and buffers for these input shapes (cached)."""
        cached = self._schedules.get(input_shapes)
        if cached is None:
            cached = self._schedules[input_shapes] = _resolve(self, input_shapes)
        return cached


# --------------------------------------------------------------------------- build


class _Builder:
    """Walks the entry forward; one method per op class (`_HANDLERS`)."""

    def __init__(self, layer: t.LayerOp, arrays: Mapping[str, np.ndarray], act_quant: str):
        self.layer = layer
        self.arrays = arrays
        self.act_quant = act_quant
        self.ids: dict[SSAValue, int] = {}
        self.types: list[Any] = []
        self.consts: dict[int, np.ndarray] = {}
        self.steps: list[Step] = []
        self.param_names: dict[int, str] = {}

    def value(self, v: SSAValue) -> int:
        if v not in self.ids:
            self.ids[v] = len(self.types)
            self.types.append(v.type)
        return self.ids[v]

    def const(self, v: SSAValue | None, op: Operation, what: str) -> np.ndarray | None:
        if v is None:
            return None
        i = self.value(v)
        if i not in self.consts:
            raise TdslError(f"{op.name}: the {what} must be a parameter (tdsl.get_param), "
                            "not a computed value", loc_of(op))
        return self.consts[i]

    def lookup(self, key: str, op: Operation) -> np.ndarray:
        if key not in self.arrays:
            raise TdslError(f"{op.name}: the parameter store has no '{key}'", loc_of(op))
        return np.asarray(self.arrays[key])

    def emit(self, op: Operation, kind: str, inputs: list[SSAValue], attrs: dict[str, Any],
             weights: dict[str, np.ndarray]) -> None:
        step = Step(kind, tuple(self.value(v) for v in inputs), self.value(op.results[0]), attrs,
                    {k: np.ascontiguousarray(w) for k, w in weights.items()}, op.name, loc_of(op))
        self.steps.append(step)

    # -- parameters and literals

    def get_param(self, op: t.GetParamOp) -> None:
        name = op.param.root_reference.data
        i = self.value(op.output)
        self.consts[i] = self.lookup(name, op)
        self.param_names[i] = name

    def get_packed(self, op: tern.GetPackedOp) -> None:
        name = op.param.root_reference.data
        i = self.value(op.output)
        self.consts[i] = self.lookup(name + PACKED_SUFFIX, op)
        self.param_names[i] = name

    def constant(self, op: t.ConstantOp) -> None:
        element = str(op.value.get_element_type())
        values = list(op.value.get_values())
        if element == "i2":
            values = [(int(v) + 2) % 4 - 2 for v in values]
        dtype = _NUMPY_DTYPES.get(element)
        if dtype is None:
            raise TdslError(f"tdsl.constant: no numpy dtype for element type {element}", loc_of(op))
        self.consts[self.value(op.output)] = np.array(values, dtype=dtype).reshape(op.value.get_shape())

    # -- fused kernels

    def _weight_name(self, op: Operation, v: SSAValue) -> str:
        return self.param_names.get(self.value(v), "?")

    def _epilogue(self, op: kern.Conv2dOp | kern.LinearOp, out_channels: int, scale: np.ndarray | float,
                  ) -> tuple[np.ndarray, np.ndarray]:
        """(scale' [O], bias' [O]) float32: weight scale, bias and bn folded together."""
        bias = self.const(op.bias, op, "bias")
        bn = op.bn_operands()
        if bn is None:
            s = np.broadcast_to(np.asarray(scale, np.float32), (out_channels,)).astype(np.float32)
            b = np.zeros(out_channels, np.float32) if bias is None else bias.astype(np.float32)
            return s, b
        mean, var, gamma, beta = (self.const(v, op, n) for v, n in zip(bn, kern.BN_OPERANDS))
        s, b = fold_batchnorm(np.broadcast_to(np.asarray(scale, np.float64), (out_channels,)), bias,
                              gamma, beta, mean, var, op.eps.value.data)
        return s, b

    def _kernel_weights(self, op: kern.Conv2dOp | kern.LinearOp) -> tuple[str, dict[str, np.ndarray]]:
        """(family, weights) for a fused conv/linear: family is ternary, float or int8."""
        precision = op.precision.data
        w = self.const(op.weight, op, "weight")
        if precision == "ternary":
            shape = tuple(op.weight_dims())
            rows, k = matrix_shape(shape)
            if op.is_packed:
                fmt = op.format.data
                if fmt != "2bit":  # the kernels read "2bit"; base3 decodes 3x slower (docs/PACKED_FORMAT.md)
                    w = pack(unpack(w, (rows, k), fmt), "2bit")
                packed = w.reshape(rows, bytes_per_row(k))
            else:  # trits stored as int8
                packed = pack(np.asarray(w, np.int8).reshape(rows, k), "2bit")
            scale = self.const(op.scale, op, "scale")
            s, b = self._epilogue(op, rows, scale)
            return "ternary", {"packed": packed.astype(np.uint8), "scale": s, "bias": b}
        out = w.shape[0]
        if precision == "int8":
            if w.dtype == np.int8:
                q = w.astype(np.float32)
                wscale = self.lookup(self._weight_name(op, op.weight) + SCALE_SUFFIX, op).astype(np.float32)
            else:  # a float weight of a program that was not frozen: quantise as freeze does
                rows = w.astype(np.float32).reshape(out, -1)
                amax = np.abs(rows).max(axis=1)
                wscale = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
                q = np.clip(np.round(rows / wscale[:, None]), -127, 127).reshape(w.shape).astype(np.float32)
            s, b = self._epilogue(op, out, wscale)
            return "int8", {"weight": q, "scale": s, "bias": b}
        s, b = self._epilogue(op, out, 1.0)
        folded = (w.astype(np.float64) * s.astype(np.float64).reshape((-1,) + (1,) * (w.ndim - 1)))
        return "float", {"weight": folded.astype(np.float32), "bias": b}

    def conv2d(self, op: kern.Conv2dOp) -> None:
        family, weights = self._kernel_weights(op)
        dims = op.weight_dims()
        attrs = {"kernel": (dims[2], dims[3]), "stride": _pair(op.stride), "padding": _pair(op.padding),
                 "dilation": _pair(op.dilation), "groups": op.groups.value.data,
                 "out_channels": dims[0], "activation": _ACTIVATIONS[op.activation.data],
                 "residual": op.residual is not None}
        if family == "float" and attrs["groups"] > 1:
            attrs["depthwise"] = dims[1] == 1 and attrs["groups"] == dims[0]
        inputs = [op.input] + ([op.residual] if op.residual is not None else [])
        self.emit(op, f"conv2d_{family}", inputs, attrs, weights)

    def linear(self, op: kern.LinearOp) -> None:
        family, weights = self._kernel_weights(op)
        if family != "ternary":
            weights["weight_t"] = np.ascontiguousarray(weights.pop("weight").T)
        attrs = {"out_features": op.weight_dims()[0], "activation": _ACTIVATIONS[op.activation.data],
                 "residual": op.residual is not None}
        inputs = [op.input] + ([op.residual] if op.residual is not None else [])
        self.emit(op, f"linear_{family}", inputs, attrs, weights)

    def ternary_matmul(self, op: t.TernaryMatmulOp) -> None:
        w = self.const(op.weight, op, "weight")
        trits = np.clip(np.round(w.astype(np.float32)), -1, 1).astype(np.int8)
        n = trits.shape[0]
        self.emit(op, "linear_ternary", [op.input],
                  {"out_features": n, "activation": None, "residual": False},
                  {"packed": pack(trits, "2bit"), "scale": np.ones(n, np.float32),
                   "bias": np.zeros(n, np.float32)})

    def matmul(self, op: t.MatmulOp) -> None:
        inputs, weights = [op.lhs], {}
        rhs = self.value(op.rhs)
        if rhs in self.consts:
            weights["rhs"] = self.consts[rhs].astype(np.float32)
        else:
            inputs.append(op.rhs)
        self.emit(op, "matmul", inputs, {}, weights)

    # -- everything else

    def batch_norm(self, op: t.BatchNormOp) -> None:
        mean, var, gamma, beta = (self.const(getattr(op, n), op, n) for n in ("mean", "var", "weight", "bias"))
        scale, shift = fold_batchnorm(1.0, None, gamma, beta, mean, var, op.eps.value.data)
        self.emit(op, "affine", [op.input], {}, {"scale": scale, "shift": shift})

    def pool(self, op: t.MaxPool2dOp | t.AvgPool2dOp) -> None:
        kind = "max_pool2d" if isinstance(op, t.MaxPool2dOp) else "avg_pool2d"
        self.emit(op, kind, [op.input], {"kernel": _pair(op.kernel), "stride": _pair(op.stride),
                                         "padding": _pair(op.padding)}, {})

    def adaptive_avg_pool2d(self, op: t.AdaptiveAvgPool2dOp) -> None:
        self.emit(op, "adaptive_avg_pool2d", [op.input], {"output_size": _pair(op.output_size)}, {})

    def unary(self, op: t.UnaryOp) -> None:
        self.emit(op, "unary", [op.input], {"fn": op.name.removeprefix("tdsl.")}, {})

    def softmax(self, op: t.SoftmaxOp) -> None:
        self.emit(op, "softmax", [op.input], {"dim": op.dim.value.data}, {})

    def binary(self, op: t.BinaryOp) -> None:
        inputs, weights, order = [], {}, []
        for name, v in (("lhs", op.lhs), ("rhs", op.rhs)):
            i = self.value(v)
            if i in self.consts:
                weights[name] = self.consts[i].astype(np.float32)
                order.append(name)
            else:
                inputs.append(v)
                order.append("in")
        self.emit(op, "binary", inputs, {"fn": op.name.removeprefix("tdsl."), "order": tuple(order)}, weights)

    def view(self, op: Operation) -> None:
        rule = _VIEW_RULES[type(op)](op)
        source = self.value(op.operands[0])
        if source in self.consts:  # a view of a weight is a weight
            c = self.consts[source]
            self.consts[self.value(op.results[0])] = c.reshape(rule(tuple(c.shape)))
            return
        self.emit(op, "view", [op.operands[0]], {"what": op.name.removeprefix("tdsl."), "rule": rule}, {})


def _pair(attr: Any) -> tuple[int, int]:
    a, b = (int(v) for v in attr.get_values())
    return a, b


def _flatten_rule(op: t.FlattenOp) -> Callable[[Shape], Shape]:
    s0, e0 = op.start_dim.value.data, op.end_dim.value.data

    def rule(x: Shape) -> Shape:
        s, e = s0 % len(x) if x else 0, e0 % len(x) if x else 0
        return (*x[:s], math.prod(x[s:e + 1]), *x[e + 1:])
    return rule


def _reshape_rule(op: t.ReshapeOp) -> Callable[[Shape], Shape]:
    shape = [int(d) for d in op.shape.get_values()]
    result = dims_of(op.output.type)
    if result is not None and -1 not in shape and result.count(None) == 1 and len(result) == len(shape):
        shape[result.index(None)] = -1  # the IR's dynamic dim (the batch) stays dynamic

    def rule(x: Shape) -> Shape:
        known = math.prod(d for d in shape if d != -1)
        total = math.prod(x)
        return tuple(total // known if d == -1 else d for d in shape)
    return rule


def _unsqueeze_rule(op: t.UnsqueezeOp) -> Callable[[Shape], Shape]:
    d = op.dim.value.data
    return lambda x: (*x[:d % (len(x) + 1)], 1, *x[d % (len(x) + 1):])


def _squeeze_rule(op: t.SqueezeOp) -> Callable[[Shape], Shape]:
    d = op.dim.value.data
    return lambda x: (*x[:d % len(x)], *x[d % len(x) + 1:])


_VIEW_RULES: dict[type, Callable[[Any], Callable[[Shape], Shape]]] = {
    t.FlattenOp: _flatten_rule,
    t.ReshapeOp: _reshape_rule,
    t.UnsqueezeOp: _unsqueeze_rule,
    t.SqueezeOp: _squeeze_rule,
    t.DropoutOp: lambda op: (lambda x: x),  # identity at inference
}

_HANDLERS: dict[type, Callable[[_Builder, Any], None]] = {
    t.GetParamOp: _Builder.get_param,
    tern.GetPackedOp: _Builder.get_packed,
    t.ConstantOp: _Builder.constant,
    kern.Conv2dOp: _Builder.conv2d,
    kern.LinearOp: _Builder.linear,
    t.TernaryMatmulOp: _Builder.ternary_matmul,
    t.MatmulOp: _Builder.matmul,
    t.BatchNormOp: _Builder.batch_norm,
    t.MaxPool2dOp: _Builder.pool,
    t.AvgPool2dOp: _Builder.pool,
    t.AdaptiveAvgPool2dOp: _Builder.adaptive_avg_pool2d,
    t.ReluOp: _Builder.unary,
    t.Relu6Op: _Builder.unary,
    t.GeluOp: _Builder.unary,
    t.SigmoidOp: _Builder.unary,
    t.TanhOp: _Builder.unary,
    t.SoftmaxOp: _Builder.softmax,
    t.AddOp: _Builder.binary,
    t.SubOp: _Builder.binary,
    t.MulOp: _Builder.binary,
    t.DivOp: _Builder.binary,
    **{cls: _Builder.view for cls in _VIEW_RULES},
}
"""One row per op class the plan lowers; any other op is an error at its location."""


def kernel_module(module: ModuleOp) -> ModuleOp:
    """A copy of `module` lowered to the kernel level: `inline` (when the entry calls
    sub-layers) then `fuse`. Both passes leave an already lowered module unchanged."""
    from tdsl.dialects.context import make_context
    from tdsl.passes.fuse import FusePass
    from tdsl.passes.inline import InlinePass

    module = module.clone()
    ctx = make_context()
    if any(isinstance(op, t.CallOp) for op in entry_layer(module).forward.body.block.ops):
        InlinePass().apply(ctx, module)
    FusePass().apply(ctx, module)
    return module


def build_plan(module: ModuleOp, arrays: Mapping[str, np.ndarray], *, act_quant: str = "int8") -> Plan:
    """The plan of `module`'s entry forward (kernel level: see `kernel_module`) with its
    weights taken from `arrays` (numpy, keyed by frozen state-dict names)."""
    if act_quant not in ("int8", "float"):
        raise TdslError(f"unknown act_quant {act_quant!r}: valid are 'int8', 'float'")
    layer = entry_layer(module)
    b = _Builder(layer, arrays, act_quant)
    forward = layer.forward
    inputs = [b.value(a) for a in forward.args]
    for op in forward.body.block.ops:
        if isinstance(op, t.ReturnOp):
            continue
        handler = _HANDLERS.get(type(op))
        if handler is None:
            raise TdslError(f"the Numba backend has no kernel for '{op.name}'", loc_of(op))
        handler(b, op)
    ret = forward.return_op
    names = [n.data for n in ret.names.data] if ret.names is not None else None
    outputs = [b.value(v) for v in ret.values]
    # Only constants a step reads or the forward returns stay: the store's arrays that were
    # folded into step weights (bn statistics, packed originals, fp16 weights) are dropped.
    used = {v for step in b.steps for v in step.inputs} | set(outputs)
    consts = {v: c for v, c in b.consts.items() if v in used}
    return Plan(b.steps, inputs, outputs, names, b.types, consts, layer.layer.data, act_quant)


# --------------------------------------------------------------------------- shapes


def _conv_shape(step: Step, x: Shape) -> Shape:
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (step.attrs[k] for k in ("kernel", "stride", "padding", "dilation"))
    if len(x) != 4:
        raise step.error(f"expected an input [N, C, H, W], got shape {x}")
    return (x[0], step.attrs["out_channels"], conv_out_size(x[2], kh, sh, ph, dh), conv_out_size(x[3], kw, sw, pw, dw))


def _pool_shape(step: Step, x: Shape) -> Shape:
    (kh, kw), (sh, sw), (ph, pw) = step.attrs["kernel"], step.attrs["stride"], step.attrs["padding"]
    return (x[0], x[1], conv_out_size(x[2], kh, sh, ph, 1), conv_out_size(x[3], kw, sw, pw, 1))


def _out_shape(step: Step, shapes: list[Shape]) -> Shape:
    k = step.kind
    if k.startswith("conv2d_"):
        return _conv_shape(step, shapes[0])
    if k.startswith("linear_"):
        return (*shapes[0][:-1], step.attrs["out_features"])
    if k in ("max_pool2d", "avg_pool2d"):
        return _pool_shape(step, shapes[0])
    if k == "adaptive_avg_pool2d":
        return (*shapes[0][:2], *step.attrs["output_size"])
    if k == "view":
        return step.attrs["rule"](shapes[0])
    if k == "matmul":
        rhs = shapes[1] if len(shapes) > 1 else step.weights["rhs"].shape
        return np.broadcast_shapes(shapes[0][:-2], rhs[:-2]) + (shapes[0][-2], rhs[-1])
    if k == "binary":
        operands = iter(shapes)
        full = [tuple(step.weights[o].shape) if o != "in" else next(operands) for o in step.attrs["order"]]
        return np.broadcast_shapes(*full)
    return shapes[0]  # elementwise: unary, softmax, affine


def _resolve(plan: Plan, input_shapes: tuple[Shape, ...]) -> Schedule:
    n = len(plan.value_types)
    shapes: list[Shape | None] = [None] * n
    for i, c in plan.consts.items():
        shapes[i] = tuple(c.shape)
    for v, s in zip(plan.inputs, input_shapes):
        shapes[v] = s
        _check_static(plan, v, s, None)
    workspace = {"cols": 0, "gemm": 0}
    for step in plan.steps:
        ins = [shapes[v] for v in step.inputs]
        try:
            out = tuple(int(d) for d in _out_shape(step, ins))  # type: ignore[arg-type]
        except (ValueError, IndexError, ZeroDivisionError) as e:
            raise step.error(f"cannot compute the result shape for inputs {ins}: {e}") from None
        if any(d < 1 for d in out):
            raise step.error(f"the result shape {out} is empty for inputs {ins}")
        shapes[step.output] = out
        _check_static(plan, step.output, out, step)
        if step.kind == "conv2d_ternary" and not _is_depthwise(step, ins[0]) and plan.act_quant == "int8":
            (kh, kw), g = step.attrs["kernel"], step.attrs["groups"]
            N, C, H, W = ins[0]
            for name, nbytes in conv_int8_workspace(N, C, H, W, C // g, kh, kw, out[2], out[3]).items():
                workspace[name] = max(workspace.get(name, 0), -(-nbytes // 4))
        elif step.kind == "conv2d_ternary" and not _is_depthwise(step, ins[0]):
            (kh, kw), g = step.attrs["kernel"], step.attrs["groups"]
            positions = out[0] * out[2] * out[3]
            workspace["cols"] = max(workspace["cols"], positions * ins[0][1] // g * kh * kw)
            workspace["gemm"] = max(workspace["gemm"], positions * out[1] // g)
    buffer_of, sizes = _assign_buffers(plan, shapes)
    return Schedule(shapes, buffer_of, sizes, workspace)


def _is_depthwise(step: Step, x: Shape) -> bool:
    g = step.attrs["groups"]
    return g > 1 and g == x[1] == step.attrs["out_channels"]


def _check_static(plan: Plan, v: int, shape: Shape, step: Step | None) -> None:
    ty = plan.value_types[v]
    dims = dims_of(ty) if isinstance(ty, TensorType) else None
    if isinstance(ty, UnrankedTensorType) or dims is None:
        return
    ok = len(dims) == len(shape) and all(d is None or d == s for d, s in zip(dims, shape))
    if ok:
        return
    want = "x".join("?" if d is None else str(d) for d in dims)
    if step is None:
        raise TdslError(f"input {plan.inputs.index(v)} of @{plan.entry} has shape {shape}, "
                        f"the model expects {want}")
    raise step.error(f"result shape {shape} differs from the IR's {want}")


def dtype_of(ty: Any) -> np.dtype:
    """The numpy dtype a value is computed in: float32 for every float type, else its own."""
    element = str(ty.get_element_type()) if isinstance(ty, TensorType | UnrankedTensorType) else "f32"
    if element in ("f16", "f32", "f64", "bf16"):
        return np.dtype(np.float32)
    return np.dtype(_NUMPY_DTYPES.get(element, np.float32))


def _assign_buffers(plan: Plan, shapes: list[Shape | None]) -> tuple[list[int | None], list[int]]:
    """Liveness-based reuse. A view shares its input's storage; a storage is free after the
    last step that reads any of its values; graph outputs live to the end."""
    n = len(plan.value_types)
    storage = list(range(n))
    for step in plan.steps:
        if step.is_view:
            storage[step.output] = storage[step.inputs[0]]
    last = [-1] * n
    for k, step in enumerate(plan.steps):
        for v in step.inputs:
            last[storage[v]] = max(last[storage[v]], k)
    for v in plan.outputs:
        last[storage[v]] = len(plan.steps)
    need = [0] * n
    for v in range(n):
        if v not in plan.consts and shapes[v] is not None:
            need[storage[v]] = max(need[storage[v]], math.prod(shapes[v]) * dtype_of(plan.value_types[v]).itemsize)
    sizes: list[int] = []
    free: list[int] = []
    buf_of_storage: dict[int, int] = {}

    def take(nbytes: int) -> int:
        fitting = [b for b in free if sizes[b] >= nbytes]
        if fitting:
            b = min(fitting, key=lambda b: sizes[b])
        elif free:
            b = max(free, key=lambda b: sizes[b])
            sizes[b] = nbytes
        else:
            sizes.append(nbytes)
            return len(sizes) - 1
        free.remove(b)
        return b

    for v in plan.inputs:
        buf_of_storage[v] = take(need[v])
    for k, step in enumerate(plan.steps):
        s = storage[step.output]
        if s not in buf_of_storage:
            buf_of_storage[s] = take(need[s])
        for v in {storage[v] for v in step.inputs} | {s}:
            if last[v] == k and v in buf_of_storage and v not in plan.consts:
                free.append(buf_of_storage[v])
        if last[s] < k:  # a result nobody reads
            free.append(buf_of_storage[s])
    buffer_of = [None if v in plan.consts else buf_of_storage.get(storage[v]) for v in range(n)]
    return buffer_of, sizes
