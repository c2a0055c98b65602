"""`FrozenModel`, the deployment form of a trained program, and `freeze`, which makes it.

`freeze(compiled, trained)` compiles the same program one step further (`frozen_program`:
the model's IR plus `pack{format}` when it has ternary weights), emits it in frozen form and
fills that module from the trained module's latent weights; the storage of each tensor is
`tdsl.backends.torch.freeze.storage_layout` (docs/TERNARY.md, "Freeze"). Ternary weights are
quantised with the rule the QAT module used (the `quant` attribute that `ternarize`
recorded, through `ternarize_torch`), or with a per-path Δ from `thresholds`
(`{"layer1.0.conv1.weight": Δ}`, e.g. from calibration). No float copy of a ternary weight is
kept. In eval mode the frozen module computes with the same α·T (and the same int8 values and
scales) as the QAT module, so outputs agree up to float summation order.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from tdsl.backends.torch.freeze import storage_layout
from tdsl.dialects.storage import FrozenProgram, Stored
from tdsl.errors import TdslError
from tdsl.model.compiled import CompiledModel, frozen_program

if TYPE_CHECKING:
    from tdsl.quant.calibration import CalibrationReport


class FrozenModel(FrozenProgram):
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

    def to_torch(self) -> nn.Module:
        """The frozen module itself (not a copy)."""
        return self.module

    def program_and_weights(self) -> tuple[Any, dict[str, torch.Tensor]]:
        """(the frozen module's IR, its state dict) for `deploy`."""
        return self.compiled.module, self.state_dict()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def memory_report(self):
        from tdsl.model.reports import memory_report

        return memory_report(self)

    def sparsity_report(self):
        from tdsl.model.reports import sparsity_report

        return sparsity_report(self)

    def save(self, path: str) -> None:
        """Write the state dict as safetensors (what `memory_report` counts, plus a header)."""
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(path))

    def deploy(self, backend: str = "numba", *, device: str = "cpu", act_quant: str = "int8",
               path: str | None = None, profile: bool = False, calibrate: Any = None):
        """This model on a deployment backend (`tdsl.deploy`): numpy in, numpy out."""
        from tdsl.model.deploy import deploy

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
