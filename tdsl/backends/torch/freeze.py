"""The frozen storage layout of a module: what every state-dict tensor of the frozen torch
module is (docs/TERNARY.md, "Freeze"); `tdsl.model.frozen.freeze` fills that module from the
trained module's latent weights:

| precision | trained (QAT) state dict | frozen state dict |
|---|---|---|
| ternary | `conv1.weight` float32 | `conv1.weight_packed` uint8 [rows, bytes_per_row], `conv1.weight_scale` float32 () or [out] |
| int8 | `conv1.weight` float32 | `conv1.weight` int8, `conv1.weight_scale` float32 [out] |
| fp16 | `conv1.weight` float32 | `conv1.weight` float16 |
| fp32, biases, batch norm | as is | as is (float32) |

Ternary weights are quantised with the rule the QAT module used (the `quant` attribute that
`ternarize` recorded, through `ternarize_torch`, the function `ternarize_ste` calls), or
with a per-path Δ from `thresholds` (`{"layer1.0.conv1.weight": Δ}`, e.g. from
calibration). No float copy of a ternary weight is kept. In eval mode the frozen module
computes with the same α·T (and the same int8 values and scales) as the QAT module, so
outputs agree up to float summation order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xdsl.dialects.builtin import DictionaryAttr, ModuleOp
from xdsl.ir import Operation, SSAValue

from tdsl.backends.torch.emit import (
    _int8_scale_key,
    _ModuleEmitter,
    _py_value,
    precision_of,
)
from tdsl.dialects import tdsl as t
from tdsl.dialects import tern
from tdsl.dialects.tdsl import entry_layer
from tdsl.dialects.weighted import weighted


ROLES = ("packed", "scale", "weight", "bias", "batchnorm", "other")
"""What a stored tensor is: packed trits, a scale (ternary or int8), a kept-precision
weight of a conv/linear (fp32, fp16, int8 values), a bias, a batch-norm tensor, other."""


@dataclass(frozen=True)
class Stored:
    """One tensor of a frozen module's state dict and where it comes from."""

    key: str
    """State-dict key in the frozen module (`layer1.0.conv1.weight_packed`)."""
    layer: str
    """Module path of the layer that holds it (`layer1.0.conv1`; "" for the entry)."""
    role: str
    precision: str
    """Of the weight it stores or scales: ternary, int8, fp16, fp32 (fp32 for non-weights)."""
    weight: str
    """Dotted path of the weight it belongs to (`layer1.0.conv1.weight`); its own path otherwise."""
    latent_key: str
    """State-dict key of the float tensor in the trained (QAT) module that it is made from."""
    shape: tuple[int, ...]
    """Logical (unpacked) shape."""
    format: str | None = None
    quant: dict[str, Any] | None = None
    op: str | None = None
    """`conv2d` or `linear` for a weight (or its packed trits), else None."""
    op_kwargs: dict[str, Any] = field(default_factory=dict)
    """stride, padding, dilation, groups of a conv2d weight."""


def _usage(layer: t.LayerOp) -> dict[str, tuple[str, Operation | None, str | None]]:
    """Param name -> (role, the op that uses it, for a scale the weight param it scales)."""
    out: dict[str, tuple[str, Operation | None, str | None]] = {}

    def name_of(value: SSAValue | None) -> str | None:
        owner = value.owner if value is not None else None
        if isinstance(owner, t.GetParamOp):
            return owner.param.root_reference.data
        if isinstance(owner, tern.GetPackedOp):
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
    trait = weighted(op) if op is not None else None
    if trait is not None and trait.level != "kernel":
        return trait.kind, {k: v if k == "groups" else tuple(int(x) for x in v) for k, v in trait.geometry(op).items()}
    if isinstance(op, tern.QuantizeOp):
        for use in op.trits.uses:
            return _op_info(use.operation)
    return None, {}


def _quant(attr: Any, op: Operation) -> dict[str, Any] | None:
    if not isinstance(attr, DictionaryAttr):
        return None
    return {k: _py_value(v, op) for k, v in attr.data.items()}


def storage_layout(module: ModuleOp, frozen: bool = True) -> dict[str, Stored]:
    """Every tensor of the module emitted from `module` (frozen form by default), by
    state-dict key, in the order the walk from the entry meets them."""
    emitter = _ModuleEmitter(module, frozen)
    out: dict[str, Stored] = {}

    def visit(spec: t.LayerOp, key_prefix: str, path_prefix: str) -> None:
        if spec.sym_name.data in emitter.inline:
            for k, inst in enumerate(spec.instance_ops()):
                visit(emitter.callee(inst), f"{key_prefix}{k}.", f"{path_prefix}{inst.sym_name.data}.")
            return
        plan = emitter.plan_of(spec)
        usage = _usage(spec)
        layer = key_prefix[:-1]
        for op in spec.body.block.ops:
            if isinstance(op, t.InstanceOp):
                name = op.sym_name.data
                attr = plan.member_expr(name).removeprefix("self.")
                attr = attr.replace("[", ".").replace("]", "")
                visit(emitter.callee(op), f"{key_prefix}{attr}.", f"{path_prefix}{name}.")
                continue
            if not isinstance(op, t.ParamOp | tern.PackedParamOp):
                continue
            name = op.sym_name.data
            key = key_prefix + plan.members[name].ident
            role, user, scaled = usage.get(name, ("other", None, None))
            if isinstance(op, tern.PackedParamOp):
                kind, kwargs = _op_info(user)
                out[key] = Stored(key, layer, "packed", "ternary", path_prefix + name, key_prefix + name,
                                  op.type.get_shape(), op.type.format.data, _quant(op.attributes.get("quant"), op),
                                  kind, kwargs)
                continue
            shape = tuple(op.type.get_shape())
            if role == "scale" and scaled is not None:
                out[key] = Stored(key, layer, "scale", "ternary", path_prefix + scaled, key_prefix + scaled, shape)
                continue
            precision = precision_of(op) or "fp32"
            kind, kwargs = _op_info(user) if role == "weight" else (None, {})
            quant = _quant(op.attributes.get("quant"), op) if precision == "ternary" else None
            out[key] = Stored(key, layer, role, precision if role == "weight" else "fp32", path_prefix + name,
                              key_prefix + name, shape, None, quant, kind, kwargs)
            if frozen and role == "weight" and precision == "int8":
                skey = key_prefix + plan.members[_int8_scale_key(name)].ident
                out[skey] = Stored(skey, layer, "scale", "int8", path_prefix + name, key_prefix + name,
                                   (shape[0],))

    visit(entry_layer(module), "", "")
    return out
