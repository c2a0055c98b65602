"""How the IR's parameters map to parameter-store keys: one definition for every stage.

The store (a state dict, or a package's safetensors) is keyed by the IR's param paths
(`layer1.0.conv1.weight`), with these conventions for frozen storage (docs/KERNEL_IR.md,
docs/TERNARY.md): `tern.packed_param @weight` is the uint8 array `weight_packed`; a ternary
weight's scale is the param `weight_scale` (`pack` declares it); a frozen int8 weight
`weight` keeps its per-channel scales in `weight_scale` too.

`storage_layout` is the one walk that says what each stored tensor is (docs/TERNARY.md,
"Freeze"); packages check weights files against it and the torch backend's freeze fills
the frozen module by it, under its own attribute names:

| precision | trained (QAT) state dict | frozen storage |
|---|---|---|
| ternary | `conv1.weight` float32 | `conv1.weight_packed` uint8 [rows, bytes_per_row], `conv1.weight_scale` float32 () or [out] |
| int8 | `conv1.weight` float32 | `conv1.weight` int8, `conv1.weight_scale` float32 [out] |
| fp16 | `conv1.weight` float32 | `conv1.weight` float16 |
| fp32, biases, batch norm | as is | as is (float32) |
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from xdsl.dialects.builtin import (
    ArrayAttr,
    DenseArrayBase,
    DictionaryAttr,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    ModuleOp,
    StringAttr,
)
from xdsl.ir import Attribute, Operation, SSAValue

from tdsl.dialects import tdsl as t
from tdsl.dialects import tern
from tdsl.dialects.locations import loc_of
from tdsl.dialects.tdsl import element_type_of, entry_layer, module_layers
from tdsl.dialects.weighted import weighted
from tdsl.errors import TdslError
from tdsl.runtime.packing import packed_shape

FROZEN_ATTR = "tdsl.frozen"
"""A module attribute (unit) that asks for frozen storage even without packed weights."""

EXAMPLE_SHAPE = "tdsl.example_shape"
"""A forward's attribute: per input, the example size of each dim (-1: none), for the dims
declared `dynamic(example)` (any size taken, the example used for example inputs)."""

PACKED_SUFFIX = "_packed"
"""Store key suffix of a packed weight: the IR keeps the latent weight's name."""

SCALE_SUFFIX = "_scale"
"""Store key suffix of a weight's scale: ternary (a param of the IR) or frozen int8 (per channel)."""


def is_frozen(module: ModuleOp) -> bool:
    """Whether `module` describes frozen storage: marked so, or holding a packed weight."""
    if FROZEN_ATTR in module.attributes:
        return True
    return any(isinstance(op, tern.PackedParamOp) for layer in module_layers(module).values()
               for op in layer.body.block.ops)


# --------------------------------------------------------------------------- what backends take


class Program(ABC):
    """A compiled program as an exporter takes it (`tdsl.model.compiled.CompiledModel` is the
    one): `module` (its IR), `filename`, `entry`, `params` and `passes` (what compiled it), a
    fresh torch module of it and its frozen form. The objects users hold derive from this and
    `FrozenProgram`, so a backend tells them apart by `isinstance`, without importing
    `tdsl.model` or `tdsl.package` (which sit above it) or guessing from their attributes."""

    module: ModuleOp
    filename: str
    entry: str
    params: dict[str, Any]
    passes: list[str]

    @abstractmethod
    def to_torch(self) -> Any:
        """A fresh `nn.Module` of the entry layer."""

    @abstractmethod
    def freeze(self, trained: Any) -> FrozenProgram:
        """The frozen form, filled from the trained module or state dict."""

    @abstractmethod
    def program_and_weights(self) -> tuple[ModuleOp, Mapping[str, Any]]:
        """(IR, weights by state-dict key), what a deployment backend takes; an error without weights."""


class FrozenProgram(ABC):
    """A frozen program with its weights (`tdsl.model.frozen.FrozenModel`, a loaded package):
    `compiled` (the frozen `Program`), `layout` (its `storage_layout` by state-dict key) and
    `precision` (the name it was quantised under, "" when custom)."""

    compiled: Program
    layout: Mapping[str, Stored]
    precision: str

    @abstractmethod
    def state_dict(self) -> Mapping[str, Any]:
        """The stored tensors by state-dict key."""

    @abstractmethod
    def to_torch(self) -> Any:
        """The frozen `nn.Module` holding these weights."""

    @abstractmethod
    def program_and_weights(self) -> tuple[ModuleOp, Mapping[str, Any]]:
        """(the frozen IR, its weights by state-dict key), what a deployment backend takes."""


# --------------------------------------------------------------------------- the storage layout

NUMPY_DTYPES = {"f16": "float16", "f32": "float32", "f64": "float64", "i2": "int8", "i8": "int8",
                "i32": "int32", "i64": "int64", "i1": "bool"}
"""IR element type -> numpy dtype name of its stored tensor (trits `i2` are stored as int8)."""

ROLES = ("packed", "scale", "weight", "bias", "batchnorm", "other")
"""What a stored tensor is: packed trits, a scale (ternary or int8), a kept-precision
weight of a conv/linear (fp32, fp16, int8 values), a bias, a batch-norm tensor, other."""


def dtype_name(element_type: object) -> str:
    """The numpy dtype name for an IR element type; others cannot be stored in a package."""
    name = str(element_type)
    if name not in NUMPY_DTYPES:
        raise TdslError(f"a package cannot store tensors of element type {name}")
    return NUMPY_DTYPES[name]


@dataclass(frozen=True)
class Stored:
    """One stored tensor (docs/TERNARY.md, "Freeze"), what it is and where it comes from."""

    key: str
    """Store key (`layer1.0.conv1.weight_packed`), as the naming of `storage_layout` spells it."""
    layer: str
    """Key prefix of the layer that holds it (`layer1.0.conv1`; "" for the entry)."""
    role: str
    precision: str
    """Of the weight it stores or scales: ternary, int8, fp16, fp32 (fp32 for non-weights)."""
    weight: str
    """Dotted IR path of the weight it belongs to (`layer1.0.conv1.weight`); its own path otherwise."""
    latent_key: str
    """Key of the float tensor in the trained (QAT) module that it is made from."""
    shape: tuple[int, ...]
    """Logical (unpacked) shape."""
    dtype: str
    """numpy dtype name of the stored tensor (the IR element type's name where numpy has none)."""
    stored_shape: tuple[int, ...]
    """Shape of the stored tensor: packed trits are uint8 [rows, bytes_per_row]."""
    format: str | None = None
    quant: dict[str, Any] | None = None
    op: str | None = None
    """The `WeightedOp` kind (conv2d, linear, ...) of a weight or its packed trits, else None."""
    op_kwargs: dict[str, Any] = field(default_factory=dict)
    """The geometry of a conv weight (stride, padding, dilation, groups, ...)."""


class Naming(Protocol):
    """How a store spells the keys of a layer's children and tensors. `IR_PATHS` keeps the IR's
    names (packages, Numba); the torch backend passes its emitted module's attribute names."""

    def child(self, layer: t.LayerOp, instance: str) -> str:
        """The key segment(s) of child `instance` of `layer` (`blocks.0`)."""
        ...

    def tensor(self, layer: t.LayerOp, param: str, packed: bool) -> str:
        """The key of param `param` of `layer` (`weight`, `weight_packed`)."""
        ...

    def int8_scale(self, layer: t.LayerOp, param: str) -> str:
        """The key of the per-channel scale of frozen int8 weight `param`."""
        ...


class _IRPaths:
    def child(self, layer: t.LayerOp, instance: str) -> str:
        return instance

    def tensor(self, layer: t.LayerOp, param: str, packed: bool) -> str:
        return param + PACKED_SUFFIX if packed else param

    def int8_scale(self, layer: t.LayerOp, param: str) -> str:
        return param + SCALE_SUFFIX


IR_PATHS: Naming = _IRPaths()
"""Keys are the IR's param paths with the storage suffixes (the module docstring)."""


def storage_layout(module: ModuleOp, frozen: bool | None = None, naming: Naming = IR_PATHS) -> dict[str, Stored]:
    """Every tensor stored for `module`, by key, in the order the walk from the entry meets
    them. `frozen` selects frozen storage (fp16 as float16, int8 as int8 plus a float32 scale
    per output channel; packed trits are always packed); None: `is_frozen(module)`."""
    frozen = is_frozen(module) if frozen is None else frozen
    layers = module_layers(module)
    out: dict[str, Stored] = {}

    def callee(op: t.InstanceOp) -> t.LayerOp:
        layer = layers.get(op.callee.root_reference.data)
        if layer is None:
            raise TdslError(f"instance '{op.sym_name.data}' refers to unknown layer "
                            f"@{op.callee.root_reference.data}", loc_of(op))
        return layer

    def visit(spec: t.LayerOp, key_prefix: str, path_prefix: str) -> None:
        usage = _usage(spec)
        layer = key_prefix[:-1]
        for op in spec.body.block.ops:
            if isinstance(op, t.InstanceOp):
                name = op.sym_name.data
                visit(callee(op), f"{key_prefix}{naming.child(spec, name)}.", f"{path_prefix}{name}.")
                continue
            if not isinstance(op, t.ParamOp | tern.PackedParamOp):
                continue
            name = op.sym_name.data
            role, user, scaled = usage.get(name, ("other", None, None))
            shape = tuple(op.type.get_shape())
            if isinstance(op, tern.PackedParamOp):
                key = key_prefix + naming.tensor(spec, name, True)
                fmt = op.type.format.data
                kind, kwargs = _op_info(user)
                out[key] = Stored(key, layer, "packed", "ternary", path_prefix + name, key_prefix + name, shape,
                                  "uint8", tuple(packed_shape(shape, fmt)), fmt,
                                  _quant(op.attributes.get("quant"), op), kind, kwargs)
                continue
            key = key_prefix + naming.tensor(spec, name, False)
            element = str(element_type_of(op.type))
            dtype = NUMPY_DTYPES.get(element, element)
            if role == "scale" and scaled is not None:
                out[key] = Stored(key, layer, "scale", "ternary", path_prefix + scaled, key_prefix + scaled, shape,
                                  dtype, shape)
                continue
            precision = op.precision.data if op.precision is not None else "fp32"
            kind, kwargs = _op_info(user) if role == "weight" else (None, {})
            quant = _quant(op.attributes.get("quant"), op) if precision == "ternary" else None
            if frozen and precision in ("fp16", "int8"):
                dtype = "float16" if precision == "fp16" else "int8"
            out[key] = Stored(key, layer, role, precision if role == "weight" else "fp32", path_prefix + name,
                              key_prefix + name, shape, dtype, shape, None, quant, kind, kwargs)
            if frozen and precision == "int8":
                skey = key_prefix + naming.int8_scale(spec, name)
                channels = (shape[0] if shape else 1,)
                out[skey] = Stored(skey, layer, "scale", "int8", path_prefix + name, key_prefix + name,
                                   channels, "float32", channels)

    visit(entry_layer(module), "", "")
    return out


def _usage(layer: t.LayerOp) -> dict[str, tuple[str, Operation | None, str | None]]:
    """Param name -> (role, the op that uses it, for a scale the weight param it scales)."""
    out: dict[str, tuple[str, Operation | None, str | None]] = {}

    def name_of(value: SSAValue | None) -> str | None:
        owner = value.owner if value is not None else None
        if isinstance(owner, t.GetParamOp | tern.GetPackedOp):
            return owner.param.root_reference.data
        return None

    for op in layer.forward.body.block.ops:
        trait = weighted(op)
        if trait is not None and trait.level == "kernel":
            trait = None  # the storage of a program, not of its kernel-level lowering
        if isinstance(op, t.MatmulOp):
            weight = op.rhs
        elif trait is not None or isinstance(op, t.TernaryMatmulOp):
            weight = op.weight  # type: ignore[attr-defined]
        elif isinstance(op, tern.QuantizeOp):
            name = name_of(op.weight)
            if name is not None:
                out.setdefault(name, ("weight", op, None))
            continue
        elif isinstance(op, t.BatchNormOp):
            for v in (op.input, op.mean, op.var, op.weight, op.bias):
                name = name_of(v)
                if name is not None:
                    out.setdefault(name, ("batchnorm", op, None))
            continue
        else:
            continue
        w = name_of(weight)
        if w is not None:
            out.setdefault(w, ("packed" if trait is not None and trait.level == "packed" else "weight", op, None))
        bias = name_of(getattr(op, "bias", None))
        if bias is not None:
            out.setdefault(bias, ("bias", op, None))
        scale = name_of(getattr(op, "scale", None))
        if scale is not None and trait is not None and trait.level == "packed":
            out.setdefault(scale, ("scale", op, w))
    return out


def _op_info(op: Operation | None) -> tuple[str | None, dict[str, Any]]:
    """The weighted kind and geometry of the op using a weight (through a `tern.quantize`)."""
    trait = weighted(op) if op is not None else None
    if trait is not None and trait.level != "kernel":
        return trait.kind, {k: v if k == "groups" else tuple(int(x) for x in v) for k, v in trait.geometry(op).items()}
    if isinstance(op, tern.QuantizeOp):
        for use in op.trits.uses:
            return _op_info(use.operation)
    return None, {}


def _quant(attr: Attribute | None, op: Operation) -> dict[str, Any] | None:
    """The `quant` rule `ternarize` recorded, as Python values."""
    if not isinstance(attr, DictionaryAttr):
        return None
    return {k: attr_value(v, op) for k, v in attr.data.items()}


def attr_value(attr: Attribute, op: Operation, problem: str = "'{op}': cannot read the quant value {attr}") -> Any:
    """An attribute as a Python value (bool, int, float, str, tuples of them); anything else is
    a TdslError at op's location, `problem` formatted with the op's name and the attribute
    (the torch backend reads initialiser arguments with it too)."""
    if isinstance(attr, IntegerAttr):
        value = attr.value.data
        return value != 0 if attr.type == IntegerType(1) else value
    if isinstance(attr, FloatAttr):
        return float(attr.value.data)
    if isinstance(attr, StringAttr):
        return attr.data
    if isinstance(attr, ArrayAttr):
        return tuple(attr_value(a, op, problem) for a in attr.data)
    if isinstance(attr, DenseArrayBase):
        return tuple(attr.get_values())
    raise TdslError(problem.format(op=op.name, attr=attr), loc_of(op))
