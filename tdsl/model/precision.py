"""The precision pipeline: post-training quantisation (`quantize`) and quantisation-aware
training (`qat`) of a tdsl model to fp32, fp16, int8, ternary or a per-layer mix.

    frozen = tdsl.quantize("resnet18", precision="ternary", weights=fp32_state_dict)
    frozen.memory_report().table()

    compiled, net = tdsl.qat("resnet18", precision="ternary")
    ...train net...
    frozen = compiled.freeze(net)

Which weight gets which precision (docs/TERNARY.md): `override` (`"conv1.weight=fp16
layer4.*=int8"`, fnmatch on weight paths, first match wins), then DSL annotations, then
the policy. For `precision="ternary"` the policy is the `ternarize` pass's: `default`
keeps the first conv/linear and the last linear at fp16, `all` makes every weight
ternary, `none` only what overrides and annotations say, `b158` BitNet b1.58's recipe
(every linear ternary with the absmean rule per tensor but the LM head, int8 activations
per token; `threshold` and `per_channel` do not apply). `precision="mixed"` is ternary
with the default policy keeping the first and last layers at int8 instead of fp16 (and
the overrides on top). For fp32 / fp16 / int8 every weight gets that precision except
where an override or annotation says otherwise; a `=ternary` override turns the
ternarize pass on for those weights.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tdsl.errors import TdslError
from tdsl.passes.pipelines import (  # noqa: F401 - the pipelines, re-exported where users found them
    POLICIES,
    PRECISIONS,
    THRESHOLDS,
    expand_override,
    pipeline_for,
    threshold_options,
)

if TYPE_CHECKING:
    from torch import nn

    from tdsl.model.compiled import CompiledModel
    from tdsl.model.frozen import FrozenModel

PIPELINE_ALL = ("fp32", "fp16", "int8", "ternary", "mixed")
"""The stages `tdsl quantize --pipeline-all` runs, in order."""


def _load_weights(module: nn.Module, weights: Any) -> None:
    import torch
    from torch import nn

    if weights is None:
        return
    if isinstance(weights, (str, Path)):
        from safetensors.torch import load_file

        weights = load_file(str(weights))
    state = weights.state_dict() if isinstance(weights, nn.Module) else dict(weights)
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}" + (" ..." if len(unexpected) > 5 else ""))
        raise TdslError(f"weights do not fit the fp32 model: {'; '.join(parts)}")
    with torch.no_grad():
        for key, value in state.items():
            if tuple(value.shape) != tuple(own[key].shape):
                raise TdslError(f"weights: '{key}' has shape {tuple(value.shape)}, the model needs "
                                f"{tuple(own[key].shape)}")
    module.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()}, strict=True)


def _from_package(model: Any, weights: Any, params: dict[str, Any] | None, entry: str | None) -> tuple[Any, ...]:
    """An fp32 package (what `tdsl.import_torch` returns) as its program, weights, params and
    entry; anything else unchanged. The package says it itself (`LoadedPackage.fp32_program`), so
    this layer names no class of the package layer above it."""
    own = getattr(model, "fp32_program", None)
    if not callable(own):
        return model, weights, params, entry
    source, stored_params, stored_entry = own()
    return (source, model.state_dict() if weights is None else weights,
            stored_params if params is None else params, stored_entry if entry is None else entry)


def qat(model: str | Path, precision: str = "ternary", *, policy: str = "default", override: str = "",
        threshold: str = "twn", per_channel: bool = True, params: dict[str, Any] | None = None,
        weights: Any = None, entry: str | None = None) -> tuple[CompiledModel, nn.Module]:
    """The QAT entry point: the compiled program with latent float weights and fake-quant
    (`ternarize_ste`, fp16 rounding, dynamic int8) and a fresh module of it, initialised
    from `weights` (a state dict, module or safetensors path of the fp32 model) if given.
    Train the module, then `compiled.freeze(module)`. `model` may be an fp32 package."""
    from tdsl.model.compiled import compile as compile_

    model, weights, params, entry = _from_package(model, weights, params, entry)
    pipeline = pipeline_for(precision, policy=policy, override=override, threshold=threshold,
                            per_channel=per_channel)
    compiled = compile_(model, entry=entry, params=params, pipeline=pipeline)
    module = compiled.to_torch()
    _load_weights(module, weights)
    return compiled, module


def calibration_op(kind: str, geometry: Mapping[str, Any]) -> tuple[Any, dict[str, Any] | None, int | None]:
    """How threshold calibration runs a weight's op: `calibrate_threshold`'s (op, op_kwargs,
    channel_axis). A kind calibration computes itself (`tdsl.quant.calibration.KINDS`: linear,
    conv2d, on sampled im2col rows) goes by name; any other weighted kind as the torch
    backend's call of that kind (`calls.weight_call`, the text the emitted module runs), its
    output channels on dim 1 when it has a geometry (a conv), else last."""
    from tdsl.backends.torch.calls import weight_call
    from tdsl.quant.calibration import KINDS

    if kind in KINDS:
        return kind, dict(geometry) or None, None
    return weight_call(kind, geometry), None, 1 if geometry else -1


def calibrate_thresholds(model: str | Path, module: nn.Module, layout: Mapping[str, Any],
                         batches: Iterable[Any], *, params: dict[str, Any] | None = None,
                         per_channel: bool = True, entry: str | None = None):
    """Per ternary weight, the Δ that minimises the layer's output error on `batches`
    (`tdsl.quant.calibration.calibrate_module` on the fp32 model holding `module`'s weights).
    Returns the CalibrationReport keyed by weight path (`layer1.0.conv1.weight`).

    Weights of the kinds calibration computes itself go to `calibrate_module`; the inputs of
    the other kinds' layers are recorded by hooks during that same run over `batches` and
    calibrated by their torch call (`calibration_op`)."""
    from tdsl.model.compiled import compile as compile_
    from tdsl.quant.calibration import KINDS, CalibrationReport, calibrate_module, calibrate_threshold

    fp32 = compile_(model, entry=entry, params=params, pipeline="shape-infer").to_torch()
    fp32.load_state_dict(module.state_dict(), strict=True)
    layers: dict[str, Any] = {}
    conv_kwargs: dict[str, dict[str, Any]] = {}
    others: dict[str, tuple[Any, Any]] = {}
    order: list[str] = []
    for s in layout.values():
        if s.role != "packed" or s.op is None:
            continue
        owner, _, name = s.latent_key.rpartition(".")
        sub = fp32.get_submodule(owner) if owner else fp32
        if name != "weight" or not hasattr(sub, "weight"):
            continue
        order.append(s.weight)
        if s.op in KINDS:
            layers[s.weight] = sub
            if s.op_kwargs:
                conv_kwargs[s.weight] = dict(s.op_kwargs)
        else:
            others[s.weight] = (sub, s)
    inputs: dict[str, list[Any]] = {path: [] for path in others}

    def recorder(path: str):
        def hook(_module: nn.Module, args: tuple) -> None:
            if args:
                inputs[path].append(args[0].detach())
        return hook

    handles = [sub.register_forward_pre_hook(recorder(path)) for path, (sub, _) in others.items()]
    try:
        report = calibrate_module(fp32, layers, batches, per_channel=per_channel, conv_kwargs=conv_kwargs)
    finally:
        for h in handles:
            h.remove()
    results = dict(report.layers)
    for path, (sub, s) in others.items():
        if not inputs[path]:
            raise TdslError(f"layer '{path.rpartition('.')[0]}' was not called by the model on the calibration batches")
        op, kwargs, axis = calibration_op(s.op, s.op_kwargs)
        results[path] = calibrate_threshold(sub.weight, inputs[path], op, kwargs, per_channel, channel_axis=axis)
    return CalibrationReport({path: results[path] for path in order})


def quantize(model: str | Path, *, precision: str = "ternary", policy: str = "default", override: str = "",
             threshold: str = "twn", per_channel: bool = True, format: str = "2bit",
             params: dict[str, Any] | None = None, weights: Any = None, calibrate: Iterable[Any] | None = None,
             entry: str | None = None) -> FrozenModel:
    """Post-training quantisation: compile `model` for `precision`, take the fp32
    `weights` (state dict, module or safetensors path; the model's own initialisation if
    None) and freeze. With `calibrate` (an iterable of input batches), each ternary
    layer's Δ is chosen by `tdsl.quant.calibration` to minimise its output error; the
    report (errors before with TWN and after) is `frozen.calibration`. `model` may be an fp32
    package (`tdsl.import_torch`), whose program and weights are used."""
    from tdsl.runtime.packing import check_format

    model, weights, params, entry = _from_package(model, weights, params, entry)
    check_format(format)
    compiled, module = qat(model, precision, policy=policy, override=override, threshold=threshold,
                           per_channel=per_channel, params=params, weights=weights, entry=entry)
    thresholds = None
    report = None
    if calibrate is not None:
        from tdsl.backends.torch.freeze import storage_layout
        from tdsl.model.compiled import frozen_program

        layout = storage_layout(frozen_program(compiled, format).module)
        report = calibrate_thresholds(model, module, layout, calibrate, params=params,
                                      per_channel=per_channel, entry=entry)
        thresholds = report.thresholds()
    from tdsl.model.frozen import freeze

    frozen = freeze(compiled, module, format=format, thresholds=thresholds, precision=precision)
    frozen.calibration = report
    return frozen


def quantize_all(model: str | Path, *, precisions: Iterable[str] = PIPELINE_ALL, **kwargs: Any) -> dict[str, FrozenModel]:
    """`quantize` at each precision (fp32 → fp16 → int8 → ternary → mixed) from the same
    fp32 weights: pass `weights`, or the first stage's initial weights are used for all."""
    from tdsl.model.compiled import compile as compile_

    if kwargs.get("weights") is None:
        kwargs["weights"] = compile_(model, entry=kwargs.get("entry"), params=kwargs.get("params"),
                                     pipeline="shape-infer").to_torch().state_dict()
    return {p: quantize(model, precision=p, **kwargs) for p in precisions}


def summary_table(frozen: Mapping[str, FrozenModel]) -> str:
    """One memory row per precision: stored bytes, fp32 bytes, ratio."""
    head = f"{'precision':<10} {'format':<7} {'bytes':>13} {'fp32 bytes':>13} {'ratio':>8} {'% of fp32':>10}"
    lines = [head, "-" * len(head)]
    for name, model in frozen.items():
        r = model.memory_report()
        fmt = model.format if any(s.role == "packed" for s in model.layout.values()) else "-"
        lines.append(f"{name:<10} {fmt:<7} {r.total:>13,} {r.fp32_total:>13,} {r.ratio:>7.2f}x "
                     f"{100 * r.total / r.fp32_total if r.fp32_total else 0:>9.2f}%")
    return "\n".join(lines)
