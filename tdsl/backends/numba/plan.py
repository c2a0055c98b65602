"""Lower the kernel-level IR (docs/KERNEL_IR.md) to a `Plan`: ordered steps, weights, buffers.

Input: a module at the kernel level (`tdsl.lowering.kernel_level`: after `inline,fuse`, with
ternary weights packed) and its parameter store, numpy arrays keyed by the frozen state-dict
names (`layer1.0.conv1.weight_packed`, `conv1.weight` float16, `fc.weight` int8 plus
`fc.weight_scale`; `tdsl.dialects.storage`). `build_plan` walks the entry forward once, one
handler per op class (`HANDLERS`), and materialises every weight the way its kernel wants it.
Each step names its runtime kernel by a `Kernel` member (the runners are keyed by it):

| op | step kind | weights prepared at build time |
|---|---|---|
| `kern.conv2d` / `kern.linear`, ternary | `conv2d_ternary` / `linear_ternary` | packed "2bit" trits (base3 repacked), bn folded into scale' and bias' (`fold_batchnorm`) |
| the same, fp32 / fp16 | `conv2d_float` / `linear_float` | float32 weight with the bn folded in, bias' |
| the same, int8 | `conv2d_int8` / `linear_int8` | int8 values as float (exact), per-channel scale with the bn folded in, bias' |
| `kern.conv_transpose2d`, ternary / fp32 / fp16 | `conv_transpose2d` | float32 weight (trits times scale', or the float weight, bn folded in), its kernel flipped, bias'; run as `conv2d_float` over the input with zeros inserted and padded (`executor._conv_transpose`), act_quant does not apply |
| `tdsl.ternary_matmul` | `linear_ternary` | round-and-clamp of the weight, packed, scale 1 |
| pools, softmax, activations, binary, batch_norm, matmul | one kind each | bn as a per-channel affine |
| flatten, reshape, squeeze, unsqueeze, dropout | `view` | none: the output is the input's buffer |

An activation step carries its `tdsl.runtime.activations` code (from `tdsl.ops.elementwise`),
as do the fused kernels. An op without a handler is a `TdslError` naming the op and its DSL
location (with the reason, for the ops in `UNSUPPORTED`).

Shapes are resolved when the plan first sees an input shape (`Plan.schedule`): every step
runs its op's own shape rule (`shapes.concrete_result_shape`, the rule `shape-infer` runs),
the result is checked against the IR's static dims, and buffers are
assigned by liveness: a value's buffer returns to a free list after its last reader, and a
new value takes the smallest free buffer that fits (or grows one), so peak activation memory
stays near the two or three activations a residual block keeps live. A schedule is cached
per input shape (batch is the only dynamic dim of the zoo models).
"""  # noqa: E501 (one Markdown table row per line)
from __future__ import annotations

import enum
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
from tdsl.dialects.context import weighted_ops
from tdsl.dialects.locations import loc_of
from tdsl.dialects.shapes import ShapeInferenceError, concrete_result_shape, dims_of
from tdsl.dialects.storage import PACKED_SUFFIX, SCALE_SUFFIX
from tdsl.dialects.tdsl import entry_layer
from tdsl.errors import SourceLoc, TdslError
from tdsl.ops.composite import COMPOSITES
from tdsl.ops.elementwise import ACTIVATIONS, BINARY
from tdsl.quant.int8 import int8_weight
from tdsl.runtime import activations
from tdsl.runtime.conv_int8 import workspace_sizes as conv_int8_workspace
from tdsl.runtime.gemm import fold_batchnorm
from tdsl.runtime.packing import bytes_per_row, matrix_shape, pack, unpack
from tdsl.signature import forward_signature

ACT_QUANTS: tuple[str, ...] = ("int8", "float", "int8-nhwc")
"""Activations of the packed ternary layers: per-token int8 (NCHW float between layers), float,
or u8 NHWC between layers with per-tensor scales (`tdsl.backends.numba.nhwc`)."""
_NUMPY_DTYPES = {"f16": np.float16, "f32": np.float32, "f64": np.float64, "i2": np.int8, "i8": np.int8,
                 "i32": np.int32, "i64": np.int64, "i1": np.bool_}

Shape = tuple[int, ...]


class Kernel(str, enum.Enum):
    """The runtime kernel a step calls; `executor.CPU_RUNNERS` and `gpu.CUDA_RUNNERS` are keyed
    by it. (A `str` enum only so that `Plan.describe` and tests read the names.)"""

    CONV2D_TERNARY = "conv2d_ternary"
    CONV2D_FLOAT = "conv2d_float"
    CONV2D_INT8 = "conv2d_int8"
    CONV_TRANSPOSE2D = "conv_transpose2d"
    """A transposed convolution: a float conv2d over the input with zeros inserted (CPU only)."""
    LINEAR_TERNARY = "linear_ternary"
    LINEAR_FLOAT = "linear_float"
    LINEAR_INT8 = "linear_int8"
    MAX_POOL2D = "max_pool2d"
    AVG_POOL2D = "avg_pool2d"
    ADAPTIVE_AVG_POOL2D = "adaptive_avg_pool2d"
    ACTIVATION = "activation"
    SOFTMAX = "softmax"
    BINARY = "binary"
    AFFINE = "affine"
    MATMUL = "matmul"
    REFERENCE = "reference"
    """An op without a tuned kernel: its numpy reference (`tdsl.ops.composite`), on the CPU."""
    VIEW = "view"

    def __str__(self) -> str:
        return self.value


@dataclass
class Step:
    """One kernel call: `outputs = kind(inputs, weights, attrs)`; values are indices.

    `op` is the IR op the step runs (its shape rule gives the result shape) and `operands`
    the value of each of its operands by name, weights included."""

    kind: Kernel
    inputs: tuple[int, ...]
    output: int
    attrs: dict[str, Any]
    weights: dict[str, np.ndarray]
    op_name: str
    loc: SourceLoc | None
    op: Any = None
    operands: dict[str, int] = field(default_factory=dict)

    @property
    def is_view(self) -> bool:
        return self.kind is Kernel.VIEW

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
    const_shapes: dict[int, Shape] = field(default_factory=dict)
    """Shape of every constant value, the ones folded into step weights too (shape rules read them)."""
    compile_seconds: float = 0.0
    """Seconds Numba spent compiling during the first call (0 when every kernel came from
    Numba's on-disk cache); `first_call_seconds` is that call's whole wall time."""
    first_call_seconds: float | None = None
    signature: Any = None
    """The entry forward's declared inputs (`tdsl.signature`), checked at every call."""
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

    def emit(self, op: Operation, kind: Kernel, inputs: list[SSAValue], attrs: dict[str, Any],
             weights: dict[str, np.ndarray]) -> None:
        operands = {name: self.value(v) for name, v in op.named_operands()}
        step = Step(kind, tuple(self.value(v) for v in inputs), self.value(op.results[0]), attrs,
                    {k: np.ascontiguousarray(w) for k, w in weights.items()}, op.name, loc_of(op),
                    op, operands)
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
                q8, wscale = int8_weight(w)
                q = q8.astype(np.float32)
            s, b = self._epilogue(op, out, wscale)
            return "int8", {"weight": q, "scale": s, "bias": b}
        s, b = self._epilogue(op, out, 1.0)
        folded = (w.astype(np.float64) * s.astype(np.float64).reshape((-1,) + (1,) * (w.ndim - 1)))
        return "float", {"weight": folded.astype(np.float32), "bias": b}

    def conv2d(self, op: kern.Conv2dOp) -> None:
        family, weights = self._kernel_weights(op)
        dims = op.weight_dims()
        attrs = {"kernel": (dims[2], dims[3]), **op.geometry(), "out_channels": dims[0],
                 "activation": activations.code_of(op.activation.data),
                 "residual": op.residual is not None}
        if family == "float" and attrs["groups"] > 1:
            attrs["depthwise"] = dims[1] == 1 and attrs["groups"] == dims[0]
        inputs = [op.input] + ([op.residual] if op.residual is not None else [])
        self.emit(op, _CONV_KERNELS[family], inputs, attrs, weights)

    def conv_transpose2d(self, op: Any) -> None:
        """The direct conv that equals the transposed one over the input with stride - 1 zeros
        between pixels, padded by dilation (k - 1) - padding (+ output_padding at the end): stride
        1, the same dilation and groups, the kernel flipped. Its attrs are that conv's (what
        `conv2d_float` reads) plus `upsample`, `crop` and `output_padding` for the input."""
        family, weights = self._kernel_weights(op)
        if family == "int8":
            raise TdslError(f"{op.name}: the Numba backend runs conv_transpose2d with ternary, fp32 or fp16 "
                            "weights, not int8", loc_of(op))
        dims = tuple(op.weight_dims())
        weight = weights.get("weight")
        if family == "ternary":
            rows, k = matrix_shape(dims)
            trits = unpack(weights["packed"], (rows, k), "2bit").reshape(dims)
            weight = trits.astype(np.float32) * weights["scale"].reshape(-1, 1, 1, 1)
        geometry = op.geometry()
        attrs = {"kernel": (dims[2], dims[3]), "stride": (1, 1), "padding": (0, 0), "dilation": geometry["dilation"],
                 "groups": geometry["groups"], "upsample": geometry["stride"], "crop": geometry["padding"],
                 "output_padding": geometry["output_padding"], "out_channels": dims[0],
                 "activation": activations.code_of(op.activation.data), "residual": op.residual is not None}
        if attrs["groups"] > 1:
            attrs["depthwise"] = dims[1] == 1 and attrs["groups"] == dims[0]
        inputs = [op.input] + ([op.residual] if op.residual is not None else [])
        flipped = np.ascontiguousarray(weight[:, :, ::-1, ::-1], np.float32)
        self.emit(op, Kernel.CONV_TRANSPOSE2D, inputs, attrs, {"weight": flipped, "bias": weights["bias"]})

    def linear(self, op: kern.LinearOp) -> None:
        family, weights = self._kernel_weights(op)
        if family != "ternary":
            weights["weight_t"] = np.ascontiguousarray(weights.pop("weight").T)
        attrs = {"out_features": op.weight_dims()[0], "activation": activations.code_of(op.activation.data),
                 "residual": op.residual is not None}
        inputs = [op.input] + ([op.residual] if op.residual is not None else [])
        self.emit(op, _LINEAR_KERNELS[family], inputs, attrs, weights)

    def ternary_matmul(self, op: t.TernaryMatmulOp) -> None:
        w = self.const(op.weight, op, "weight")
        trits = np.clip(np.round(w.astype(np.float32)), -1, 1).astype(np.int8)
        n = trits.shape[0]
        self.emit(op, Kernel.LINEAR_TERNARY, [op.input],
                  {"out_features": n, "activation": activations.NONE, "residual": False},
                  {"packed": pack(trits, "2bit"), "scale": np.ones(n, np.float32),
                   "bias": np.zeros(n, np.float32)})

    def matmul(self, op: t.MatmulOp) -> None:
        self.operands_in_order(op, Kernel.MATMUL)

    # -- everything else

    def batch_norm(self, op: t.BatchNormOp) -> None:
        mean, var, gamma, beta = (self.const(getattr(op, n), op, n) for n in ("mean", "var", "weight", "bias"))
        scale, shift = fold_batchnorm(1.0, None, gamma, beta, mean, var, op.eps.value.data)
        self.emit(op, Kernel.AFFINE, [op.input], {}, {"scale": scale, "shift": shift})

    def pool(self, op: t.MaxPool2dOp | t.AvgPool2dOp) -> None:
        kind = Kernel.MAX_POOL2D if isinstance(op, t.MaxPool2dOp) else Kernel.AVG_POOL2D
        self.emit(op, kind, [op.input], {"kernel": _pair(op.kernel), "stride": _pair(op.stride),
                                         "padding": _pair(op.padding)}, {})

    def adaptive_avg_pool2d(self, op: t.AdaptiveAvgPool2dOp) -> None:
        self.emit(op, Kernel.ADAPTIVE_AVG_POOL2D, [op.input], {"output_size": _pair(op.output_size)}, {})

    def activation(self, op: t.ActivationOp) -> None:
        self.emit(op, Kernel.ACTIVATION, [op.input], {"activation": ACTIVATIONS[type(op)].code}, {})

    def softmax(self, op: t.SoftmaxOp) -> None:
        self.emit(op, Kernel.SOFTMAX, [op.input], {"dim": op.dim.value.data}, {})

    def operands_in_order(self, op: t.ValueOp, kind: Kernel) -> None:
        """A step over all of `op`'s operands: constants become float32 step weights; `order`
        says, operand by operand, which weight or "in" (the next activation input) it is
        (`executor.operands_in_order` puts them back together)."""
        inputs, weights, order = [], {}, []
        for name, v in op.named_operands():
            i = self.value(v)
            if i in self.consts:  # float constants compute in float32; integer ones (ids) keep their type
                c = self.consts[i]
                weights[name] = c.astype(np.float32) if c.dtype.kind == "f" else c
                order.append(name)
            else:
                inputs.append(v)
                order.append("in")
        self.emit(op, kind, inputs, {"order": tuple(order)}, weights)

    def binary(self, op: t.BinaryOp) -> None:
        self.operands_in_order(op, Kernel.BINARY)

    def composite(self, op: t.ValueOp) -> None:
        self.operands_in_order(op, Kernel.REFERENCE)

    def view(self, op: t.ValueOp) -> None:
        source = self.value(op.operands[0])
        if source in self.consts:  # a view of a weight is a weight
            c = self.consts[source]
            self.consts[self.value(op.results[0])] = c.reshape(concrete_result_shape(op, {"input": c.shape}))
            return
        self.emit(op, Kernel.VIEW, [op.operands[0]], {}, {})


def _pair(attr: Any) -> tuple[int, int]:
    a, b = (int(v) for v in attr.get_values())
    return a, b


_CONV_KERNELS = {"ternary": Kernel.CONV2D_TERNARY, "float": Kernel.CONV2D_FLOAT, "int8": Kernel.CONV2D_INT8}
_LINEAR_KERNELS = {"ternary": Kernel.LINEAR_TERNARY, "float": Kernel.LINEAR_FLOAT, "int8": Kernel.LINEAR_INT8}
_VIEWS = (t.FlattenOp, t.ReshapeOp, t.UnsqueezeOp, t.SqueezeOp, t.DropoutOp)
"""Ops whose result is their input's data in another shape (dropout: identity at inference)."""

HANDLERS: dict[type[Operation], Callable[[_Builder, Any], None]] = {
    t.GetParamOp: _Builder.get_param,
    tern.GetPackedOp: _Builder.get_packed,
    t.ConstantOp: _Builder.constant,
    kern.Conv2dOp: _Builder.conv2d,
    kern.CONVS["conv_transpose2d"]: _Builder.conv_transpose2d,
    kern.LinearOp: _Builder.linear,
    t.TernaryMatmulOp: _Builder.ternary_matmul,
    t.MatmulOp: _Builder.matmul,
    t.BatchNormOp: _Builder.batch_norm,
    t.MaxPool2dOp: _Builder.pool,
    t.AvgPool2dOp: _Builder.pool,
    t.AdaptiveAvgPool2dOp: _Builder.adaptive_avg_pool2d,
    **{cls: _Builder.activation for cls in ACTIVATIONS},
    t.SoftmaxOp: _Builder.softmax,
    **{cls: _Builder.binary for cls in BINARY},
    **{cls: _Builder.view for cls in _VIEWS},
    **{cls: _Builder.composite for cls in COMPOSITES},
}
"""One row per op class the plan lowers; any other op is an error at its location."""

_NOT_LOWERED = "run the program through `tdsl.lowering.kernel_level` (inline, fuse) first"
_NOT_FROZEN = "freeze or quantize the model first: the runtime runs frozen weights"
UNSUPPORTED: dict[type[Operation], str] = {
    t.CallOp: _NOT_LOWERED,
    **{cls: _NOT_LOWERED for cls in weighted_ops("float", "trits", "packed")},
    tern.QuantizeOp: _NOT_FROZEN,
    tern.DequantizeOp: _NOT_FROZEN,
}
"""Op classes the plan refuses, with the reason users read."""


def build_plan(module: ModuleOp, arrays: Mapping[str, np.ndarray], *, act_quant: str = "int8") -> Plan:
    """The plan of `module`'s entry forward (kernel level: `tdsl.lowering.kernel_level`) with its
    weights taken from `arrays` (numpy, keyed by frozen state-dict names)."""
    if act_quant not in ACT_QUANTS:
        raise TdslError(f"unknown act_quant {act_quant!r}: valid are " + ", ".join(repr(a) for a in ACT_QUANTS))
    layer = entry_layer(module)
    b = _Builder(layer, arrays, act_quant)
    forward = layer.forward
    inputs = [b.value(a) for a in forward.args]
    for op in forward.body.block.ops:
        if isinstance(op, t.ReturnOp):
            continue
        handler = HANDLERS.get(type(op))
        if handler is None:
            why = UNSUPPORTED.get(type(op), "it has no handler")
            raise TdslError(f"the Numba backend has no kernel for '{op.name}': {why}", loc_of(op))
        handler(b, op)
    ret = forward.return_op
    names = [n.data for n in ret.names.data] if ret.names is not None else None
    outputs = [b.value(v) for v in ret.values]
    # Only constants a step reads or the forward returns stay: the store's arrays that were
    # folded into step weights (bn statistics, packed originals, fp16 weights) are dropped.
    used = {v for step in b.steps for v in step.inputs} | set(outputs)
    consts = {v: c for v, c in b.consts.items() if v in used}
    const_shapes = {v: tuple(c.shape) for v, c in b.consts.items()}
    return Plan(b.steps, inputs, outputs, names, b.types, consts, layer.layer.data, act_quant, const_shapes,
                signature=forward_signature(module))


# --------------------------------------------------------------------------- shapes


def _out_shape(step: Step, shapes: list[Shape | None]) -> Shape:
    """The step's result shape from its op's shape rule, for the operands' shapes now."""
    return concrete_result_shape(step.op, {name: shapes[v] for name, v in step.operands.items()})


def _resolve(plan: Plan, input_shapes: tuple[Shape, ...]) -> Schedule:
    n = len(plan.value_types)
    shapes: list[Shape | None] = [None] * n
    for i, shape in plan.const_shapes.items():
        shapes[i] = shape
    for v, s in zip(plan.inputs, input_shapes):
        shapes[v] = s
        _check_static(plan, v, s, None)
    workspace = {"cols": 0, "gemm": 0}
    for step in plan.steps:
        ins = [shapes[v] for v in step.inputs]
        try:
            out = _out_shape(step, shapes)
        except (ShapeInferenceError, ValueError, IndexError, ZeroDivisionError) as e:
            raise step.error(f"cannot compute the result shape for inputs {ins}: {e}") from None
        if any(d < 1 for d in out):
            raise step.error(f"the result shape {out} is empty for inputs {ins}")
        shapes[step.output] = out
        _check_static(plan, step.output, out, step)
        if step.kind is Kernel.CONV2D_TERNARY and not _is_depthwise(step, ins[0]) and plan.act_quant == "int8":
            (kh, kw), g = step.attrs["kernel"], step.attrs["groups"]
            N, C, H, W = ins[0]
            for name, nbytes in conv_int8_workspace(N, C, H, W, C // g, kh, kw, out[2], out[3]).items():
                workspace[name] = max(workspace.get(name, 0), -(-nbytes // 4))
        elif step.kind is Kernel.CONV2D_TERNARY and not _is_depthwise(step, ins[0]):
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
