"""`verify_onnx`: run an exported file in onnxruntime (CPU provider, *default* session
options, so with the optimiser a user gets) and compare it with the torch backend."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FrozenModel = Any
"""A `tdsl.model.frozen.FrozenModel` (called on torch tensors); not imported: a backend
imports nothing of `tdsl.model`."""


@dataclass(frozen=True)
class OnnxDiff:
    """Largest differences over all outputs; `max_rel` is max|onnx − torch| / max|torch|
    (relative to the output's scale, so outputs near zero do not blow it up)."""

    max_abs: float
    max_rel: float


def run_onnx(path: str | Path, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The outputs of the file in onnxruntime's CPU provider with default session options."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: np.asarray(x, dtype=np.float32) for i, x in zip(session.get_inputs(), inputs)}
    return session.run(None, feed)


def _torch_outputs(frozen: FrozenModel, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        out: Any = frozen.module(*[torch.from_numpy(np.asarray(x, dtype=np.float32)) for x in inputs])
    values = list(out.values()) if isinstance(out, Mapping) else list(out) if isinstance(out, tuple) else [out]
    return [v.detach().cpu().numpy() for v in values]


def verify_onnx(path: str | Path, frozen: FrozenModel, inputs: Sequence[np.ndarray]) -> OnnxDiff:
    """Max abs / rel difference between the ONNX file (onnxruntime, default options) and the
    frozen torch module on `inputs` (one array per forward argument)."""
    got = run_onnx(path, inputs)
    want = _torch_outputs(frozen, inputs)
    if len(got) != len(want):
        raise AssertionError(f"the ONNX file has {len(got)} outputs, the torch module {len(want)}")
    max_abs, max_rel = 0.0, 0.0
    for g, w in zip(got, want):
        if g.shape != w.shape:
            raise AssertionError(f"output shape {g.shape} from ONNX, {w.shape} from torch")
        diff = float(np.abs(g.astype(np.float64) - w.astype(np.float64)).max(initial=0.0))
        scale = float(np.abs(w).max(initial=0.0))
        max_abs = max(max_abs, diff)
        max_rel = max(max_rel, diff / scale if scale > 0 else diff)
    return OnnxDiff(max_abs, max_rel)
