"""`ternarize`: choose each weight's precision and rewrite ternary convs/linears to `tern` ops."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects.builtin import DictionaryAttr, FloatAttr, IntegerAttr, ModuleOp, StringAttr, f64
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter

from tdsl.dialects.context import op_at
from tdsl.dialects.tdsl import (
    GetParamOp,
    LayerOp,
    MatmulOp,
    TernaryMatmulOp,
    module_layers,
)
from tdsl.dialects.tern import THRESHOLDS, DequantizeOp, QuantizeOp
from tdsl.dialects.weighted import weighted
from tdsl.errors import PassError
from tdsl.passes.precision_policy import (
    POLICIES,
    PRECISIONS,
    WeightOp,
    check_choice,
    collect_sites,
    parse_overrides,
    resolve,
    specialise,
    weight_ops,
)
from tdsl.passes.shape_infer import find_entry


@dataclass(frozen=True)
class Quantiser:
    """How `tern.quantize` picks trits and scale (tdsl/quant/ternary.py)."""

    threshold: str
    delta: float
    sparsity: float
    per_channel: bool

    def attr(self) -> DictionaryAttr:
        """The `quant` attribute recorded on a ternary `tdsl.param`."""
        return DictionaryAttr({
            "threshold": StringAttr(self.threshold), "delta": FloatAttr(float(self.delta), f64),
            "sparsity": FloatAttr(float(self.sparsity), f64), "per_channel": IntegerAttr.from_bool(self.per_channel),
        })


ACT_QUANT = "act_quant"
"""The attribute `policy=b158` sets on each ternary linear: its input is quantised per token."""
TOKEN_INT8 = "int8_token"
"""Per-token absmax int8 (x ~ amax/127 * round(x * 127/amax)), BitNet b1.58's activations."""


def ternarize_op(op: WeightOp, read: GetParamOp, q: Quantiser, act_quant: str | None = None) -> None:
    """Rewrite one weight-bearing op to read alpha * T; new ops take `op`'s location.

    a weighted op (`tdsl.conv2d`, `tdsl.linear`, ...) becomes `tern.quantize` + the op of its
    kind at the trits level (`tern.conv2d`, `tern.linear`, ...), a ternary_matmul a
    `tern.linear`; a
    `tdsl.matmul` (weight [in, out]) keeps its form and reads `tern.dequantize` of a
    per-tensor quantisation, since its output channels are not dim 0.
    """
    per_channel = q.per_channel and not isinstance(op, MatmulOp)
    quant = QuantizeOp(read.output, q.threshold, q.delta, q.sparsity, per_channel)
    quant.location = op.location
    Rewriter.insert_op(quant, InsertPoint.before(op))
    if isinstance(op, MatmulOp):
        deq = DequantizeOp(quant.trits, quant.scale, read.output.type)
        deq.location = op.location
        Rewriter.insert_op(deq, InsertPoint.before(op))
        op.operands = [op.lhs, deq.output]
        return
    trait = weighted(op)  # None for a ternary_matmul: a linear without bias
    kind, bias = ("linear", None) if trait is None else (trait.kind, trait.bias(op))
    geometry = {} if trait is None else trait.geometry(op)
    new = op_at(kind, "trits")(op.input, quant.trits, quant.scale, bias, result_type=op.output.type, **geometry)
    new.location = op.location
    new.attributes.update(op.attributes)
    if act_quant is not None and kind == "linear":
        new.attributes[ACT_QUANT] = StringAttr(act_quant)
    Rewriter.replace_op(op, new)


def apply_precisions(
    module: ModuleOp, assignment: dict[str, dict[str, str | None]], quantiser: Quantiser | None,
    act_quant: str | None = None,
) -> None:
    """Record each param's precision; with a quantiser, rewrite the ternary ones to `tern` ops
    (ternary linears marked with `act_quant` when given)."""
    layers = module_layers(module)
    for sym, params in assignment.items():
        layer: LayerOp = layers[sym]
        for name, precision in params.items():
            decl = layer.lookup_param(name)
            if decl is None or precision is None:
                continue
            decl.precision = StringAttr(precision)
            if precision == "ternary" and quantiser is not None:
                decl.attributes["quant"] = quantiser.attr()
        if quantiser is None:
            continue
        for op, read in list(weight_ops(layer)):
            if params.get(read.param.root_reference.data) != "ternary":
                continue
            if isinstance(op, TernaryMatmulOp) and not _is_float(read):
                continue  # already trits: nothing to quantise
            ternarize_op(op, read, quantiser, act_quant)


def _is_float(read: GetParamOp) -> bool:
    return read.output.type.get_element_type().name.startswith("f")  # type: ignore[attr-defined]


@dataclass(frozen=True)
class TernarizePass(ModulePass):
    """Choose each weight's precision; rewrite ternary convs/linears to tern.quantize + tern ops.

    Weight-bearing ops reached from the `tdsl.entry` layer get a precision by `override`
    (space-separated `glob=precision`, fnmatch on the dotted path such as
    `layer1.0.conv1.weight`, first match wins), else the param's DSL annotation, else
    `policy`: `default` keeps the first conv/linear and the last linear (execution order)
    at `keep` and makes every other one ternary, `all` makes every one ternary, `none`
    none. `b158` is BitNet b1.58's recipe (Ma et al. 2024): every weight ternary but the
    last linear (the LM head, kept at `keep`; embeddings are not weight-bearing ops and stay
    float), absmean threshold per tensor (it fixes `threshold` and `per-channel`), and each
    ternary linear marked `act_quant = "int8_token"`: its input is quantised to int8 per
    token (absmax) in training and in the frozen model, as the Numba runtime's int8 path does.
    The precision is recorded as `precision` on the `tdsl.param`; a ternary param
    also gets `quant = {threshold, delta, sparsity, per_channel}`, and its conv2d / linear
    becomes `tern.quantize` (latent weight -> trits, scale) + `tern.conv2d` / `tern.linear`.
    Layers shared by instances that need different precisions are cloned (`Name_N`).

    Options: `threshold` (twn, absmean, fixed, sparsity), `delta` (the threshold for
    `fixed`, > 0), `sparsity` (zero fraction for `sparsity`, in [0, 1)), `per-channel`
    (one scale per output channel), `keep` (fp32, fp16, int8).
    """

    name = "ternarize"
    OPTION_CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "policy": POLICIES, "threshold": THRESHOLDS, "keep": tuple(p for p in PRECISIONS if p != "ternary"),
    }
    """The values `--help` lists and `validate` accepts, per option."""

    policy: str = "default"
    threshold: str = "twn"
    delta: float | int = 0.7
    sparsity: float | int = 0.0
    per_channel: bool = True
    keep: str = "fp16"
    override: str = ""

    def validate(self) -> list[tuple[str, str]]:
        """Check every option, naming the one that is wrong; the parsed overrides."""
        for option in ("policy", "threshold", "keep"):
            check_choice(self.name, option, getattr(self, option), self.OPTION_CHOICES[option])
        if not self.delta > 0:
            raise PassError(f"{self.name}: delta must be > 0, got {self.delta}")
        if not 0 <= self.sparsity < 1:
            raise PassError(f"{self.name}: sparsity must be in [0, 1), got {self.sparsity}")
        return parse_overrides(self.override, self.name)

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        overrides = self.validate()
        entry = find_entry(op, self.name)
        sites = collect_sites(op, entry, self.name)
        precisions = resolve(sites, overrides, self.policy, self.keep)
        assignment = specialise(op, entry, precisions)
        b158 = self.policy == "b158"
        quantiser = Quantiser("absmean" if b158 else self.threshold, float(self.delta), float(self.sparsity),
                              False if b158 else self.per_channel)
        apply_precisions(op, assignment, quantiser, TOKEN_INT8 if b158 else None)
