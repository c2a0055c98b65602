"""Learning-rate schedules, built from `torch.optim.lr_scheduler`.

`build_scheduler` returns the torch scheduler the trainer steps after every optimizer
update; `lr_at` reads one point of the same curve (it steps a throwaway scheduler, so it
costs O(step) and is meant for tests and plots). A resumed run rebuilds its scheduler and
replays it to the checkpoint's step (`replay`), so old checkpoints, which stored only the
step, resume on the same curve.

Steps count optimizer updates from 0. With `warmup_steps = W > 1` the LR rises linearly
`base_lr * (s + 1) / W` for `s < W` (`LinearLR`: the first update already moves, and step
W-1 reaches `base_lr`); the chosen schedule then runs on the steps after warm-up, `s - W`
(`SequentialLR`):

- `constant`: `base_lr` (`ConstantLR` with factor 1).
- `step`: `base_lr * gamma ** ((s - W) // step_size)` (`StepLR`).
- `cosine`: `min_lr + (base_lr - min_lr) * (1 + cos(pi * t / T)) / 2` with `t = s - W` and
  `T = total_steps - W` (`CosineAnnealingLR`), held at `min_lr` once `t >= T` (a
  `ConstantLR` at `min_lr / base_lr`: torch's cosine would rise again after T).
"""
from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING

from tdsl.errors import TdslError

if TYPE_CHECKING:
    import torch

SCHEDULES = ("constant", "step", "cosine")


def check_schedule(schedule: str, *, base_lr: float, total_steps: int, warmup_steps: int = 0,
                   step_size: int = 1, gamma: float = 0.1, min_lr: float = 0.0) -> None:
    """Raise a TdslError naming the first bad option."""
    if schedule not in SCHEDULES:
        raise TdslError(f"unknown LR schedule '{schedule}'; expected one of {', '.join(SCHEDULES)}")
    if not base_lr > 0 or not math.isfinite(base_lr):
        raise TdslError(f"learning rate must be a positive number, got {base_lr}")
    if warmup_steps < 0:
        raise TdslError(f"warm-up steps must be >= 0, got {warmup_steps}")
    if total_steps < 1:
        raise TdslError(f"total steps must be >= 1, got {total_steps}")
    if schedule == "step" and step_size < 1:
        raise TdslError(f"step schedule needs step_size >= 1, got {step_size}")
    if schedule == "step" and not 0 < gamma <= 1:
        raise TdslError(f"step schedule needs 0 < gamma <= 1, got {gamma}")
    if schedule == "cosine" and not 0 <= min_lr <= base_lr:
        raise TdslError(f"cosine schedule needs 0 <= min_lr <= lr, got min_lr={min_lr}, lr={base_lr}")


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: str, *, base_lr: float, total_steps: int,
                    warmup_steps: int = 0, step_size: int = 1, gamma: float = 0.1,
                    min_lr: float = 0.0) -> torch.optim.lr_scheduler.LRScheduler:
    """The torch scheduler of the module docstring for `optimizer`, whose groups start at
    `base_lr`; call its `step()` after each optimizer update."""
    from torch.optim import lr_scheduler as S

    check_schedule(schedule, base_lr=base_lr, total_steps=total_steps, warmup_steps=warmup_steps,
                   step_size=step_size, gamma=gamma, min_lr=min_lr)
    for group in optimizer.param_groups:
        group["lr"] = base_lr
        group.pop("initial_lr", None)  # a scheduler built earlier on this optimizer
    parts: list[S.LRScheduler] = []
    milestones: list[int] = []
    if warmup_steps > 1:
        parts.append(S.LinearLR(optimizer, start_factor=1.0 / warmup_steps, end_factor=1.0,
                                total_iters=warmup_steps - 1))
        milestones.append(warmup_steps)
    if schedule == "constant":
        parts.append(S.ConstantLR(optimizer, factor=1.0, total_iters=0))
    elif schedule == "step":
        parts.append(S.StepLR(optimizer, step_size=step_size, gamma=gamma))
    else:
        start = milestones[-1] if milestones else 0
        span = total_steps - start
        parts.append(S.CosineAnnealingLR(optimizer, T_max=max(span, 1), eta_min=min_lr))
        if span > 0:
            milestones.append(total_steps)
            parts.append(S.ConstantLR(optimizer, factor=min_lr / base_lr, total_iters=sys.maxsize))
    if len(parts) == 1:
        return parts[0]
    return S.SequentialLR(optimizer, parts, milestones=milestones)


def replay(scheduler: torch.optim.lr_scheduler.LRScheduler, steps: int) -> None:
    """Advance a fresh scheduler by `steps` updates, as training to that step did."""
    import warnings

    with warnings.catch_warnings():  # no optimizer.step() between these on purpose
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
        for _ in range(steps):
            scheduler.step()


def lr_at(step: int, schedule: str, *, base_lr: float, total_steps: int, warmup_steps: int = 0,
          step_size: int = 1, gamma: float = 0.1, min_lr: float = 0.0) -> float:
    """The learning rate for optimizer step `step` (0-based); see the module docstring."""
    import torch

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    scheduler = build_scheduler(optimizer, schedule, base_lr=base_lr, total_steps=total_steps,
                                warmup_steps=warmup_steps, step_size=step_size, gamma=gamma, min_lr=min_lr)
    replay(scheduler, step)
    return float(optimizer.param_groups[0]["lr"])
