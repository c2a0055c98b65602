"""`canonicalize`: drop unreachable layers and dead value ops, fold identities."""
from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from tdsl.dialects.tdsl import DropoutOp, FlattenOp, ReshapeOp
from tdsl.passes.shape_infer import find_entry, remove_unreachable_layers


class FoldZeroDropoutPattern(RewritePattern):
    """`dropout{p = 0}` is the identity."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: DropoutOp, rewriter: PatternRewriter) -> None:
        if op.p.value.data == 0.0 and op.input.type == op.output.type:
            rewriter.replace(op, [], [op.input])


class FoldIdentityReshapePattern(RewritePattern):
    """A reshape whose ranked result type equals its input type changes nothing."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: ReshapeOp, rewriter: PatternRewriter) -> None:
        if isinstance(op.input.type, TensorType) and op.input.type == op.output.type:
            rewriter.replace(op, [], [op.input])


class FoldIdentityFlattenPattern(RewritePattern):
    """A flatten whose ranked result type equals its input type changes nothing."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: FlattenOp, rewriter: PatternRewriter) -> None:
        if isinstance(op.input.type, TensorType) and op.input.type == op.output.type:
            rewriter.replace(op, [], [op.input])


def canonicalization_patterns() -> list[RewritePattern]:
    return [FoldZeroDropoutPattern(), FoldIdentityReshapePattern(), FoldIdentityFlattenPattern()]


@dataclass(frozen=True)
class CanonicalizePass(ModulePass):
    """Remove unreachable layers and dead value ops; fold identity dropout/reshape/flatten.

    Layers that no instance chain from the `tdsl.entry` layer reaches are erased. Inside a
    forward, unused pure value ops (including `tdsl.get_param` reads) are erased; values
    reaching `tdsl.return` are used and stay. `tdsl.param` and `tdsl.instance`
    declarations are kept even when unused, since they are state in the parameter store,
    and `tdsl.call` is kept because a sub-layer may update buffers. `dropout{p = 0}` and a
    `reshape`/`flatten` whose result type equals its input type are replaced by the input.
    """

    name = "canonicalize"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        find_entry(op, self.name)
        remove_unreachable_layers(op)
        PatternRewriteWalker(GreedyRewritePatternApplier(canonicalization_patterns())).rewrite_module(op)
