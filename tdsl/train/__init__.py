"""Training: the `Trainer` loop, atomic safetensors checkpoints, datasets, DDP under torchrun.

Modules: `trainer` (Trainer, TrainConfig), `schedules` (LR schedules built from `torch.optim.lr_scheduler`),
`health` (gradient checks), `regularizers` (latent-weight penalties), `checkpoint`,
`metrics` (JSONL log and plot), `data` (digits, numpy, image folders, fitting one to a
model) and `distributed`. The `tdsl train` subcommand is `tdsl.tools.train`.

The names below are imported on first use, so that the `tdsl` CLI, which registers
`tdsl.tools.train`, does not import torch for commands that do not train.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Trainer": "trainer", "TrainConfig": "trainer", "TrainResult": "trainer",
    "TrainingHealthError": "health", "TrainingHealthWarning": "health",
    "CheckpointManager": "checkpoint", "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint",
    "Dataset": "data", "load_dataset": "data", "load_digits": "data", "load_npz": "data",
    "load_npy_pair": "data", "load_image_folder": "data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tdsl.train' has no attribute '{name}'")
    return getattr(importlib.import_module(f"tdsl.train.{_EXPORTS[name]}"), name)
