"""Freeze a trained (QAT) module into its deployment storage (docs/TERNARY.md, "Freeze").

`freeze(compiled, trained)` compiles the same program one step further (the model's IR
plus `pack{format}` when it has ternary weights), emits it in frozen form and fills that
module from the trained module's latent weights:

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

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
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
from tdsl.errors import TdslError
from tdsl.lowering import frozen_program

if TYPE_CHECKING:
    from tdsl.api import CompiledModel
    from tdsl.quant.calibration import CalibrationReport

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


_WEIGHT_OPS = (t.Conv2dOp, t.LinearOp, t.MatmulOp, t.TernaryMatmulOp, tern.TernConv2dOp, tern.TernLinearOp,
               tern.PackedConv2dOp, tern.PackedLinearOp)


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
        if isinstance(op, t.MatmulOp):
            weight = op.rhs
        elif isinstance(op, _WEIGHT_OPS):
            weight = op.weight  # type: ignore[union-attr]
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
            out.setdefault(w, ("packed" if isinstance(op, tern.PackedConv2dOp | tern.PackedLinearOp) else "weight",
                               op, None))
        bias = name_of(getattr(op, "bias", None))
        if bias is not None:
            out.setdefault(bias, ("bias", op, None))
        scale = name_of(getattr(op, "scale", None))
        if scale is not None and isinstance(op, tern.PackedConv2dOp | tern.PackedLinearOp):
            out.setdefault(scale, ("scale", op, w))
    return out


def _op_info(op: Operation | None) -> tuple[str | None, dict[str, Any]]:
    if isinstance(op, t.Conv2dOp | tern.TernConv2dOp | tern.PackedConv2dOp):
        kwargs = {k: tuple(int(v) for v in getattr(op, k).get_values()) for k in ("stride", "padding", "dilation")}
        kwargs["groups"] = op.groups.value.data
        return "conv2d", kwargs
    if isinstance(op, t.LinearOp | tern.TernLinearOp | tern.PackedLinearOp):
        return "linear", {}
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


class FrozenModel:
    """A frozen model: the deployment module and what it was made from.

    `module` holds packed ternary weights, float16 / int8 weights and float32 rest;
    `compiled` is the frozen program (the trained program plus `pack`); `layout` says what
    every state-dict tensor is; `calibration` holds the per-layer threshold search when
    `tdsl.quantize(..., calibrate=...)` made it.
    """

    def __init__(self, module: nn.Module, compiled: CompiledModel, layout: dict[str, Stored], format: str,
                 precision: str = "", calibration: CalibrationReport | None = None):
        self.module = module
        self.compiled = compiled
        self.layout = layout
        self.format = format
        self.precision = precision
        self.calibration = calibration

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def memory_report(self):
        from tdsl.reports import memory_report

        return memory_report(self)

    def sparsity_report(self):
        from tdsl.reports import sparsity_report

        return sparsity_report(self)

    def save(self, path: str) -> None:
        """Write the state dict as safetensors (what `memory_report` counts, plus a header)."""
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(path))

    def deploy(self, backend: str = "numba", *, device: str = "cpu", act_quant: str = "int8",
               path: str | None = None, profile: bool = False, calibrate: Any = None):
        """This model on a deployment backend (`tdsl.deploy`): numpy in, numpy out."""
        from tdsl.deploy import deploy

        return deploy(self, backend, device=device, act_quant=act_quant, path=path, profile=profile,
                      calibrate=calibrate)

    def ternary_weights(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Weight path -> (trits int8 in the weight's shape, scale), unpacked from storage."""
        from tdsl.backends.torch.packing import unpack_torch

        sd = self.state_dict()
        scales = {s.weight: sd[s.key] for s in self.layout.values() if s.role == "scale" and s.precision == "ternary"}
        return {s.weight: (unpack_torch(sd[s.key], s.shape, s.format or "2bit"), scales[s.weight])
                for s in self.layout.values() if s.role == "packed"}

    def dequantized_state_dict(self) -> dict[str, torch.Tensor]:
        """The float32 weights the frozen module computes with, under the trained module's
        keys (α·T, int8·scale, float16 → float32); load it into the fp32 module to get a
        reference with the same numbers."""
        from tdsl.backends.torch.runtime import dequantize_ternary

        sd = self.state_dict()
        out: dict[str, torch.Tensor] = {}
        ternary = self.ternary_weights()
        for s in self.layout.values():
            value = sd[s.key]
            if s.role == "packed":
                trits, scale = ternary[s.weight]
                out[s.latent_key] = dequantize_ternary(trits, scale)
            elif s.role == "scale":
                continue
            elif s.role == "weight" and s.precision == "int8":
                scale = sd[next(x.key for x in self.layout.values()
                                if x.role == "scale" and x.weight == s.weight and x.precision == "int8")]
                out[s.latent_key] = dequantize_ternary(value, scale)
            else:
                out[s.latent_key] = value.to(torch.float32) if value.is_floating_point() else value.clone()
        return out


def _lookup(trained: Mapping[str, torch.Tensor], key: str, what: str) -> torch.Tensor:
    if key not in trained:
        raise TdslError(f"freeze: the trained module has no '{key}' ({what})")
    return trained[key].detach()


def freeze(compiled: CompiledModel, trained: nn.Module | Mapping[str, torch.Tensor], *, format: str = "2bit",
           thresholds: Mapping[str, Any] | None = None, precision: str = "") -> FrozenModel:
    """The frozen form of `compiled` filled from `trained` (a module or state dict of the
    module `compiled.to_torch()` builds). See the module docstring."""
    from tdsl.backends.torch.packing import pack_torch
    from tdsl.backends.torch.runtime import int8_weight
    from tdsl.quant.torch_ste import ternarize_torch

    state = trained.state_dict() if isinstance(trained, nn.Module) else dict(trained)
    frozen = frozen_program(compiled, format)
    module = frozen.to_torch()
    layout = storage_layout(frozen.module)
    thresholds = dict(thresholds or {})
    weights = {s.weight: s for s in layout.values() if s.role == "packed"}
    known = set(weights) | {w.rsplit(".", 1)[0] for w in weights}
    unknown = sorted(set(thresholds) - known)
    if unknown:
        raise TdslError(f"freeze: thresholds name {', '.join(unknown)}, which {'is' if len(unknown) == 1 else 'are'} "
                        f"not a ternary weight; ternary weights: {', '.join(sorted(weights)) or 'none'}")
    target = module.state_dict()
    values: dict[str, torch.Tensor] = {}
    scale_of: dict[tuple[str, str], str] = {(s.weight, s.precision): s.key for s in layout.values()
                                            if s.role == "scale"}
    for key, s in layout.items():
        if s.role == "scale":
            continue
        if s.role == "packed":
            w = _lookup(state, s.latent_key, f"the latent weight of {s.weight}")
            q = s.quant or {}
            per_channel = bool(q.get("per_channel", False))
            delta = thresholds.get(s.weight, thresholds.get(s.weight.rsplit(".", 1)[0]))
            if delta is not None:
                trits, alpha, _ = ternarize_torch(w, "fixed", per_channel, threshold=np.asarray(delta))
            else:
                method = str(q.get("threshold", "twn"))
                trits, alpha, _ = ternarize_torch(
                    w, method, per_channel,
                    target_sparsity=float(q["sparsity"]) if method == "sparsity" else None,
                    threshold=float(q["delta"]) if method == "fixed" else None)
            values[key] = pack_torch(trits, s.format or format).reshape(target[key].shape)
            values[scale_of[(s.weight, "ternary")]] = alpha.reshape(target[scale_of[(s.weight, "ternary")]].shape)
        elif s.role == "weight" and s.precision == "int8":
            q8, scale = int8_weight(_lookup(state, s.latent_key, f"the weight {s.weight}"))
            values[key], values[scale_of[(s.weight, "int8")]] = q8, scale
        else:
            value = _lookup(state, s.latent_key, s.weight)
            values[key] = value.to(target[key].dtype)
    for key, value in values.items():
        if tuple(value.shape) != tuple(target[key].shape):
            raise TdslError(f"freeze: '{key}' has shape {tuple(target[key].shape)} in the frozen module but the "
                            f"trained module gives {tuple(value.shape)}")
    module.load_state_dict(values, strict=True)
    module.eval()
    return FrozenModel(module, frozen, layout, format, precision)
