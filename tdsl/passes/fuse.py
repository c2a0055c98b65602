"""`fuse`: one kern op per conv/linear, with its batch norm, residual add and activation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from tdsl.dialects import kern
from tdsl.dialects.locations import loc_of
from tdsl.dialects.tdsl import ActivationOp, AddOp, BatchNormOp, GetParamOp
from tdsl.dialects.tern import PackedTensorType
from tdsl.dialects.context import op_at
from tdsl.dialects.weighted import WeightedOp, weighted
from tdsl.errors import PassError
from tdsl.ops.elementwise import ACTIVATIONS

KernOp = kern.Conv2dOp | kern.LinearOp


def _precision(op: Operation, weight: SSAValue) -> str:
    """A float weight's precision: its param's `precision` (from `precision`/`ternarize` or a
    DSL annotation), fp32 when nothing set one."""
    read = weight.owner
    decl = read.declaration() if isinstance(read, GetParamOp) else None
    if decl is None or decl.precision is None:
        return "fp32"
    if decl.precision.data == "ternary":
        raise PassError(
            f"fuse: weight @{decl.sym_name.data} is marked ternary but {op.name} reads it as a float; "
            "run ternarize first",
            loc_of(op),
        )
    return decl.precision.data


def _weight_fields(op: Operation) -> dict[str, Any]:
    """scale, precision and format of a weighted op's weight, as kern op constructor arguments."""
    trait = weighted(op)
    assert trait is not None and trait.level != "kernel"
    if trait.level == "float":
        return {"precision": _precision(op, trait.weight(op))}
    t = trait.weight(op).type
    fmt = t.format.data if isinstance(t, PackedTensorType) else None
    return {"scale": trait.scale(op), "precision": "ternary", "format": fmt}


def _fields(op: KernOp) -> dict[str, Any]:
    """Everything a kern op's constructor needs to rebuild `op`."""
    fields: dict[str, Any] = {
        "scale": op.scale, "bias": op.bias, "bn": op.bn_operands(),
        "eps": op.eps.value.data if op.eps is not None else None, "residual": op.residual,
        "activation": op.activation.data, "precision": op.precision.data,
        "format": op.format.data if op.format is not None else None, "result_type": op.output.type,
    }
    fields.update(op.get_trait(WeightedOp).geometry(op))
    return fields


def _absorb(rewriter: PatternRewriter, producer: KernOp, consumer: Operation, **changes: Any) -> None:
    """Replace `consumer` by `producer` rebuilt with `changes`, at the consumer's position
    (a residual may be defined after the producer), keeping the producer's location."""
    fields = {**_fields(producer), **changes, "result_type": consumer.results[0].type}
    new = type(producer)(producer.input, producer.weight, **fields)
    new.location = producer.location
    new.attributes.update(producer.attributes)
    rewriter.replace(consumer, new)
    rewriter.erase(producer)


def _sole_kern_producer(value: SSAValue) -> KernOp | None:
    """The kern op defining `value` when the consumer at hand is its only user."""
    producer = value.owner
    trait = weighted(producer) if isinstance(producer, Operation) else None
    if trait is not None and trait.level == "kernel" and value.has_one_use():
        return producer  # type: ignore[return-value]
    return None


class WeightedToKernPattern(RewritePattern):
    """A weighted op above the kernel level (`tdsl.conv2d`, `tern.linear`, `tern.packed_conv2d`, ...)
    -> the plain kern op of its kind (`WeightedOp`: `op_at(kind, "kernel")`)."""

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter) -> None:
        trait = weighted(op)
        if trait is None or trait.level == "kernel":
            return
        new = op_at(trait.kind, "kernel")(
            op.operands[0], trait.weight(op), bias=trait.bias(op), result_type=op.results[0].type,
            **trait.geometry(op), **_weight_fields(op),
        )
        new.location = op.location
        new.attributes.update(op.attributes)
        rewriter.replace(op, new)


class FoldBatchNormPattern(RewritePattern):
    """`batch_norm(kern(x))` -> kern with the bn operands and eps, when the kern op has no
    epilogue yet (the fold must come first) and the batch norm is its only user. A linear
    folds only a rank-2 batch norm (dim 1 is then its output features)."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: BatchNormOp, rewriter: PatternRewriter) -> None:
        producer = _sole_kern_producer(op.input)
        if producer is None or producer.has_bn or producer.residual is not None or producer.activation.data != "none":
            return
        out = op.output.type
        if weighted(producer).kind == "linear" and not (isinstance(out, TensorType) and len(out.get_shape()) == 2):
            return
        _absorb(rewriter, producer, op, bn=(op.mean, op.var, op.weight, op.bias), eps=op.eps.value.data)


class FuseResidualPattern(RewritePattern):
    """`add(kern(x), r)` or `add(r, kern(x))` -> kern with residual r, when the add is the
    kern op's only user, the kern op has no residual or activation yet and r has the
    result's type (no broadcasting). The left operand is tried first."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: AddOp, rewriter: PatternRewriter) -> None:
        for mine, other in ((op.lhs, op.rhs), (op.rhs, op.lhs)):
            producer = _sole_kern_producer(mine)
            if producer is None or producer.residual is not None or producer.activation.data != "none":
                continue
            if other is mine or other.type != op.output.type or mine.type != op.output.type:
                continue
            _absorb(rewriter, producer, op, residual=other)
            return


class FuseActivationPattern(RewritePattern):
    """`act(kern(x))` -> kern with that activation, for a fusable activation (`relu`,
    `relu6`, ...: `tdsl.ops.elementwise`), when it is the kern op's only user and the kern
    op has no activation yet."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: ActivationOp, rewriter: PatternRewriter) -> None:
        row = ACTIVATIONS.get(type(op))
        if row is None or not row.fusable:
            return
        producer = _sole_kern_producer(op.input)
        if producer is None or producer.activation.data != "none":
            return
        _absorb(rewriter, producer, op, activation=row.name)


def fuse_patterns(fold_bn: bool = True, epilogue: bool = True) -> list[RewritePattern]:
    """The patterns of `fuse`: lowering to kern ops, then the optional folds."""
    patterns: list[RewritePattern] = [WeightedToKernPattern()]
    if fold_bn:
        patterns.append(FoldBatchNormPattern())
    if epilogue:
        patterns += [FuseResidualPattern(), FuseActivationPattern()]
    return patterns


@dataclass(frozen=True)
class FusePass(ModulePass):
    """Fuse each conv/linear with its batch norm, residual add and activation into one kern op.

    Every `tdsl.conv2d` / `tern.conv2d` / `tern.packed_conv2d` becomes `kern.conv2d` (likewise
    linear) with `precision` from its param (`fp32` when unset; `ternary` with a scale operand
    for tern ops, plus `format` when packed). Then, in the order conv -> bn -> + residual ->
    activation, a following `tdsl.batch_norm`, `tdsl.add` (same type, no broadcast) and
    fusable activation (`tdsl.relu`, `tdsl.relu6`, ...) are absorbed, each only when it is the sole user of the value
    it consumes. The bn is folded by reference (its mean/var/weight/bias become operands, the
    numbers are combined when weights are materialised). Run it after `inline`, which puts
    a conv and its bn in one forward. New ops keep the conv/linear's location.

    Options: `fold-bn` (absorb batch norms), `epilogue` (absorb residual adds and activations).
    """

    name = "fuse"

    fold_bn: bool = True
    epilogue: bool = True

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        applier = GreedyRewritePatternApplier(fuse_patterns(self.fold_bn, self.epilogue), dce_enabled=False)
        PatternRewriteWalker(applier).rewrite_module(op)
