"""Training recipes for ternary networks: how a QAT run is initialised, quantised and supervised.

A recipe is a `+`-joined set of parts, each a small composable function below:

| part | what it does |
|---|---|
| `scratch` | QAT from the model's own initialisation (no part needed; the empty recipe) |
| `finetune` | QAT initialised from an FP32 state dict / checkpoint (`init`), the usual practice |
| `learned_scale` | TTQ (Zhu et al. 2017): learned positive/negative scales Wp, Wn per output channel |
| `shared_scale` | TTQ with Wp = Wn: one learned scale per output channel, what the packed format stores |
| `calibrate` | before QAT, pick each ternary layer's Δ by its output error on a few batches (`tdsl.quant.calibration`); needs trained weights, so it implies `finetune` |
| `distill` | knowledge distillation from the FP32 teacher: α·CE + (1−α)·T²·KL(teacher_T ‖ student_T) |
| `long` | a longer schedule (× `long_factor` epochs) with cosine decay after a linear warm-up |
| `progressive` | the input layer's quantiser fades in: λ·α·T + (1−λ)·w, λ rising linearly from 0 to 1 over the first `progressive_fraction` of the steps, then α·T alone |
| `optimal_delta` | the input layer's Δ is the error-optimal one (`optimal` rule of `tdsl.quant.thresholds`) instead of TWN's 0.7·mean|w| |
| `fixed_input` | the input layer is ternarised once from the FP32 weights (`init`) with the error-optimal Δ and kept fixed (not trained); implies `finetune` |

`auto` (`tdsl train --recipe auto`) names the recipe measured best for the precision policy
(`recommended`; docs/results/ACCURACY.md, issue 22): `scratch` for the `default` policy; for
`all`, `fixed_input` when FP32 weights are given (`--init`: on held-out MNIST-1D data 0.9 points
below FP32 over 3 seeds, 0.8 on the default data), else `optimal_delta`, which trains from scratch
(4.0 below FP32 on the held-out data, 0.8 above `scratch` there and 0.9 below it on the default
data: no from-scratch recipe measured closes the gap).

`Recipe.parse("finetune+distill+long")` builds one; `prepare(...)` applies it to a compiled
QAT module and returns a `Prepared` run (module, config, loss), `train_recipe(...)` also
trains it. The `tdsl train` CLI selects one with `--recipe` (`--init`, `--teacher`).

**The quantiser hook.** The emitted QAT module computes α·T inline in each ternary layer's
forward (`_rt.ternarize_ste(self.weight, method=…, per_channel=…)`), so it cannot carry learned
Wp/Wn or a calibrated per-layer Δ. `install_quantizer` gives the generated module's namespace a
proxy of the runtime whose `ternarize_ste` looks the latent weight up (by identity) in a
registry and applies the registered quantiser, falling back to the emitted rule for every other
weight. The hook is per generated module (each `to_torch()` loads a fresh one) and per
parameter object; the module's parameter names and forward are unchanged. TTQ's scales are
child modules of the layer that owns the weight (`conv2.weight_ttq.wp`, `.wn`), so the
optimizer and checkpoints see them.

**The input layer** (the program's first weight: `conv1` of the zoo models) is the one an
all-ternary model loses most on: a 1-input-channel 5-tap filter has 5 weights per scale, so
TWN's Gaussian rule is a poor fit and a trit flip moves the whole layer's output. Under the
`default` policy it is kept at fp16 and the two input-layer parts do nothing. `progressive`
lets the rest of the network learn on a float input layer first, then hands it over to the
ternary one, which the run finishes with (so the frozen model is the trained one); the fade
follows the trainer's step (`Trainer(step_hooks=…)`), so a resumed run continues it.

**Freezing.** `Prepared.freeze()` gives the deployment form. A calibrated run freezes with
Δ = m·mean|w| (its calibrated multipliers on the final weights), the rule it trained with, so
the frozen trits equal the trained ones. The packed format stores one scale per output
channel: a `shared_scale` model freezes exactly (its learned scale becomes the stored scale);
an asymmetric TTQ model (two scales) freezes with its trits and the scale (Wp + Wn)/2, which
is NOT the model it trained (compare its frozen accuracy), and `extra_scale_bytes` counts the
second scale a faithful deployment would need.
"""  # noqa: E501 (one Markdown table row per line)
from __future__ import annotations

import sys
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tdsl.errors import TdslError

PARTS = ("scratch", "finetune", "learned_scale", "shared_scale", "calibrate", "progressive", "optimal_delta",
         "fixed_input", "distill", "long")
DESCRIPTIONS = {
    "scratch": "QAT from scratch",
    "finetune": "QAT fine-tuning from an FP32 checkpoint",
    "learned_scale": "learned positive/negative scales (TTQ)",
    "shared_scale": "one learned scale per channel (TTQ with Wp = Wn)",
    "calibrate": "output-error threshold calibration before QAT",
    "distill": "knowledge distillation from the FP32 teacher",
    "long": "longer cosine schedule with linear warm-up",
    "progressive": "the input layer's ternary quantiser fades in over the first steps",
    "optimal_delta": "the input layer's threshold minimises its quantisation error",
    "fixed_input": "the input layer is ternarised once from the FP32 weights and kept fixed",
}


# ----- the recipe ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """Which parts a run uses, and their knobs."""

    finetune: bool = False
    learned_scale: bool = False
    shared_scale: bool = False
    calibrate: bool = False
    distill: bool = False
    long: bool = False
    progressive: bool = False
    optimal_delta: bool = False
    fixed_input: bool = False
    kd_alpha: float = 0.5            # weight of the hard-label CE in the distillation loss
    kd_temperature: float = 4.0
    long_factor: float = 2.0         # `long`: epochs multiplied by this
    warmup_fraction: float = 0.05    # `long`: linear warm-up over this fraction of the steps
    calib_batches: int = 4           # `calibrate`: batches of the training set
    calib_batch_size: int = 256
    progressive_fraction: float = 0.5  # `progressive`: the fade lasts this fraction of the steps

    @classmethod
    def parse(cls, text: str | Recipe, **options: Any) -> Recipe:
        """`scratch`, `finetune`, `finetune+distill+long`, … (order does not matter)."""
        if isinstance(text, Recipe):
            return replace(text, **options) if options else text
        parts = [p.strip().replace("-", "_") for p in str(text).split("+") if p.strip()]
        if not parts:
            raise TdslError("empty recipe; valid parts are " + ", ".join(PARTS))
        flags: dict[str, bool] = {}
        for p in parts:
            if p not in PARTS:
                from tdsl.errors import did_you_mean
                raise TdslError(f"unknown recipe part '{p}'{did_you_mean(p, PARTS)}; valid parts are "
                                + ", ".join(PARTS) + " (join them with '+')")
            if p != "scratch":
                flags[p] = True
        if "scratch" in parts and (flags.get("finetune") or flags.get("calibrate") or flags.get("fixed_input")):
            raise TdslError(f"recipe '{text}': 'scratch' contradicts 'finetune'/'calibrate'/'fixed_input' "
                            "(which start from an FP32 checkpoint)")
        if flags.get("calibrate") or flags.get("fixed_input"):
            flags["finetune"] = True  # Δ calibrated on random weights, or trits of random weights, mean nothing
        if sum(bool(flags.get(p)) for p in ("learned_scale", "shared_scale", "calibrate")) > 1:
            raise TdslError("'learned_scale', 'shared_scale' and 'calibrate' each replace the quantiser; use one")
        replacing = [p for p in ("learned_scale", "shared_scale", "calibrate") if flags.get(p)]
        first = [p for p in ("progressive", "optimal_delta", "fixed_input") if flags.get(p)]
        if flags.get("fixed_input") and len(first) > 1:
            raise TdslError(f"'fixed_input' keeps the input layer's trits fixed, '{first[0]}' trains them; use one")
        if replacing and first:
            raise TdslError(f"'{replacing[0]}' replaces every layer's quantiser, '{first[0]}' the input layer's; use one")
        recipe = cls(**flags, **options)
        recipe.validate()
        return recipe

    def validate(self) -> None:
        if not 0.0 <= self.kd_alpha <= 1.0:
            raise TdslError(f"kd_alpha must be in [0, 1], got {self.kd_alpha}")
        if not self.kd_temperature > 0:
            raise TdslError(f"kd_temperature must be positive, got {self.kd_temperature}")
        if not self.long_factor >= 1.0:
            raise TdslError(f"long_factor must be >= 1, got {self.long_factor}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise TdslError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.calib_batches < 1 or self.calib_batch_size < 1:
            raise TdslError("calibration needs at least one batch of at least one sample")
        if not 0.0 < self.progressive_fraction < 1.0:
            raise TdslError(f"progressive_fraction must be in (0, 1), got {self.progressive_fraction}")

    @property
    def parts(self) -> list[str]:
        names = [p for p in PARTS[1:] if getattr(self, p)]
        if (self.calibrate or self.fixed_input) and "finetune" in names:
            names.remove("finetune")  # implied
        return names or ["scratch"]

    @property
    def name(self) -> str:
        return "+".join(self.parts)

    @property
    def needs_init(self) -> bool:
        return self.finetune or self.calibrate or self.fixed_input


# ----- state dicts --------------------------------------------------------------------------


def recommended(policy: str, init: bool = False) -> str:
    """The `auto` recipe: the best measured for `policy` (docs/results/ACCURACY.md, issue 22).

    Under `all`, `fixed_input` when FP32 weights are given (`init`): it needs them; without,
    `optimal_delta` (on par with `scratch` over two MNIST-1D data seeds)."""
    if policy != "all":
        return "scratch"
    return "fixed_input" if init else "optimal_delta"


def load_state(source: Any) -> dict[str, torch.Tensor]:
    """A state dict from a dict, an `nn.Module`, a `.safetensors` file, or a `tdsl train`
    checkpoint folder (or its `checkpoints/` folder: the latest)."""
    if source is None:
        raise TdslError("no weights given")
    if isinstance(source, nn.Module):
        return {k: v.detach().clone() for k, v in source.state_dict().items()}
    if isinstance(source, Mapping):
        return {k: torch.as_tensor(v) for k, v in source.items()}
    path = Path(source)
    if path.is_file() and path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    from tdsl.train.checkpoint import load_checkpoint
    return dict(load_checkpoint(path).model)


def finetune(module: nn.Module, init: Any) -> nn.Module:
    """Load FP32 weights into the QAT module (same parameter names), strictly."""
    state = load_state(init)
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise TdslError("the FP32 weights do not fit the QAT model: "
                        + "; ".join(s for s in (f"missing {', '.join(missing[:5])}" if missing else "",
                                                f"unexpected {', '.join(unexpected[:5])}" if unexpected else "")
                                    if s))
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise TdslError(f"the FP32 weight '{k}' has shape {tuple(v.shape)}, the model needs {tuple(own[k].shape)}")
    module.load_state_dict(state, strict=True)
    return module


# ----- the quantiser hook -------------------------------------------------------------------


class _HookedRuntime:
    """Stands in for `tdsl.backends.torch.runtime` in one generated module's namespace."""

    def __init__(self, runtime: Any):
        self._runtime = runtime
        self._quantizers: dict[int, tuple[weakref.ref, Callable[[torch.Tensor], torch.Tensor]]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runtime, name)

    def register(self, weight: nn.Parameter, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self._quantizers[id(weight)] = (weakref.ref(weight), fn)

    def ternarize_ste(self, w: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        entry = self._quantizers.get(id(w))
        if entry is not None and entry[0]() is w:
            return entry[1](w)
        return self._runtime.ternarize_ste(w, *args, **kwargs)


def install_quantizer(module: nn.Module, weight_key: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Make the ternary layer owning `weight_key` (`conv2.weight`) quantise with `fn(w)`."""
    owner_path, _, name = weight_key.rpartition(".")
    owner = module.get_submodule(owner_path) if owner_path else module
    weight = getattr(owner, name, None)
    if not isinstance(weight, nn.Parameter):
        raise TdslError(f"'{weight_key}' is not a parameter of the model")
    namespace = sys.modules.get(type(owner).__module__)
    runtime = getattr(namespace, "_rt", None)
    if runtime is None:
        raise TdslError(f"'{owner_path}' is not a tdsl-generated layer; cannot hook its quantiser")
    if not isinstance(runtime, _HookedRuntime):
        runtime = _HookedRuntime(runtime)
        namespace._rt = runtime  # type: ignore[union-attr]
    runtime.register(weight, fn)


def ternary_weights(compiled: Any) -> dict[str, Any]:
    """The ternary weights of a compiled QAT program: latent state-dict key -> `Stored`."""
    from tdsl.backends.torch.freeze import storage_layout

    return {s.latent_key: s for s in storage_layout(compiled.module, frozen=False).values()
            if s.role == "weight" and s.precision == "ternary"}


def learned_scale(compiled: Any, module: nn.Module, symmetric: bool = False) -> dict[str, nn.Module]:
    """TTQ: each ternary weight gets a `LearnedScaleTernary` (Δ by the layer's own rule,
    Wp and Wn per output channel when the layer is per-channel, initialised from the current
    weights), registered as `<layer>.<name>_ttq` and hooked in as the layer's quantiser."""
    from tdsl.quant.torch_ste import LearnedScaleTernary, TTQFunction

    out: dict[str, nn.Module] = {}
    for key, s in ternary_weights(compiled).items():
        q = s.quant or {}
        method = str(q.get("threshold", "twn"))
        per_channel = bool(q.get("per_channel", False))
        owner_path, _, name = key.rpartition(".")
        owner = module.get_submodule(owner_path) if owner_path else module
        w = getattr(owner, name)
        ttq = LearnedScaleTernary(w.shape[0] if per_channel else None, method,
                                  target_sparsity=float(q["sparsity"]) if method == "sparsity" else None,
                                  threshold=float(q["delta"]) if method == "fixed" else None)
        ttq.init_scales(w.detach())
        ttq.to(w.device)
        ttq.symmetric = symmetric
        owner.add_module(f"{name}_ttq", ttq)
        if symmetric:  # one scale for both signs: Wn is Wp (the gradients of both roles add up)
            with torch.no_grad():
                ttq.wp.copy_((ttq.wp + ttq.wn) / 2)
            del ttq.wn
            install_quantizer(module, key, lambda v, m=ttq: TTQFunction.apply(v, m.wp, m.wp, m.delta(v)))
        else:
            install_quantizer(module, key, ttq)
        out[key] = ttq
    return out


def _mean_abs(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    a = w.detach().abs().double()
    return (a.reshape(a.shape[0], -1).mean(dim=1) if per_channel else a.mean()).to(torch.float32)


def calibrate(compiled: Any, module: nn.Module, batches: list[torch.Tensor],
              fp32_compiled: Any = None) -> dict[str, Any]:
    """Choose each ternary layer's Δ by the output error it causes on `batches`, with the
    FP32 model (the module's current weights, nothing quantised) giving every layer its
    input. The result is kept as a per-channel multiplier m = Δ/mean|w| and applied during
    QAT as Δ = m·mean|w| of the current latent weight (TWN is m = 0.7), through the fixed-
    threshold rule. Returns {weight key: LayerCalibration}."""
    from tdsl.model.compiled import compile as compile_
    from tdsl.model.precision import calibration_op
    from tdsl.quant.calibration import calibrate_threshold
    from tdsl.quant.torch_ste import ternarize_ste

    weights = ternary_weights(compiled)
    if fp32_compiled is None:
        fp32_compiled = compile_(compiled.filename, entry=compiled.entry, params=compiled.params,
                                 pipeline="shape-infer")
    fp32 = fp32_compiled.to_torch()
    fp32.load_state_dict({k: v for k, v in module.state_dict().items() if k in fp32.state_dict()}, strict=True)
    inputs: dict[str, list[torch.Tensor]] = {k: [] for k in weights}
    handles = []
    for key in weights:
        owner_path = key.rpartition(".")[0]
        owner = fp32.get_submodule(owner_path) if owner_path else fp32

        def hook(_m: nn.Module, args: tuple, key: str = key) -> None:
            inputs[key].append(args[0].detach())
        handles.append(owner.register_forward_pre_hook(hook))
    fp32.eval()
    try:
        with torch.no_grad():
            for b in batches:
                fp32(b)
    finally:
        for h in handles:
            h.remove()
    results: dict[str, Any] = {}
    for key, s in weights.items():
        per_channel = bool((s.quant or {}).get("per_channel", False))
        owner_path, _, name = key.rpartition(".")
        owner = module.get_submodule(owner_path) if owner_path else module
        w = getattr(owner, name)
        xs = inputs[key]
        if s.op_kwargs and xs and xs[0].ndim == 3 and w.ndim == 4:
            xs = [x.unsqueeze(2) for x in xs]  # Conv1d: a 2-D conv over [N, C, 1, L]
        op, op_kwargs, axis = calibration_op(s.op or "linear", s.op_kwargs)
        cal = calibrate_threshold(w.detach(), xs, op, op_kwargs, per_channel=per_channel, channel_axis=axis)
        results[key] = cal
        mult = torch.as_tensor(np.asarray(cal.multiplier, dtype=np.float32)).to(w.device)

        def quantize(v: torch.Tensor, mult: torch.Tensor = mult, per_channel: bool = per_channel) -> torch.Tensor:
            delta = (mult * _mean_abs(v, per_channel)).to(torch.float32)
            return ternarize_ste(v, "fixed", per_channel, threshold=delta)
        install_quantizer(module, key, quantize)
    return results


def input_weight(compiled: Any) -> Any:
    """The `Stored` entry of the program's first conv/linear weight (declaration order)."""
    from tdsl.backends.torch.freeze import storage_layout

    for s in storage_layout(compiled.module, frozen=False).values():
        if s.role == "weight":
            return s
    raise TdslError("the program has no weights")


class InputQuantizer:
    """The input layer's quantiser under `progressive` / `optimal_delta`: α·T by the layer's
    own rule (or the error-optimal Δ), mixed as λ·α·T + (1−λ)·w while `lam` < 1.

    `step(step, total)` is a trainer step hook: λ = step / (fraction·total), capped at 1."""

    def __init__(self, method: str, per_channel: bool, optimal: bool, fade: float | None):
        self.method = "optimal" if optimal else method
        self.per_channel = per_channel
        self.fade = fade
        self.lam = 0.0 if fade is not None else 1.0

    def step(self, step: int, total: int) -> None:
        if self.fade is not None:
            self.lam = min(1.0, step / max(1.0, self.fade * total))

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        from tdsl.quant.torch_ste import ternarize_ste

        q = ternarize_ste(w, self.method, self.per_channel)
        return q if self.lam >= 1.0 else self.lam * q + (1.0 - self.lam) * w

    def threshold(self, w: torch.Tensor) -> np.ndarray:
        """Δ of the final weight, for `freeze` (the rule the run trained with)."""
        from tdsl.quant.torch_ste import threshold_torch

        return threshold_torch(w.detach().cpu(), self.method, self.per_channel).numpy()


def input_layer(compiled: Any, module: nn.Module, recipe: Recipe) -> tuple[str, InputQuantizer] | None:
    """Install the input layer's quantiser; None when that layer is not ternary (`default` policy)."""
    s = input_weight(compiled)
    if s.precision != "ternary":
        return None
    q = s.quant or {}
    method = str(q.get("threshold", "twn"))
    if method not in ("twn", "absmean"):
        raise TdslError(f"'progressive'/'optimal_delta' need the twn or absmean threshold rule, not '{method}'")
    quantizer = InputQuantizer(method, bool(q.get("per_channel", False)), recipe.optimal_delta,
                               recipe.progressive_fraction if recipe.progressive else None)
    install_quantizer(module, s.latent_key, quantizer)
    return s.latent_key, quantizer


def fix_input_layer(compiled: Any, module: nn.Module) -> str | None:
    """`fixed_input`: ternarise the input layer's trained weight once, with the error-optimal Δ
    (`optimal` rule), make α·T its latent weight and stop training it; the layer's key, or None
    when that layer is not ternary (`default` policy).

    Why: a 5-tap filter's trits flip as a whole pattern under QAT, and every flip changes what
    the rest of the network sees (measured: training them on costs ~4 points on MNIST-1D). The
    emitted quantiser (TWN or absmean, per channel or tensor) maps α·T to itself: its Δ is below
    α, and the mean of the kept magnitudes is α; so the QAT forward, `freeze` and the packed
    model all hold exactly these trits and scales, in the one-scale-per-channel format."""
    from tdsl.quant.torch_ste import ternarize_torch

    s = input_weight(compiled)
    if s.precision != "ternary":
        return None
    q = s.quant or {}
    if str(q.get("threshold", "twn")) not in ("twn", "absmean"):
        raise TdslError(f"'fixed_input' needs the twn or absmean threshold rule, not '{q.get('threshold')}'")
    owner_path, _, name = s.latent_key.rpartition(".")
    w = getattr(module.get_submodule(owner_path) if owner_path else module, name)
    trits, alpha, _ = ternarize_torch(w.detach(), "optimal", bool(q.get("per_channel", False)))
    with torch.no_grad():
        a = alpha.reshape(alpha.shape + (1,) * (w.ndim - 1)) if alpha.ndim == 1 else alpha
        w.copy_((trits.to(torch.float32) * a).to(w.dtype))
    w.requires_grad_(False)
    return s.latent_key


def distill_loss(student: nn.Module, teacher: nn.Module, alpha: float = 0.5,
                 temperature: float = 4.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A trainer loss (sum over the batch) α·CE + (1−α)·T²·KL(softmax(t/T) ‖ softmax(s/T)).

    The teacher sees the same batch as the student: a forward pre-hook on the student keeps
    its input. In eval mode (the trainer's test loss) the loss is plain cross-entropy."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    seen: dict[str, torch.Tensor] = {}

    def keep(_m: nn.Module, args: tuple) -> None:
        seen["x"] = args[0]
    student.register_forward_pre_hook(keep)
    T = float(temperature)

    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(output.float(), target, reduction="sum")
        if not student.training or alpha >= 1.0:
            return ce
        x = seen["x"]
        with torch.no_grad():
            t = teacher.to(x.device)(x).float()
        kl = F.kl_div(F.log_softmax(output.float() / T, dim=1), F.log_softmax(t / T, dim=1),
                      reduction="sum", log_target=True)
        return alpha * ce + (1.0 - alpha) * T * T * kl
    return loss


def long_schedule(config: Any, steps_per_epoch: int, factor: float = 2.0,
                  warmup_fraction: float = 0.05) -> Any:
    """The config with `factor`× the epochs, cosine decay and a linear warm-up."""
    epochs = max(1, int(round(config.epochs * factor)))
    warmup = int(warmup_fraction * epochs * steps_per_epoch)
    return replace(config, epochs=epochs, schedule="cosine", warmup_steps=warmup)


# ----- putting a run together ---------------------------------------------------------------


@dataclass
class Prepared:
    """A run ready to train: the QAT module, its config and loss, and how to freeze it."""

    compiled: Any
    module: nn.Module
    config: Any
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    recipe: Recipe
    precision: str
    ttq: dict[str, nn.Module] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    input_quantizer: tuple[str, InputQuantizer] | None = None
    fixed_input: str | None = None

    def trainer(self, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor] | None = None,
                **kwargs: Any) -> Any:
        from tdsl.train.trainer import Trainer

        if self.input_quantizer is not None:
            kwargs["step_hooks"] = [*kwargs.get("step_hooks", []), self.input_quantizer[1].step]
        return Trainer(self.module, self.config, train, test, loss_fn=self.loss_fn, **kwargs)

    def thresholds(self) -> dict[str, np.ndarray] | None:
        """Δ per ternary weight path for `freeze`: the calibrated rule, or the input layer's, on
        the final weights."""
        if self.input_quantizer is not None and self.input_quantizer[1].method == "optimal":
            key, quantizer = self.input_quantizer
            owner_path, _, name = key.rpartition(".")
            return {key: quantizer.threshold(getattr(self.module.get_submodule(owner_path) if owner_path
                                                     else self.module, name))}
        if not self.calibration:
            return None
        out = {}
        for key, cal in self.calibration.items():
            owner_path, _, name = key.rpartition(".")
            w = getattr(self.module.get_submodule(owner_path) if owner_path else self.module, name)
            per_channel = np.asarray(cal.multiplier).ndim == 1
            mult = torch.as_tensor(np.asarray(cal.multiplier, dtype=np.float32))
            out[key] = (mult * _mean_abs(w.cpu(), per_channel)).to(torch.float32).numpy()
        return out

    def freeze(self) -> Any:
        frozen = self.compiled.freeze(self.module, thresholds=self.thresholds())
        if self.ttq:  # the learned scale (asymmetric TTQ: the mean of Wp and Wn) becomes the stored one
            state = frozen.module.state_dict()
            with torch.no_grad():
                for s in frozen.layout.values():
                    if s.role == "scale" and s.precision == "ternary" and s.latent_key in self.ttq:
                        m = self.ttq[s.latent_key]
                        value = (m.wp if m.symmetric else (m.wp + m.wn) / 2).detach().to(state[s.key].dtype)
                        state[s.key].copy_(value.reshape(state[s.key].shape))
        return frozen

    @property
    def extra_scale_bytes(self) -> int:
        """Bytes a TTQ model needs beyond the packed format's one scale per channel (Wn)."""
        return sum(4 * int(m.wn.numel()) for m in self.ttq.values() if not m.symmetric)


def compile_for(model: str | Path, precision: str = "ternary", *, policy: str = "default",
                threshold: str = "twn", per_channel: bool = True, params: dict[str, Any] | None = None) -> Any:
    from tdsl.model.compiled import compile as compile_
    from tdsl.passes.pipelines import pipeline_for

    if precision == "fp32":
        return compile_(model, params=params, pipeline="shape-infer")
    return compile_(model, params=params, pipeline=pipeline_for(precision, policy=policy, threshold=threshold,
                                                                   per_channel=per_channel))


def prepare(model: str | Path, recipe: str | Recipe, config: Any, train: tuple[torch.Tensor, torch.Tensor], *,
            precision: str = "ternary", policy: str = "default", threshold: str = "twn",
            per_channel: bool = True, params: dict[str, Any] | None = None, init: Any = None,
            teacher: Any = None, compiled: Any = None,
            compiler: Callable[..., Any] | None = None) -> Prepared:
    """Compile `model` for QAT and apply `recipe` (see the module docstring).

    `init`: FP32 weights for `finetune`/`calibrate` (state dict, module, .safetensors, or a
    checkpoint). `teacher`: FP32 weights of the distillation teacher (default: `init`).
    `recipe="auto"`: `recommended(policy, init is not None)`. `precision="fp32"` gives
    the FP32 baseline (recipe parts that quantise are then errors).
    The module is initialised under `torch.manual_seed(config.seed)`. `compiler` (default
    `compile_for`) compiles the QAT and FP32 programs; pass a cached one to save time."""
    if isinstance(recipe, str) and recipe.strip() == "auto":
        recipe = recommended(policy, init is not None) if precision != "fp32" else "scratch"
    recipe = Recipe.parse(recipe)
    if precision == "fp32" and (recipe.learned_scale or recipe.shared_scale or recipe.calibrate
                                or recipe.progressive or recipe.optimal_delta or recipe.fixed_input):
        raise TdslError(f"recipe '{recipe.name}' quantises; it needs precision 'ternary'")
    if recipe.needs_init and init is None:
        raise TdslError(f"recipe '{recipe.name}' starts from FP32 weights: give init (--init CKPT)")
    if recipe.distill and teacher is None and init is None:
        raise TdslError("recipe 'distill' needs the FP32 teacher's weights: give teacher (--teacher CKPT) or init")
    compiler = compiler or compile_for
    if compiled is None:
        compiled = compiler(model, precision, policy=policy, threshold=threshold, per_channel=per_channel,
                            params=params)
    torch.manual_seed(config.seed)
    module = compiled.to_torch()
    if recipe.needs_init:
        finetune(module, init)
    prepared = Prepared(compiled, module, config, _ce_sum, recipe, precision)
    if recipe.fixed_input:
        prepared.fixed_input = fix_input_layer(compiled, module)
    if recipe.calibrate:
        x = train[0]
        g = torch.Generator().manual_seed(config.seed)
        idx = torch.randperm(len(x), generator=g)[:recipe.calib_batches * recipe.calib_batch_size]
        batches = list(x[idx].split(recipe.calib_batch_size))
        prepared.calibration = calibrate(compiled, module, batches,
                                         fp32_compiled=compiler(model, "fp32", params=params))
    if recipe.progressive or recipe.optimal_delta:
        prepared.input_quantizer = input_layer(compiled, module, recipe)
    if recipe.learned_scale or recipe.shared_scale:
        prepared.ttq = learned_scale(compiled, module, symmetric=recipe.shared_scale)
    if recipe.distill:
        fp32 = compiler(model, "fp32", params=params).to_torch()
        fp32.load_state_dict(load_state(teacher if teacher is not None else init), strict=True)
        prepared.loss_fn = distill_loss(module, fp32, recipe.kd_alpha, recipe.kd_temperature)
    if recipe.long:
        steps = _steps_per_epoch(len(train[0]), config.batch_size)
        prepared.config = long_schedule(config, steps, recipe.long_factor, recipe.warmup_fraction)
    return prepared


def train_recipe(model: str | Path, recipe: str | Recipe, config: Any, train: tuple[torch.Tensor, torch.Tensor],
                 test: tuple[torch.Tensor, torch.Tensor] | None = None, **kwargs: Any) -> tuple[Prepared, Any]:
    """`prepare` then train; returns (Prepared, TrainResult)."""
    trainer_kwargs = {k: kwargs.pop(k) for k in ("out_dir",) if k in kwargs}
    prepared = prepare(model, recipe, config, train, **kwargs)
    result = prepared.trainer(train, test, **trainer_kwargs).fit()
    return prepared, result


def _ce_sum(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(output.float(), target, reduction="sum")


def _steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, n // batch_size + (1 if n % batch_size else 0))


def mnist1d_dataset(seed: int = 42) -> Any:
    """MNIST-1D as a `tdsl.train.data.Dataset` ([N, 40]; reshaped to [N, 1, 40] for the CNN)."""
    from tdsl.train.data import Dataset
    from tdsl.train.mnist1d import NUM_CLASSES, load_mnist1d

    d = load_mnist1d(seed)
    return Dataset("mnist1d", torch.from_numpy(d.x_train), torch.from_numpy(d.y_train),
                   torch.from_numpy(d.x_test), torch.from_numpy(d.y_test), NUM_CLASSES,
                   [str(i) for i in range(NUM_CLASSES)])


def evaluate(module: Any, x: torch.Tensor, y: torch.Tensor, batch: int = 1024) -> float:
    """Accuracy of a module (or FrozenModel) in eval mode."""
    net = getattr(module, "module", module)
    net.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += int((module(x[i:i + batch]).argmax(dim=1) == y[i:i + batch]).sum())
    return correct / len(x)


__all__ = ["PARTS", "Recipe", "recommended", "Prepared", "prepare", "train_recipe", "finetune", "learned_scale",
           "calibrate", "distill_loss", "long_schedule", "install_quantizer", "load_state",
           "mnist1d_dataset", "evaluate", "compile_for", "input_weight", "InputQuantizer"]
