"""Ops that every backend runs from one row: a numpy reference, a torch expression, an ONNX builder.

For an op without a tuned runtime kernel, the row is the whole lowering (tinygrad's habit
of making a composite op one function): the torch backend emits `torch(op, operands)`, the
ONNX backend calls `onnx(graph, op, inputs, hint)`, and the Numba backend runs `reference`
on the CPU (`Kernel.REFERENCE`; refused on CUDA with a message). Adding such an op is its op
class (with its shape rule), its DSL built-in (`tdsl.frontend.ops`) and one row here.
Imports numpy only.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tdsl.dialects import tdsl as t
from tdsl.ops import sequence as S


@dataclass(frozen=True)
class Composite:
    """`reference(op, *operands)` takes numpy arrays in operand order and returns the result
    (float64 or float32); `torch(op, exprs)` and `onnx(graph, op, names, hint)` build the
    result from the operands' expressions or ONNX names."""

    op: type[t.ValueOp]
    reference: Callable[..., np.ndarray]
    torch: Callable[[Any, list[str]], str]
    onnx: Callable[[Any, Any, list[str], str], str]


def _layer_norm(op: t.LayerNormOp, x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + op.eps.value.data) * weight + bias


def _layer_norm_torch(op: t.LayerNormOp, exprs: list[str]) -> str:
    x, weight, bias = exprs
    return f"F.layer_norm({x}, ({weight}.shape[0],), {weight}, {bias}, eps={op.eps.value.data!r})"


def _layer_norm_onnx(g: Any, op: t.LayerNormOp, names: list[str], hint: str) -> str:
    if g.opset < 17:
        raise g.refuse(op, f"LayerNormalization needs opset >= 17, got {g.opset}")
    return g.node("LayerNormalization", names, hint, axis=-1, epsilon=op.eps.value.data)


def _pad2d(op: t.Pad2dOp, x: np.ndarray) -> np.ndarray:
    left, right, top, bottom = op.amounts()
    return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(top, bottom), (left, right)])


def _pad2d_torch(op: t.Pad2dOp, exprs: list[str]) -> str:
    return f"F.pad({exprs[0]}, {tuple(op.amounts())!r})"


def _pad2d_onnx(g: Any, op: t.Pad2dOp, names: list[str], hint: str) -> str:
    left, right, top, bottom = op.amounts()
    rank = len(op.input.type.get_shape())
    pads = [0] * (rank - 2) + [top, left] + [0] * (rank - 2) + [bottom, right]
    return g.node("Pad", [names[0], g.constant(np.array(pads, np.int64), "pads")], hint, mode="constant")


COMPOSITES: dict[type[t.ValueOp], Composite] = {row.op: row for row in (
    Composite(t.LayerNormOp, _layer_norm, _layer_norm_torch, _layer_norm_onnx),
    Composite(t.Pad2dOp, _pad2d, _pad2d_torch, _pad2d_onnx),
    Composite(t.RmsNormOp, S.rms_norm, S.rms_norm_torch, S.rms_norm_onnx),
    Composite(t.EmbeddingOp, S.embedding, S.embedding_torch, S.embedding_onnx),
    Composite(t.PositionsOp, S.positions, S.positions_torch, S.positions_onnx),
    Composite(t.PermuteOp, S.permute, S.permute_torch, S.permute_onnx),
    Composite(t.TransposeOp, S.transpose, S.transpose_torch, S.transpose_onnx),
    Composite(t.SliceOp, S.slice_, S.slice_torch, S.slice_onnx),
    Composite(t.ConcatOp, S.concat, S.concat_torch, S.concat_onnx),
    Composite(t.RotaryOp, S.rope, S.rope_torch, S.rope_onnx),
    Composite(t.AttentionOp, S.attention, S.attention_torch, S.attention_onnx),
)}
"""Every composite op, by class."""
