"""`pack`: store every ternary weight as packed trits plus a scale buffer."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.ir import Operation
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter

from tdsl.dialects.locations import loc_of
from tdsl.dialects.storage import SCALE_SUFFIX
from tdsl.dialects.tdsl import GetParamOp, LayerOp, ParamOp, module_layers
from tdsl.dialects.tern import (
    FORMATS,
    GetPackedOp,
    PackedParamOp,
    PackedTensorType,
    QuantizeOp,
    lookup_packed_param,
)
from tdsl.dialects.context import op_at
from tdsl.dialects.weighted import weighted
from tdsl.errors import PassError
from tdsl.passes.precision_policy import check_choice
from tdsl.passes.shape_infer import find_entry



def _fail(message: str, op: Operation) -> PassError:
    return PassError(f"pack: {message}", loc_of(op))


def _declare_packed(layer: LayerOp, decl: ParamOp, quant: QuantizeOp, fmt: str) -> None:
    """Replace the latent weight's `tdsl.param` by `tern.packed_param` + a scale buffer."""
    name = decl.sym_name.data
    scale_name = name + SCALE_SUFFIX
    if layer.lookup_param(scale_name) is not None:
        raise _fail(f"layer @{layer.sym_name.data} already declares @{scale_name}, the scale of @{name}", decl)
    packed = PackedParamOp(name, PackedTensorType(decl.type.get_shape(), fmt), decl.kind.data)
    packed.attributes.update(decl.attributes)
    scale_type = quant.scale.type
    assert isinstance(scale_type, TensorType)
    scale = ParamOp(scale_name, scale_type, init="ones", kind="buffer")
    packed.location = scale.location = decl.location
    Rewriter.replace_op(decl, [packed, scale])


def _pack_quantize(layer: LayerOp, quant: QuantizeOp, fmt: str) -> None:
    read = quant.weight.owner
    if not isinstance(read, GetParamOp):
        raise _fail("tern.quantize must read its weight with tdsl.get_param", quant)
    name = read.param.root_reference.data
    users = {use.operation for result in quant.results for use in result.uses}
    for user in users:
        trait = weighted(user)
        if trait is None or trait.level != "trits" or trait.weight(user) != quant.trits or trait.scale(user) != quant.scale:
            raise _fail(f"the trits of @{name} feed {user.name}, which has no packed form", user)
    for use in read.output.uses:
        if use.operation is not quant and not isinstance(use.operation, QuantizeOp):
            raise _fail(f"the latent weight @{name} is also read by {use.operation.name}", use.operation)
    decl = layer.lookup_param(name)
    if decl is not None:
        _declare_packed(layer, decl, quant, fmt)
    packed_decl = lookup_packed_param(layer, name)
    assert packed_decl is not None
    get_packed = GetPackedOp(name, packed_decl.type)
    get_scale = GetParamOp(name + SCALE_SUFFIX, quant.scale.type)
    get_packed.location = get_scale.location = quant.location
    Rewriter.insert_op([get_packed, get_scale], InsertPoint.before(quant))
    for user in users:
        trait = weighted(user)
        assert trait is not None
        new: Operation = op_at(trait.kind, "packed")(user.operands[0], get_packed.output, get_scale.output,
                                                     trait.bias(user), result_type=user.results[0].type,
                                                     **trait.geometry(user))
        new.location = user.location
        new.attributes.update(user.attributes)
        Rewriter.replace_op(user, new)
    Rewriter.erase_op(quant)
    if not read.output.uses:
        Rewriter.erase_op(read)


@dataclass(frozen=True)
class PackPass(ModulePass):
    """Store every ternary weight as packed trits (`tern.packed_param`) plus a scale buffer.

    Needs `ternarize` before it. Each `tern.quantize` of a param `@w` is removed: `@w`
    becomes `tern.packed_param @w : !tern.packed<shape, format>` (its `quant` attribute
    kept) plus `tdsl.param @w_scale` (the quantiser's scale type, kind `buffer`, init
    `ones`), and each `tern.conv2d` / `tern.linear` it fed becomes `tern.packed_conv2d` /
    `tern.packed_linear` on `tern.get_packed @w` and `tdsl.get_param @w_scale`.

    Options: `format` (2bit, base3; docs/PACKED_FORMAT.md).
    """

    name = "pack"
    OPTION_CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"format": FORMATS}
    """The values `--help` lists and `apply` accepts, per option."""

    format: str = "2bit"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        check_choice(self.name, "format", self.format, self.OPTION_CHOICES["format"])
        find_entry(op, self.name)
        quantizes = [
            (layer, q) for layer in module_layers(op).values()
            for q in layer.forward.body.block.ops if isinstance(q, QuantizeOp)
        ]
        if not quantizes:
            raise PassError("pack: no ternary weights; run ternarize first", loc_of(op))
        for layer, quant in quantizes:
            _pack_quantize(layer, quant, self.format)
