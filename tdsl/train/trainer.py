"""`Trainer`: a small, deterministic training loop for any `nn.Module` on in-memory tensors.

What it assumes: the data fits in memory as `(x, y)` tensors (see `tdsl.train.data`), the
model maps a batch of `x` to class logits (or whatever `loss_fn` accepts), and quantisers, if
any, live inside the model (STE modules), so nothing here knows about ternary weights except
the optional latent-weight regulariser.

Determinism: the constructor seeds torch's global RNG with `config.seed` (dropout, and any
other randomness inside the model) and a separate generator for data order; an epoch's order
is one `randperm` from that generator. The LR comes from a `torch.optim.lr_scheduler`
(`tdsl.train.schedules`), stepped after every update; it depends on the step alone, so a
resumed run rebuilds it and replays it to the checkpoint's step. A checkpoint taken at the
end of an epoch stores both RNG states, the step, the optimizer and the grad scaler, so
resuming reproduces an uninterrupted run bit for bit (on the same machine and thread count).

Per step: forward (under autocast when `amp`: bf16 on CPU, fp16 with a
`GradScaler` on CUDA), loss = loss_fn sum / global batch (+ `ternary_reg` times the ternary L2
regulariser), backward, health checks on the pre-clipping gradients, clipping by value then
by norm, optimizer step, scheduler step.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from tdsl.errors import TdslError
from tdsl.train import distributed as D
from tdsl.train.checkpoint import (CheckpointManager, apply_model_state, check_optimizer_state,
                                   load_checkpoint)
from tdsl.train.health import (TrainingHealthError, TrainingHealthWarning, exploding, grad_norms,
                               locate_nonfinite, nonfinite_grads, total_norm, vanishing)
from tdsl.train.metrics import MetricsLog, plot_metrics
from tdsl.train.regularizers import ternary_l2
from tdsl.train.schedules import SCHEDULES, build_scheduler, check_schedule, replay

OPTIMIZERS = ("sgd", "adamw")
HEALTH_MODES = ("raise", "warn", "off")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def correct_count(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Samples classified right (argmax over dim 1); a sample with several positions (a
    sequence: logits [N, C, T], targets [N, T]) counts the fraction of its positions right."""
    hits = (output.argmax(dim=1) == target).float()
    return hits.reshape(len(target), -1).mean(dim=1).sum()


def cross_entropy_sum(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The default loss: cross-entropy summed over the batch (the trainer divides)."""
    return F.cross_entropy(output.float(), target, reduction="sum")


@dataclass
class TrainConfig:
    """Every knob of a run; stored in each checkpoint. Steps count optimizer updates."""

    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9          # SGD only
    nesterov: bool = False         # SGD only
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW only
    eps: float = 1e-8              # AdamW only
    weight_decay: float = 0.0      # on tensors with ndim >= 2 only (not biases / norms)
    schedule: str = "constant"
    warmup_steps: int = 0
    step_size: int = 1000          # `step` schedule: steps between decays
    gamma: float = 0.1             # `step` schedule: decay factor
    min_lr: float = 0.0            # `cosine` schedule: final LR
    clip_norm: float | None = None
    clip_value: float | None = None
    ternary_reg: float = 0.0       # weight of `regularizers.ternary_l2`
    amp: bool = False
    health: str = "raise"          # raise | warn | off
    max_grad_norm: float = 1e4     # exploding above this (0 disables)
    min_grad_norm: float = 0.0     # vanishing below this (0 disables)
    seed: int = 0
    device: str = "auto"
    log_every: int = 0             # also log a step record every N steps (0: epochs only)
    progress: bool = True
    keep_last: int = 3
    best_metric: str = "test_acc"
    best_mode: str = "max"
    eval_batch_size: int = 1024

    def validate(self) -> None:
        """Raise a TdslError naming the first bad option."""
        def positive_int(name: str) -> None:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise TdslError(f"{name} must be a positive integer, got {v!r}")

        positive_int("epochs")
        positive_int("batch_size")
        positive_int("eval_batch_size")
        if self.optimizer not in OPTIMIZERS:
            raise TdslError(f"unknown optimizer '{self.optimizer}'; expected one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise TdslError(f"unknown LR schedule '{self.schedule}'; expected one of {', '.join(SCHEDULES)}")
        if self.health not in HEALTH_MODES:
            raise TdslError(f"health must be one of {', '.join(HEALTH_MODES)}, got '{self.health}'")
        for name in ("clip_norm", "clip_value"):
            v = getattr(self, name)
            if v is not None and not (v > 0 and math.isfinite(v)):
                raise TdslError(f"{name} must be a positive number, got {v}")
        for name in ("weight_decay", "ternary_reg", "max_grad_norm", "min_grad_norm", "momentum"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise TdslError(f"{name} must be a non-negative number, got {v}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise TdslError("nesterov needs the sgd optimizer with momentum > 0")
        if self.log_every < 0:
            raise TdslError(f"log_every must be >= 0, got {self.log_every}")
        check_schedule(self.schedule, base_lr=self.lr, total_steps=1, warmup_steps=self.warmup_steps,
                       step_size=self.step_size, gamma=self.gamma, min_lr=self.min_lr)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """From a checkpoint's JSON; unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise TdslError(f"unknown training option(s) {', '.join(unknown)}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)


@dataclass
class TrainResult:
    """What `fit` returns: the last epoch's record plus run totals."""

    epoch: int
    step: int
    loss: float
    train_acc: float
    test_acc: float | None
    test_loss: float | None
    seconds: float
    history: list[dict[str, Any]]


def _rng_to_list(state: torch.Tensor) -> list[int]:
    return state.tolist()


def _rng_from_list(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.uint8)


class Trainer:
    """Trains `model` on `train = (x, y)`, evaluating on `test` after every epoch.

    `out_dir` (optional) receives `checkpoints/`, `metrics.jsonl` and `metrics.png`; only
    rank 0 writes. `loss_fn(output, target)` must return the SUM of per-sample losses.
    """

    def __init__(self, model: nn.Module, config: TrainConfig, train: tuple[torch.Tensor, torch.Tensor],
                 test: tuple[torch.Tensor, torch.Tensor] | None = None, *, out_dir: str | Path | None = None,
                 loss_fn: LossFn = cross_entropy_sum, dist: D.DistEnv | None = None,
                 step_hooks: list[Callable[[int, int], None]] | None = None):
        config.validate()
        self.step_hooks = list(step_hooks or [])
        """Called as `hook(step, total_steps)` before every update: schedules that live in the
        model (a quantiser fading in) read the step here, so a resumed run continues them."""
        self.config = config
        self.dist = dist or D.DistEnv()
        self.device = D.device_for(self.dist, config.device)
        self.x_train, self.y_train = self._check_pair(train, "training")
        self.test = self._check_pair(test, "test") if test is not None else None
        self.loss_fn = loss_fn
        self.model = model.to(self.device)
        self.module = D.wrap(self.model, self.dist, self.device)
        self.named_params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if not self.named_params:
            raise TdslError("the model has no trainable parameters")
        self.optimizer = self._make_optimizer()
        self.scheduler = self._make_scheduler()
        self.use_scaler = config.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if self.use_scaler else None
        self.amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16

        torch.manual_seed(config.seed)
        self.data_gen = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.last_lr = config.lr
        self.epoch = 0
        self.elapsed = 0.0
        self.history: list[dict[str, Any]] = []
        self.step_losses: list[float] = []

        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.ckpt: CheckpointManager | None = None
        self.log: MetricsLog | None = None
        if self.out_dir is not None and self.dist.is_main:
            self.ckpt = CheckpointManager(self.out_dir / "checkpoints", config.keep_last,
                                          config.best_metric, config.best_mode)
            self.log = MetricsLog(self.out_dir / "metrics.jsonl")

    # ----- set-up -------------------------------------------------------------------------

    def _check_pair(self, pair: tuple[torch.Tensor, torch.Tensor], what: str) -> tuple[torch.Tensor, torch.Tensor]:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2
                and all(isinstance(t, torch.Tensor) for t in pair)):
            raise TdslError(f"{what} data must be a pair of tensors (x, y)")
        x, y = pair
        if len(x) != len(y):
            raise TdslError(f"{what} data: {len(x)} inputs but {len(y)} labels")
        if len(x) == 0:
            raise TdslError(f"{what} data is empty")
        return x, y

    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        decay = [p for _, p in self.named_params if p.ndim >= 2]
        no_decay = [p for _, p in self.named_params if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": c.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        if c.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov)
        return torch.optim.AdamW(groups, lr=c.lr, betas=c.betas, eps=c.eps)

    def batches(self) -> list[torch.Tensor]:
        """This epoch's global batches of indices (draws from the data-order generator)."""
        perm = torch.randperm(len(self.x_train), generator=self.data_gen)
        return [b for b in perm.split(self.config.batch_size) if len(b) >= self.dist.world_size]

    @property
    def steps_per_epoch(self) -> int:
        n, b, w = len(self.x_train), self.config.batch_size, self.dist.world_size
        return n // b + (1 if n % b >= w else 0)

    @property
    def total_steps(self) -> int:
        return self.config.epochs * self.steps_per_epoch

    def _make_scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        """The torch LR scheduler of the configured schedule (`tdsl.train.schedules`), at step 0."""
        c = self.config
        return build_scheduler(self.optimizer, c.schedule, base_lr=c.lr, total_steps=self.total_steps,
                               warmup_steps=c.warmup_steps, step_size=c.step_size, gamma=c.gamma,
                               min_lr=c.min_lr)

    @property
    def lr(self) -> float:
        """The learning rate of the next update (that of the last one is `last_lr`)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def _advance(self) -> None:
        """One step done (taken or skipped): the schedule moves on either way."""
        self.last_lr = self.lr
        self.step += 1
        replay(self.scheduler, 1)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if not self.config.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # ----- health -------------------------------------------------------------------------

    def _unhealthy(self, message: str) -> None:
        text = f"step {self.step} (epoch {self.epoch + 1}): {message}"
        if self.config.health == "raise":
            raise TrainingHealthError(text)
        warnings.warn(text, TrainingHealthWarning, stacklevel=3)

    # ----- one step -----------------------------------------------------------------------

    def train_step(self, batch: torch.Tensor) -> tuple[float, float, float, int]:
        """One update on a global batch of indices: (global mean loss, grad norm, correct, n)."""
        c = self.config
        local = D.shard(batch, self.dist)
        xb = self.x_train[local].to(self.device, non_blocking=True)
        yb = self.y_train[local].to(self.device, non_blocking=True)
        for hook in self.step_hooks:
            hook(self.step, self.total_steps)
        self.module.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            out = self.module(xb)
        loss_sum = self.loss_fn(out, yb)
        loss = loss_sum * (self.dist.world_size / len(batch))
        if c.ternary_reg > 0:
            loss = loss + c.ternary_reg * ternary_l2(self.model)
        stats = torch.stack([loss_sum.detach().float(), correct_count(out.detach(), yb)])
        stats = D.all_reduce_sum(stats, self.dist)
        mean_loss, correct = stats[0].item() / len(batch), stats[1].item()

        if c.health != "off" and not math.isfinite(mean_loss):
            with torch.random.fork_rng(devices=[]):
                where = locate_nonfinite(self.model, lambda: self.model(xb))
            self._unhealthy(f"loss is {mean_loss}; {where}")
            self._advance()
            return mean_loss, float("nan"), correct, len(batch)

        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        norms = grad_norms(self.named_params)
        gnorm = total_norm(norms)
        if c.health != "off":
            bad = None if self.scaler is not None else nonfinite_grads(norms)
            if bad is not None:
                self._unhealthy(bad + "; the update was skipped")
                self._advance()
                return mean_loss, gnorm, correct, len(batch)
            # an fp16 overflow is the grad scaler's to handle: it skips the step and rescales
            overflow = self.scaler is not None and not math.isfinite(gnorm)
            problem = None if overflow else (exploding(norms, gnorm, c.max_grad_norm)
                                             or vanishing(norms, gnorm, c.min_grad_norm))
            if problem is not None:
                self._unhealthy(problem)
        params = [p for _, p in self.named_params]
        if c.clip_value is not None:
            torch.nn.utils.clip_grad_value_(params, c.clip_value)
        if c.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, c.clip_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self._advance()
        return mean_loss, gnorm, correct, len(batch)

    # ----- evaluation ---------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """(mean loss, accuracy) of the model in eval mode; every rank evaluates all of it."""
        self.model.eval()
        total, correct = 0.0, 0.0
        for i in range(0, len(x), self.config.eval_batch_size):
            xb = x[i:i + self.config.eval_batch_size].to(self.device)
            yb = y[i:i + self.config.eval_batch_size].to(self.device)
            with self._autocast():
                out = self.model(xb)
            total += float(self.loss_fn(out, yb))
            correct += float(correct_count(out, yb))
        return total / len(x), correct / len(x)

    # ----- the loop -----------------------------------------------------------------------

    def fit(self, until_epoch: int | None = None) -> TrainResult:
        """Train from the current epoch up to `until_epoch` (default: config.epochs) epochs done."""
        c = self.config
        last = c.epochs if until_epoch is None else until_epoch
        if not 0 <= last <= c.epochs:
            raise TdslError(f"until_epoch must be between 0 and {c.epochs}, got {last}")
        record: dict[str, Any] | None = self.history[-1] if self.history else None
        start = time.perf_counter() - self.elapsed
        show = c.progress and self.dist.is_main and sys.stderr.isatty()
        plain = c.progress and self.dist.is_main and not show  # logs, CI, notebooks: a line per epoch
        while self.epoch < last:
            record = self._run_epoch(start, show)
            if plain:
                print(_epoch_line(record, c.epochs), file=sys.stderr, flush=True)
        self.elapsed = time.perf_counter() - start
        if self.out_dir is not None and self.dist.is_main and self.log is not None:
            plot_metrics(self.log.read(), self.out_dir / "metrics.png")
        if record is None:
            raise TdslError("nothing to train: no epoch has run")
        return TrainResult(record["epoch"], record["step"], record["loss"], record["train_acc"],
                           record["test_acc"], record["test_loss"], self.elapsed, list(self.history))

    def _run_epoch(self, start: float, show: bool) -> dict[str, Any]:
        from tqdm import tqdm

        c = self.config
        batches = self.batches()
        loss_total, n_total, correct_total, norm_total, steps = 0.0, 0, 0, 0.0, 0
        bar = tqdm(batches, desc=f"epoch {self.epoch + 1}/{c.epochs}", disable=not show,
                   leave=False, dynamic_ncols=True)
        for batch in bar:
            loss, gnorm, correct, n = self.train_step(batch)
            self.step_losses.append(loss)
            loss_total += loss * n
            n_total += n
            correct_total += correct
            norm_total += gnorm
            steps += 1
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self.last_lr:.3g}")
            if c.log_every and self.step % c.log_every == 0 and self.log is not None:
                self.log.append({"kind": "step", "step": self.step, "epoch": self.epoch + 1,
                                 "lr": self.last_lr, "loss": loss, "grad_norm": gnorm,
                                 "time": time.perf_counter() - start})
        bar.close()
        self.epoch += 1
        test_loss, test_acc = self.evaluate(*self.test) if self.test is not None else (None, None)
        self.elapsed = time.perf_counter() - start
        record = {"kind": "epoch", "step": self.step, "epoch": self.epoch,
                  "lr": self.last_lr, "loss": loss_total / max(n_total, 1),
                  "train_acc": correct_total / max(n_total, 1), "test_loss": test_loss,
                  "test_acc": test_acc, "grad_norm": norm_total / max(steps, 1), "time": self.elapsed}
        self.history.append(record)
        if self.log is not None:
            self.log.append(record)
        if self.ckpt is not None:
            self.save_checkpoint()
        D.barrier(self.dist)
        return record

    # ----- checkpoints --------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The JSON part of a checkpoint (everything but model and optimizer tensors)."""
        rng: dict[str, Any] = {"torch": _rng_to_list(torch.get_rng_state()),
                               "data": _rng_to_list(self.data_gen.get_state())}
        if torch.cuda.is_available() and self.device.type == "cuda":
            rng["cuda"] = _rng_to_list(torch.cuda.get_rng_state(self.device))
        config = asdict(self.config)
        config["betas"] = list(config["betas"])
        return {"step": self.step, "epoch": self.epoch, "elapsed": self.elapsed, "config": config,
                "history": self.history, "rng": rng,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "best": self.ckpt.best() if self.ckpt is not None else None}

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint (rank 0 with an out_dir only); returns its folder."""
        if self.ckpt is None:
            return None
        metrics = self.history[-1] if self.history else {}
        return self.ckpt.save(self.step, self.model.state_dict(), self.optimizer.state_dict(),
                              self.state(), metrics)

    def load_checkpoint(self, path: str | Path) -> Path:
        """Restore model, optimizer, scaler, step, epoch, history and RNG states."""
        ck = load_checkpoint(path)
        st = ck.state
        origin = str(ck.path)
        apply_model_state(self.model, ck.model, origin)
        check_optimizer_state(self.optimizer, ck.optimizer, origin)
        self.optimizer.load_state_dict(ck.optimizer)
        if self.scaler is not None and st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        try:
            self.step, self.epoch = int(st["step"]), int(st["epoch"])
            self.elapsed = float(st.get("elapsed", 0.0))
            self.history = list(st["history"])
            torch.set_rng_state(_rng_from_list(st["rng"]["torch"]))
            self.data_gen.set_state(_rng_from_list(st["rng"]["data"]))
            if "cuda" in st["rng"] and self.device.type == "cuda":
                torch.cuda.set_rng_state(_rng_from_list(st["rng"]["cuda"]), self.device)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise TdslError(f"checkpoint '{origin}': trainer state is incomplete or invalid ({e})") from None
        if self.epoch > self.config.epochs:
            raise TdslError(f"checkpoint '{origin}' is at epoch {self.epoch}, past the configured "
                            f"{self.config.epochs} epochs")
        # the schedule is a function of the step: rebuild it and replay the updates done
        self.scheduler = self._make_scheduler()
        replay(self.scheduler, max(self.step - 1, 0))
        self.last_lr = self.lr
        replay(self.scheduler, 1 if self.step else 0)
        if self.log is not None:
            self.log.truncate_after(self.step)
        return ck.path


def _epoch_line(record: dict[str, Any], epochs: int) -> str:
    """The plain-text progress line of one epoch (where no progress bar can be drawn)."""
    parts = [f"epoch {record['epoch']}/{epochs}", f"step {record['step']}", f"loss {record['loss']:.4f}",
             f"train_acc {record['train_acc']:.4f}"]
    if record["test_acc"] is not None:
        parts += [f"test_loss {record['test_loss']:.4f}", f"test_acc {record['test_acc']:.4f}"]
    parts += [f"lr {record['lr']:.3g}", f"{record['time']:.1f}s"]
    return "  ".join(parts)
