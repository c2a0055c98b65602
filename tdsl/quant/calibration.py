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

Cost. The output error is linear in the weight error D = W − α·T, so for linear and conv2d
layers it is ‖P·Dᵀ‖² over the rows P of the layer's input (its im2col patches for a conv):
one GEMM per candidate Δ on those rows, no convolution over whole feature maps. The sum
runs over at most `positions` output positions (rows of a linear's input, output pixels of
a conv), drawn at random with a fixed seed from all batches when there are more: a
ResNet-18 at 224² has ~100k output pixels per early layer in four batches of 8, and
re-running every layer's convolution for each of the 18 evaluated Δ took ~50 s; on 512
positions it takes seconds, and the Δ chosen keeps the full-data output error within ~1 % of
the exhaustive search's (measured on ResNet-18 layer1, layer3 and layer4 convs: relative
errors 0.0268 vs 0.0267, 0.0390 vs 0.0387, 0.0151 vs 0.0150, where TWN's Δ gives 0.13-0.15).
`positions=None` sums over all of them. A callable `op` is run as given, on all inputs.

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
from tdsl.quant.torch_ste import threshold_torch

DEFAULT_MULTIPLIERS: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2)
REFINE_OFFSETS: tuple[float, ...] = (-0.075, -0.05, -0.025, 0.025, 0.05, 0.075)
DEFAULT_POSITIONS = 512
"""Output positions the error is summed over per layer (module docstring, "Cost")."""
_SAMPLE_SEED = 0
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


def calibrate_threshold(w: torch.Tensor | np.ndarray, x_batches: Iterable[torch.Tensor | np.ndarray],
                        op: str | Op = "linear", op_kwargs: Mapping[str, object] | None = None,
                        per_channel: bool = False, channel_axis: int | None = None,
                        multipliers: Sequence[float] = DEFAULT_MULTIPLIERS, refine: bool = True,
                        scale: str = "mean_nonzero", positions: int | None = DEFAULT_POSITIONS) -> LayerCalibration:
    """Δ for weight `w` that minimises the output error of `op` on `x_batches` (torch
    tensors or numpy arrays).

    `op` is "linear" (F.linear, w of shape [out, in]), "conv2d" (F.conv2d with
    `op_kwargs` such as stride, padding, dilation, groups; w of shape [out, in/g, kh, kw])
    or a callable f(x, w). Per channel, `channel_axis` is the output's channel axis:
    -1 for linear, 1 for conv2d and, unless given, for a callable (which must then make
    output channel c depend on weight row c only). `positions` bounds the output positions
    the error sums over (module docstring, "Cost"); None sums over all.
    """
    kind, fn, axis, kwargs = _resolve_op(op, dict(op_kwargs or {}), channel_axis)
    if scale not in SCALES:
        raise TdslError(f"unknown ternary scale '{scale}'; valid scales are {', '.join(SCALES)}")
    mults = np.asarray(multipliers, dtype=np.float64)
    if mults.ndim != 1 or mults.size == 0 or not np.all(np.isfinite(mults)) or np.any(mults < 0):
        raise TdslError(f"calibration multipliers must be a non-empty list of non-negative "
                        f"numbers, got {list(multipliers)}")
    if positions is not None and (isinstance(positions, bool) or not isinstance(positions, int) or positions < 1):
        raise TdslError(f"calibration positions must be a positive integer or None, got {positions!r}")
    w = torch.as_tensor(w).detach().to(torch.float32)
    if kind == "linear" and w.ndim != 2:
        raise TdslError(f"a linear layer needs a weight of rank 2, got shape {tuple(w.shape)}")
    if kind == "conv2d" and w.ndim != 4:
        raise TdslError(f"a conv2d layer needs a weight of rank 4, got shape {tuple(w.shape)}")
    if not bool(torch.isfinite(w).all()):
        raise TdslError(f"calibration needs finite weights; the {kind} weight of shape {tuple(w.shape)} "
                        "holds NaN or infinite values")
    xs = [_as_tensor(x, f"calibration input {i}") for i, x in enumerate(_batch_list(x_batches))]
    if not xs:
        raise TdslError("calibration needs at least one input batch")
    with torch.no_grad():
        if kind == "custom":
            error = _callable_error(fn, axis, w, xs, per_channel)
        else:
            error = _gemm_error(kind, kwargs, w, xs, positions)
        return _search(kind, error, w, per_channel, mults, refine, scale)


def calibrate_module(model: nn.Module, layers: Mapping[str, nn.Module], batches: Iterable[object],
                     per_channel: bool = False, multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
                     refine: bool = True, scale: str = "mean_nonzero",
                     conv_kwargs: Mapping[str, Mapping[str, object]] | None = None,
                     positions: int | None = DEFAULT_POSITIONS) -> CalibrationReport:
    """Calibrate Δ for every named layer of `model` on its own inputs.

    Each layer module must hold its float weight as `weight`; its kind follows the rank:
    2 → linear, 4 → conv2d with the module's `stride`, `padding`, `dilation` and `groups`
    attributes where present (torch defaults otherwise), overridden by `conv_kwargs[name]`
    (emitted tdsl layers bake these into their source, so pass them there). A forward
    pre-hook records the first positional input of each layer while the float model runs
    every batch in eval mode (a tensor or numpy batch is `model(batch)`, a tuple or list
    `model(*batch)`, a dict `model(**batch)`; numpy arrays become tensors, floating ones
    float32; one bare array is one batch); the layer's forward must apply its weight to
    that input. All layers see float inputs (no layer is quantised while another is calibrated).
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
    count = 0
    try:
        with torch.no_grad():
            for i, batch in enumerate(_batch_list(batches)):
                _run_batch(model, _as_inputs(batch, f"calibration batch {i}"), i)
                count += 1
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not count:
        raise TdslError("calibration needs at least one input batch")
    results = {}
    for name, (kind, weight, kwargs) in specs.items():
        if not inputs[name]:
            raise TdslError(f"layer '{name}' was not called with a tensor input by the model "
                            f"on the calibration batches")
        results[name] = calibrate_threshold(weight, inputs[name], kind, kwargs, per_channel,
                                            multipliers=multipliers, refine=refine, scale=scale,
                                            positions=positions)
    return CalibrationReport(results)


def _batch_list(batches: Iterable[object]) -> Iterable[object]:
    """`batches`, or [batches] when it is one array (iterating it would yield samples)."""
    if isinstance(batches, (np.ndarray, torch.Tensor)):
        return [batches]
    if isinstance(batches, (str, bytes)) or not isinstance(batches, Iterable):
        raise TdslError(f"calibration batches must be an iterable of arrays, got {type(batches).__name__}")
    return batches


def _as_tensor(x: object, what: str) -> torch.Tensor:
    """A torch tensor of `x` (numpy arrays as deployment takes them; floating ones as float32)."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        if x.dtype.kind == "f":
            return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if x.dtype.kind in "iub":
            return torch.from_numpy(np.ascontiguousarray(x))
        raise TdslError(f"{what}: a numpy array of dtype {x.dtype} is not a model input (floating, integer or bool)")
    raise TdslError(f"{what} must be a torch tensor or a numpy array, got {type(x).__name__}")


def _as_inputs(batch: object, what: str) -> object:
    """One calibration batch with its arrays as tensors, keeping its tuple/list/dict shape."""
    if isinstance(batch, Mapping):
        return {k: _as_tensor(v, f"{what}['{k}']") for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return tuple(_as_tensor(v, f"{what}[{j}]") for j, v in enumerate(batch))
    return _as_tensor(batch, what)


def _run_batch(model: nn.Module, batch: object, index: int) -> None:
    try:
        if isinstance(batch, Mapping):
            model(**batch)
        elif isinstance(batch, tuple):
            model(*batch)
        else:
            model(batch)
    except (RuntimeError, TypeError, ValueError) as e:
        shapes = ([tuple(v.shape) for v in batch.values()] if isinstance(batch, Mapping) else
                  [tuple(v.shape) for v in batch] if isinstance(batch, tuple) else tuple(batch.shape))  # type: ignore[union-attr]
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TdslError(f"calibration batch {index} of shape {shapes} does not fit the model: {first}") from None


def _resolve_op(op: str | Op, kwargs: dict[str, object],
                channel_axis: int | None) -> tuple[str, Op, int, dict[str, object]]:
    if callable(op):
        return "custom", lambda x, w: op(x, w, **kwargs), 1 if channel_axis is None else channel_axis, kwargs
    if op == "linear":
        if kwargs:
            raise TdslError(f"a linear layer takes no op_kwargs, got {', '.join(sorted(kwargs))}")
        return "linear", F.linear, -1 if channel_axis is None else channel_axis, kwargs
    if op == "conv2d":
        allowed = {"stride", "padding", "dilation", "groups"}
        extra = sorted(set(kwargs) - allowed)
        if extra:
            raise TdslError(f"unknown conv2d option(s) {', '.join(extra)}; "
                            f"valid ones are dilation, groups, padding, stride")
        return ("conv2d", lambda x, w: F.conv2d(x, w, None, **kwargs), 1 if channel_axis is None else channel_axis,
                kwargs)
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


ErrorFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(kept [rows, K] bool, α [rows] float32) of the quantised weight α·sign(W)·kept (rows: one
per channel, or one for the tensor) -> float64 squared output error per output channel [out]."""


def _quantised(w: torch.Tensor, kept: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """α·T in w's shape."""
    rows = w.reshape(kept.shape)
    return (torch.sign(rows) * kept * alpha.reshape(-1, 1)).reshape(w.shape)


def _pair(v: object) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))  # type: ignore[index, call-overload]


def _fit_error(kind: str, x: torch.Tensor, w: torch.Tensor, detail: str) -> TdslError:
    return TdslError(f"calibration inputs of shape {tuple(x.shape)} do not fit the {kind} weight of shape "
                     f"{tuple(w.shape)}{detail}")


def _sample(counts: list[int], positions: int | None) -> list[torch.Tensor]:
    """Per batch, the sorted indices of its output positions that the error sums over."""
    total = sum(counts)
    if positions is None or total <= positions:
        return [torch.arange(n) for n in counts]
    chosen = torch.randperm(total, generator=torch.Generator().manual_seed(_SAMPLE_SEED))[:positions].sort().values
    starts = np.cumsum([0] + counts)
    return [chosen[(chosen >= a) & (chosen < b)] - a for a, b in zip(starts[:-1], starts[1:])]


def _linear_rows(w: torch.Tensor, xs: list[torch.Tensor], positions: int | None) -> torch.Tensor:
    """[1, n, in]: the sampled input rows."""
    flat = []
    for x in xs:
        if x.ndim == 0 or x.shape[-1] != w.shape[1]:
            raise _fit_error("linear", x, w, "")
        flat.append(x.reshape(-1, w.shape[1]).to(torch.float32))
    picks = _sample([f.shape[0] for f in flat], positions)
    return torch.cat([f[i] for f, i in zip(flat, picks)])[None]


def _conv_patches(w: torch.Tensor, xs: list[torch.Tensor], kwargs: Mapping[str, object],
                  positions: int | None) -> torch.Tensor:
    """[groups, n, in/g·kh·kw]: the im2col patches of the sampled output pixels, gathered
    directly from the padded input (no full im2col copy)."""
    groups = int(kwargs.get("groups", 1))  # type: ignore[call-overload]
    (sh, sw), (dh, dw) = _pair(kwargs.get("stride", 1)), _pair(kwargs.get("dilation", 1))
    out, cg, kh, kw = w.shape
    padding = kwargs.get("padding", 0)
    if padding == "valid":
        pads = (0, 0, 0, 0)
    elif padding == "same":
        th, tw = dh * (kh - 1), dw * (kw - 1)
        pads = (tw // 2, tw - tw // 2, th // 2, th - th // 2)
    else:
        ph, pw = _pair(padding)
        pads = (pw, pw, ph, ph)
    if groups < 1 or out % groups:
        raise TdslError(f"conv2d groups={groups} does not divide the weight's {out} output channels")
    padded, grids = [], []
    for x in xs:
        x4 = x[None] if x.ndim == 3 else x
        if x4.ndim != 4 or x4.shape[1] != cg * groups:
            raise _fit_error("conv2d", x, w, f" with groups={groups}")
        xp = F.pad(x4.to(torch.float32), pads)
        ho = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
        wo = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
        if ho < 1 or wo < 1:
            raise _fit_error("conv2d", x, w, ": the kernel is larger than the padded input")
        padded.append(xp)
        grids.append((xp.shape[0], ho, wo))
    picks = _sample([b * ho * wo for b, ho, wo in grids], positions)
    ky, kx = torch.arange(kh) * dh, torch.arange(kw) * dw
    rows = []
    for xp, (_, ho, wo), idx in zip(padded, grids, picks):
        b, rest = idx // (ho * wo), idx % (ho * wo)
        oy, ox = rest // wo, rest % wo
        r = (oy * sh)[:, None] + ky[None]                           # [n, kh]
        c = (ox * sw)[:, None] + kx[None]                           # [n, kw]
        patch = xp[b[:, None, None], :, r[:, :, None], c[:, None, :]]  # [n, kh, kw, C]
        rows.append(patch.permute(0, 3, 1, 2).reshape(idx.numel(), groups, cg * kh * kw))
    return torch.cat(rows).transpose(0, 1).contiguous()


def _gemm_error(kind: str, kwargs: Mapping[str, object], w: torch.Tensor, xs: list[torch.Tensor],
                positions: int | None) -> ErrorFn:
    """The squared output error of a linear or conv2d layer as ‖P·Dᵀ‖² per channel."""
    patches = _linear_rows(w, xs, positions) if kind == "linear" else _conv_patches(w, xs, kwargs, positions)
    groups = patches.shape[0]

    rows = w.reshape(w.shape[0], -1)
    signed = torch.sign(rows)

    def error(kept: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        # D = W − α·T: W − α·sign(W) where kept, W elsewhere (the same float32 values as W − α·T)
        a = alpha.reshape(-1, 1)
        d = torch.where(kept.reshape(rows.shape), rows - signed * a, rows)
        dg = d.reshape(groups, w.shape[0] // groups, -1).transpose(1, 2)           # [g, K/g, out/g]
        y = torch.bmm(patches, dg)                                          # [g, n, out/g]
        return (y * y).sum(dim=1, dtype=torch.float64).reshape(-1)

    return error


def _callable_error(fn: Op, axis: int, w: torch.Tensor, xs: list[torch.Tensor], per_channel: bool) -> ErrorFn:
    """The squared output error of a callable op, f(x; W) − f(x; α·T) on every input."""
    try:
        refs = [fn(x.to(w.dtype), w) for x in xs]
    except RuntimeError as e:
        raise TdslError(f"calibration inputs of shape {tuple(xs[0].shape)} do not fit the "
                        f"custom weight of shape {tuple(w.shape)}: {e}") from None
    reduce_dims = [dim for dim in range(refs[0].ndim) if dim != axis % refs[0].ndim]

    def error(kept: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        wq = _quantised(w, kept, alpha)
        total = torch.zeros(w.shape[0] if per_channel else (), dtype=torch.float64)
        for x, ref in zip(xs, refs):
            diff = (ref - fn(x.to(w.dtype), wq)).double() ** 2
            total += diff.sum(dim=reduce_dims) if per_channel else diff.sum()
        return total

    return error


def _search(kind: str, error: ErrorFn, w: torch.Tensor, per_channel: bool, mults: np.ndarray, refine: bool,
            scale: str) -> LayerCalibration:
    rows = w.reshape(w.shape[0], -1) if per_channel else w.reshape(1, -1)
    n = rows.shape[1]
    magnitude = rows.abs()
    mean = magnitude.double().sum(dim=1) / n if n else torch.zeros(rows.shape[0], dtype=torch.float64)
    absmean = mean.to(torch.float32)
    # α for any Δ from one sort: the kept weights of a row are its largest magnitudes
    ordered = magnitude.sort(dim=1).values
    prefix = torch.cat([torch.zeros(rows.shape[0], 1, dtype=torch.float64), ordered.double().cumsum(dim=1)], dim=1)

    def quantised(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(kept, α, sparsity) of `ternarize_torch(w, "fixed", ...)` (zero iff |w| <= Δ, α the
        float64 mean of the kept |w| as float32) without its per-call checks and masked sums."""
        d = delta.reshape(-1, 1).expand(rows.shape[0], 1).contiguous()
        dropped = torch.searchsorted(ordered, d, right=True)                 # [rows, 1]: |w| <= Δ
        count = n - dropped[:, 0]
        if scale == "absmean":
            alpha = absmean
        else:
            total = prefix[:, -1] - prefix.gather(1, dropped)[:, 0]
            alpha = torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total)).to(torch.float32)
        sparsity = 1.0 - float(count.sum()) / rows.numel() if rows.numel() else 0.0
        return magnitude > d, alpha, sparsity

    def errors(delta: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Output error per channel (or total) for Δ, and the sparsity it gives."""
        kept, alpha, sparsity = quantised(delta)
        per = error(kept, alpha)
        return (per if per_channel else per.sum()), sparsity

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
    _, _, sparsity = quantised(chosen)
    nothing = torch.zeros(rows.shape, dtype=torch.bool)
    return LayerCalibration(kind=kind, threshold=chosen.numpy(), multiplier=best_m.numpy(),
                            error_before=float(before.sum()), error_after=float(best_err.sum()),
                            reference=float(error(nothing, torch.zeros(rows.shape[0])).sum()),
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
