"""Learning-rate schedules as pure functions of the optimizer step.

The trainer sets every parameter group's LR to `lr_at(step, ...)` before each update, so a
schedule has no state of its own: resuming at step `s` only needs `s` (which the checkpoint
stores), and a test can read the whole curve without building an optimizer.

Steps count optimizer updates from 0. With `warmup_steps = W > 0` the LR rises linearly
`base_lr * (s + 1) / W` for `s < W` (so the first update already moves, and step W-1 reaches
`base_lr`); the chosen schedule then runs on the steps after warm-up, `s - W`:

- `constant`: `base_lr`.
- `step`: `base_lr * gamma ** ((s - W) // step_size)`.
- `cosine`: `min_lr + (base_lr - min_lr) * (1 + cos(pi * t / T)) / 2` with `t = s - W` and
  `T = total_steps - W`, held at `min_lr` once `t >= T`.
"""
from __future__ import annotations

import math

from tdsl.errors import TdslError

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


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up multiplier: (step + 1) / W during warm-up, then 1."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return 1.0


def constant_lr(step: int, base_lr: float) -> float:
    return base_lr


def step_lr(step: int, base_lr: float, step_size: int, gamma: float) -> float:
    return base_lr * gamma ** (step // step_size)


def cosine_lr(step: int, base_lr: float, total_steps: int, min_lr: float = 0.0) -> float:
    if total_steps <= 0 or step >= total_steps:
        return min_lr
    return min_lr + (base_lr - min_lr) * (1.0 + math.cos(math.pi * step / total_steps)) / 2.0


def lr_at(step: int, schedule: str, *, base_lr: float, total_steps: int, warmup_steps: int = 0,
          step_size: int = 1, gamma: float = 0.1, min_lr: float = 0.0) -> float:
    """The learning rate for optimizer step `step` (0-based); see the module docstring."""
    if step < warmup_steps:
        return base_lr * warmup_factor(step, warmup_steps)
    t = step - warmup_steps
    if schedule == "constant":
        return constant_lr(t, base_lr)
    if schedule == "step":
        return step_lr(t, base_lr, step_size, gamma)
    if schedule == "cosine":
        return cosine_lr(t, base_lr, total_steps - warmup_steps, min_lr)
    raise TdslError(f"unknown LR schedule '{schedule}'; expected one of {', '.join(SCHEDULES)}")
