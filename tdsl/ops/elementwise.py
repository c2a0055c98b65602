"""Elementwise ops, one row each: activations (x -> act(x)) and binary arithmetic.

Each row is everything a backend needs beyond the op class, so that adding an activation is
its op class (`tdsl/dialects/tdsl.py`), its scalar code (`tdsl/runtime/activations.py`) and
one row here. From the row:
- the DSL built-in `name(x)` (`tdsl.frontend.ops`), named after the op (`tdsl.relu6` -> `relu6`);
- the torch backend emits `torch(x)`; the ONNX backend calls `onnx(graph, x, hint)`;
- the Numba backend runs `tdsl.runtime.activations.apply` with `code`, on CPU and CUDA,
  alone or fused into a `kern` op's epilogue when `fusable` (`fuse` absorbs it then);
- `reference(x)` is the numpy meaning the kernels are tested against.
Imports numpy only (the ONNX builders receive the graph under construction).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tdsl.dialects import tdsl as t
from tdsl.runtime import activations as A

OnnxBuilder = Callable[[Any, str, str], str]
"""(graph emitter, input name, name hint) -> output name; the emitter has `node`, `constant`
and `opset` (`tdsl.backends.onnx.emit._GraphEmitter`)."""


@dataclass(frozen=True)
class Activation:
    """An activation op: `op` is a `tdsl.ActivationOp` subclass (no properties)."""

    op: type[t.ActivationOp]
    code: int
    torch: str
    onnx: OnnxBuilder
    fusable: bool = False

    @property
    def name(self) -> str:
        """The DSL built-in and the `kern` `activation` value (`A.NAMES[code]`)."""
        return A.NAMES[self.code]

    def reference(self, x: np.ndarray) -> np.ndarray:
        return A.apply_array(x, self.code)


@dataclass(frozen=True)
class Binary:
    """A broadcasting binary op: the numpy ufunc is both reference and CPU kernel."""

    op: type[t.BinaryOp]
    code: int
    """Its branch in the CUDA elementwise kernel (`tdsl.runtime.cuda_steps.elementwise_kernel`)."""
    ufunc: np.ufunc
    symbol: str
    """The infix operator: the DSL's (`a + b`) and the one emitted torch code writes."""
    onnx: str

    @property
    def name(self) -> str:
        return self.op.name.removeprefix("tdsl.")


def _node(op_type: str) -> OnnxBuilder:
    return lambda g, x, hint: g.node(op_type, [x], hint)


def _clip(low: float, high: float) -> OnnxBuilder:
    def build(g: Any, x: str, hint: str) -> str:
        return g.node("Clip", [x, g.constant(np.array(low, np.float32), "zero"),
                               g.constant(np.array(high, np.float32), "six")], hint)
    return build


def _hardswish(g: Any, x: str, hint: str) -> str:
    if g.opset >= 14:
        return g.node("HardSwish", [x], hint)
    shifted = g.node("Add", [x, g.constant(np.array(3.0, np.float32), "three")], hint + "_shift")
    gate = _clip(0.0, 6.0)(g, shifted, hint + "_gate")
    return g.node("Div", [g.node("Mul", [x, gate], hint + "_mul"), g.constant(np.array(6.0, np.float32), "six")],
                  hint)


def _gelu(g: Any, x: str, hint: str) -> str:
    if g.opset >= 20:
        return g.node("Gelu", [x], hint)
    half = g.constant(np.array(0.5, np.float32), "half")
    erf = g.node("Erf", [g.node("Mul", [x, g.constant(np.array(1 / math.sqrt(2), np.float32), "rsqrt2")],
                                hint + "_in")], hint + "_erf")
    one = g.constant(np.array(1.0, np.float32), "one")
    return g.node("Mul", [g.node("Mul", [x, half], hint + "_half"), g.node("Add", [erf, one], hint + "_1p")], hint)


def _silu(g: Any, x: str, hint: str) -> str:
    return g.node("Mul", [x, g.node("Sigmoid", [x], hint + "_gate")], hint)


def _relu2(g: Any, x: str, hint: str) -> str:
    r = g.node("Relu", [x], hint + "_relu")
    return g.node("Mul", [r, r], hint)


_ACTIVATIONS = (
    Activation(t.ReluOp, A.RELU, "F.relu", _node("Relu"), fusable=True),
    Activation(t.Relu6Op, A.RELU6, "F.relu6", _clip(0.0, 6.0), fusable=True),
    Activation(t.GeluOp, A.GELU, "F.gelu", _gelu),
    Activation(t.SigmoidOp, A.SIGMOID, "torch.sigmoid", _node("Sigmoid")),
    Activation(t.TanhOp, A.TANH, "torch.tanh", _node("Tanh")),
    Activation(t.HardswishOp, A.HARDSWISH, "F.hardswish", _hardswish, fusable=True),
    Activation(t.SiluOp, A.SILU, "F.silu", _silu, fusable=True),
    Activation(t.Relu2Op, A.RELU2, "_rt.relu2", _relu2, fusable=True),
)

ACTIVATIONS: dict[type[t.ActivationOp], Activation] = {row.op: row for row in _ACTIVATIONS}
"""Every activation op, by class."""

BY_NAME: dict[str, Activation] = {row.name: row for row in _ACTIVATIONS}
"""The same rows by the name the IR spells (`kern.*` `activation`)."""

BINARY: dict[type[t.BinaryOp], Binary] = {row.op: row for row in (
    Binary(t.AddOp, 0, np.add, "+", "Add"),
    Binary(t.SubOp, 1, np.subtract, "-", "Sub"),
    Binary(t.MulOp, 2, np.multiply, "*", "Mul"),
    Binary(t.DivOp, 3, np.divide, "/", "Div"),
)}
"""Every binary arithmetic op, by class."""


EPILOGUES: tuple[str, ...] = ("none", *(row.name for row in _ACTIVATIONS if row.fusable))
"""The `activation` values a `kern` op may carry: "none" and every fusable activation."""
