"""`WeightedOp`: the one interface of an op that computes with a weight (conv2d, linear), at
every level of the IR, as MLIR carries such facts in an op interface and xDSL in a trait.

A weighted op exists once per level: `float` (`tdsl.conv2d`, a float weight), `trits`
(`tern.conv2d`, i2 trits and a scale), `packed` (`tern.packed_conv2d`, `!tern.packed` and a
scale) and `kernel` (`kern.conv2d`, one fused kernel call). Passes, freezing and backends ask
an op for its trait (`weighted(op)`) and for the op of the same kind at another level
(`tdsl.dialects.context.op_at(kind, level)`, beside the dialect list it searches) instead of
naming classes in `isinstance` unions, so a new weighted op is its classes with this trait,
not an edit at every walk.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xdsl.ir import Operation, SSAValue
from xdsl.traits import OpTrait

LEVELS: tuple[str, ...] = ("float", "trits", "packed", "kernel")
"""The IR levels a weighted op passes through, in lowering order."""


@dataclass(frozen=True)
class WeightedOp(OpTrait):
    """`kind` (what the weight does, named as torch, calibration and the storage layout name it:
    conv2d, linear, ...) and `level` (float, trits, packed, kernel) of a weighted op, and its
    operands by role: every such op names them `input`, `weight`, optional `scale` (not at the
    float level) and optional `bias`; a conv carries its geometry (`ConvGeometry`). The kinds
    are the ones the dialects' ops declare (`tdsl.dialects.context.KINDS`)."""

    kind: str
    level: str

    def verify(self, op: Operation) -> None:
        assert self.level in LEVELS, (self.kind, self.level)

    def weight(self, op: Operation) -> SSAValue:
        return op.weight  # type: ignore[attr-defined]

    def scale(self, op: Operation) -> SSAValue | None:
        return None if self.level == "float" else op.scale  # type: ignore[attr-defined]

    def bias(self, op: Operation) -> SSAValue | None:
        return op.bias  # type: ignore[attr-defined]

    def geometry(self, op: Operation) -> dict[str, Any]:
        """The geometry of a conv (stride, padding, dilation, groups, ... as constructor
        keywords, `ConvGeometry.geometry`); {} for an op without one (a linear)."""
        geometry = getattr(op, "geometry", None)
        return geometry() if geometry is not None else {}


def weighted(op: Operation) -> WeightedOp | None:
    """The op's `WeightedOp` trait, or None for an op without a weight."""
    return op.get_trait(WeightedOp)
