"""Choose each layer's ternary threshold Δ by the error it causes in the layer's output.

TWN's Δ = 0.7·mean|W| minimises the weight error ‖W − α·T‖² for Gaussian weights; real
layers have heavy-tailed weights and correlated inputs, where the Δ that keeps the
output f(x; α·T) closest to f(x; W) differs. `calibrate_threshold` searches Δ = m·mean|W|
over a grid of multipliers m (default 0.3, 0.4, …, 1.2, which contains TWN's 0.7, so the
result is never worse than TWN on the calibration data), then refines around the best m
in steps of 0.025. α follows the chosen scale rule for the chosen Δ (mean |W| over the
kept weights by default), so the result is applied with
`ternarize(w, "fixed", per_channel, threshold=result.threshold)`.

Per output channel the search picks m for every channel at once: output channel c of a
linear or conv2d layer depends only on weight row c, so the per-channel minima are
jointly optimal. Bias terms cancel in f(x; W) − f(x; α·T) and are left out.

Runs layers in torch, hence a torch module; `tdsl.quant` itself stays numpy-only.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tdsl.errors import TdslError
from tdsl.quant.ternary import SCALES
from tdsl.quant.torch_ste import ternarize_torch, threshold_torch

DEFAULT_MULTIPLIERS: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2)
REFINE_OFFSETS: tuple[float, ...] = (-0.075, -0.05, -0.025, 0.025, 0.05, 0.075)
KINDS = ("linear", "conv2d")

Op = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LayerCalibration:
    """The chosen Δ of one layer and the output errors before and after.

    Errors are sums of squared differences ‖f(x; W) − f(x; α·T)‖² over all calibration
    batches; `reference` is ‖f(x; W)‖² over the same outputs, for relative figures.
    """

    kind: str
    threshold: np.ndarray
    """float32 Δ, shape () or [out]."""
    multiplier: np.ndarray
    """Δ / mean|W| (per channel when `threshold` is), for comparison with TWN's 0.7."""
    error_before: float
    """Output error with TWN's default Δ = 0.7·mean|W|."""
    error_after: float
    reference: float
    sparsity_before: float
    sparsity: float

    @property
    def per_channel(self) -> bool:
        return self.threshold.ndim == 1

    @property
    def relative_before(self) -> float:
        return self.error_before / self.reference if self.reference else 0.0

    @property
    def relative_after(self) -> float:
        return self.error_after / self.reference if self.reference else 0.0


@dataclass(frozen=True)
class CalibrationReport:
    """Per-layer results of `calibrate_module`, by the names the caller gave."""

    layers: dict[str, LayerCalibration]

    @property
    def error_before(self) -> float:
        return sum(c.error_before for c in self.layers.values())

    @property
    def error_after(self) -> float:
        return sum(c.error_after for c in self.layers.values())

    def thresholds(self) -> dict[str, np.ndarray]:
        return {name: c.threshold for name, c in self.layers.items()}

    def __str__(self) -> str:
        lines = [f"{'layer':<24} {'kind':<7} {'rel.err TWN':>11} {'rel.err cal':>11} "
                 f"{'mult':>6} {'sparsity':>8}"]
        for name, c in self.layers.items():
            lines.append(f"{name:<24} {c.kind:<7} {c.relative_before:>11.4g} "
                         f"{c.relative_after:>11.4g} {float(np.mean(c.multiplier)):>6.3f} "
                         f"{c.sparsity:>8.3f}")
        return "\n".join(lines)


def calibrate_threshold(w: torch.Tensor | np.ndarray, x_batches: Iterable[torch.Tensor],
                        op: str | Op = "linear", op_kwargs: Mapping[str, object] | None = None,
                        per_channel: bool = False, channel_axis: int | None = None,
                        multipliers: Sequence[float] = DEFAULT_MULTIPLIERS, refine: bool = True,
                        scale: str = "mean_nonzero") -> LayerCalibration:
    """Δ for weight `w` that minimises the output error of `op` on `x_batches`.

    `op` is "linear" (F.linear, w of shape [out, in]), "conv2d" (F.conv2d with
    `op_kwargs` such as stride, padding, dilation, groups; w of shape [out, in/g, kh, kw])
    or a callable f(x, w). Per channel, `channel_axis` is the output's channel axis:
    -1 for linear, 1 for conv2d and, unless given, for a callable (which must then make
    output channel c depend on weight row c only).
    """
    kind, fn, axis = _resolve_op(op, dict(op_kwargs or {}), channel_axis)
    if scale not in SCALES:
        raise TdslError(f"unknown ternary scale '{scale}'; valid scales are {', '.join(SCALES)}")
    mults = np.asarray(multipliers, dtype=np.float64)
    if mults.ndim != 1 or mults.size == 0 or not np.all(np.isfinite(mults)) or np.any(mults < 0):
        raise TdslError(f"calibration multipliers must be a non-empty list of non-negative "
                        f"numbers, got {list(multipliers)}")
    w = torch.as_tensor(w).detach().to(torch.float32)
    if kind == "linear" and w.ndim != 2:
        raise TdslError(f"a linear layer needs a weight of rank 2, got shape {tuple(w.shape)}")
    if kind == "conv2d" and w.ndim != 4:
        raise TdslError(f"a conv2d layer needs a weight of rank 4, got shape {tuple(w.shape)}")
    xs = [torch.as_tensor(x).detach() for x in x_batches]
    if not xs:
        raise TdslError("calibration needs at least one input batch")
    with torch.no_grad():
        return _search(kind, fn, axis, w, xs, per_channel, mults, refine, scale)


def calibrate_module(model: nn.Module, layers: Mapping[str, nn.Module], batches: Iterable[object],
                     per_channel: bool = False, multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
                     refine: bool = True, scale: str = "mean_nonzero",
                     conv_kwargs: Mapping[str, Mapping[str, object]] | None = None) -> CalibrationReport:
    """Calibrate Δ for every named layer of `model` on its own inputs.

    Each layer module must hold its float weight as `weight`; its kind follows the rank:
    2 → linear, 4 → conv2d with the module's `stride`, `padding`, `dilation` and `groups`
    attributes where present (torch defaults otherwise), overridden by `conv_kwargs[name]`
    (emitted tdsl layers bake these into their source, so pass them there). A forward
    pre-hook records the first positional input of each layer while the float model runs
    every batch in eval mode (a tensor batch is `model(batch)`, a tuple `model(*batch)`,
    a dict `model(**batch)`); the layer's forward must apply its weight to that input.
    All layers see float inputs (no layer is quantised while another is calibrated).
    """
    conv_kwargs = conv_kwargs or {}
    unknown = sorted(set(conv_kwargs) - set(layers))
    if unknown:
        raise TdslError(f"conv_kwargs names unknown layer(s) {', '.join(unknown)}")
    specs = {name: _layer_spec(name, module, conv_kwargs.get(name, {})) for name, module in layers.items()}
    inputs: dict[str, list[torch.Tensor]] = {name: [] for name in layers}

    def recorder(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            if args and isinstance(args[0], torch.Tensor):
                inputs[name].append(args[0].detach())
        return hook

    handles = [module.register_forward_pre_hook(recorder(name)) for name, module in layers.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                if isinstance(batch, Mapping):
                    model(**batch)
                elif isinstance(batch, (tuple, list)):
                    model(*batch)
                else:
                    model(batch)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    results = {}
    for name, (kind, weight, kwargs) in specs.items():
        if not inputs[name]:
            raise TdslError(f"layer '{name}' was not called with a tensor input by the model "
                            f"on the calibration batches")
        results[name] = calibrate_threshold(weight, inputs[name], kind, kwargs, per_channel,
                                            multipliers=multipliers, refine=refine, scale=scale)
    return CalibrationReport(results)


def _resolve_op(op: str | Op, kwargs: dict[str, object],
                channel_axis: int | None) -> tuple[str, Op, int]:
    if callable(op):
        return "custom", lambda x, w: op(x, w, **kwargs), 1 if channel_axis is None else channel_axis
    if op == "linear":
        if kwargs:
            raise TdslError(f"a linear layer takes no op_kwargs, got {', '.join(sorted(kwargs))}")
        return "linear", F.linear, -1 if channel_axis is None else channel_axis
    if op == "conv2d":
        allowed = {"stride", "padding", "dilation", "groups"}
        extra = sorted(set(kwargs) - allowed)
        if extra:
            raise TdslError(f"unknown conv2d option(s) {', '.join(extra)}; "
                            f"valid ones are dilation, groups, padding, stride")
        return "conv2d", lambda x, w: F.conv2d(x, w, None, **kwargs), 1 if channel_axis is None else channel_axis
    raise TdslError(f"unknown layer kind '{op}'; valid kinds are {', '.join(KINDS)} or a callable f(x, w)")


def _layer_spec(name: str, module: nn.Module,
                overrides: Mapping[str, object]) -> tuple[str, torch.Tensor, dict[str, object]]:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise TdslError(f"layer '{name}' has no tensor attribute 'weight'")
    if weight.ndim == 2:
        if overrides:
            raise TdslError(f"layer '{name}' is linear (rank-2 weight) and takes no conv_kwargs")
        return "linear", weight, {}
    if weight.ndim == 4:
        kwargs = {k: getattr(module, k) for k in ("stride", "padding", "dilation", "groups")
                  if hasattr(module, k)}
        kwargs.update(overrides)
        return "conv2d", weight, kwargs
    raise TdslError(f"layer '{name}' has a weight of rank {weight.ndim}; calibration handles "
                    f"rank 2 (linear) and rank 4 (conv2d)")


def _search(kind: str, fn: Op, axis: int, w: torch.Tensor, xs: list[torch.Tensor],
            per_channel: bool, mults: np.ndarray, refine: bool, scale: str) -> LayerCalibration:
    try:
        refs = [fn(x.to(w.dtype), w) for x in xs]
    except RuntimeError as e:
        raise TdslError(f"calibration inputs of shape {tuple(xs[0].shape)} do not fit the "
                        f"{kind} weight of shape {tuple(w.shape)}: {e}") from None
    reduce_dims = [d for d in range(refs[0].ndim) if d != axis % refs[0].ndim]

    def errors(delta: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Output error per channel (or total) for Δ, and the sparsity it gives."""
        trits, alpha, _ = ternarize_torch(w, "fixed", per_channel, threshold=delta, scale=scale)
        a = alpha.reshape(alpha.shape + (1,) * (w.ndim - 1)) if per_channel else alpha
        wq = trits.to(torch.float32) * a
        total = torch.zeros(w.shape[0] if per_channel else (), dtype=torch.float64)
        for x, ref in zip(xs, refs):
            diff = (ref - fn(x.to(w.dtype), wq)).double() ** 2
            total += diff.sum(dim=reduce_dims) if per_channel else diff.sum()
        return total, float((trits == 0).float().mean()) if trits.numel() else 0.0

    rows = w.reshape(w.shape[0], -1) if per_channel else w.reshape(1, -1)
    n = rows.shape[1]
    mean = rows.abs().double().sum(dim=1) / n if n else torch.zeros(rows.shape[0], dtype=torch.float64)
    mean = mean if per_channel else mean[0]

    def delta_for(m: torch.Tensor) -> torch.Tensor:
        return (m * mean).to(torch.float32)

    before, sparsity_before = errors(threshold_torch(w, "twn", per_channel))
    grid = torch.as_tensor(mults, dtype=torch.float64)
    best_m, best_err = _best(grid, lambda m: errors(delta_for(m))[0], mean.shape)
    if refine:
        cands = [(best_m + o).clamp(min=0) for o in REFINE_OFFSETS]
        for m in cands:
            err = errors(delta_for(m))[0]
            better = err < best_err
            best_m, best_err = torch.where(better, m, best_m), torch.where(better, err, best_err)
    chosen = delta_for(best_m)
    after, sparsity = errors(chosen)
    return LayerCalibration(kind=kind, threshold=chosen.numpy(), multiplier=best_m.numpy(),
                            error_before=float(before.sum()), error_after=float(after.sum()),
                            reference=float(sum(float((r.double() ** 2).sum()) for r in refs)),
                            sparsity_before=sparsity_before, sparsity=sparsity)


def _best(grid: torch.Tensor, error: Callable[[torch.Tensor], torch.Tensor],
          shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """The grid multiplier with the least error, elementwise over channels."""
    best_m = torch.full(shape, float(grid[0]), dtype=torch.float64)
    best_err = error(best_m)
    for g in grid[1:]:
        m = torch.full(shape, float(g), dtype=torch.float64)
        err = error(m)
        better = err < best_err
        best_m, best_err = torch.where(better, m, best_m), torch.where(better, err, best_err)
    return best_m, best_err
