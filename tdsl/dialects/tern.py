"""The `tern` dialect: the ternary level of the IR (see docs/TERNARY.md).

`ternarize` turns a weight-bearing `tdsl` op into `tern.quantize` (latent float weight ->
trits and scale) feeding `tern.conv2d` / `tern.linear`; `pack` replaces the latent weight
by packed storage (`tern.packed_param`, read by `tern.get_packed`) feeding
`tern.packed_conv2d` / `tern.packed_linear`. Trits are `tensor<...xi2>` (values -1, 0, 1),
scales `tensor<f32>` (per tensor) or `tensor<Oxf32>` (per output channel).

Value ops own shape rules like `tdsl` ops (`infer_result_type`, or `infer_result_types`
for the two results of `tern.quantize`), which `shape-infer` only calls. Attributes are
upstream builtin forms and `!tern.packed<...>` prints as a dialect type, so the generic
form parses in `mlir-opt --allow-unregistered-dialect`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from xdsl.dialects.builtin import (
    ArrayAttr,
    BoolAttr,
    FloatAttr,
    IntAttr,
    IntegerAttr,
    IntegerType,
    StringAttr,
    SymbolNameConstraint,
    TensorType,
    f32,
    f64,
)
from xdsl.ir import Attribute, Dialect, ParametrizedAttribute, SSAValue, TypeAttribute
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_attr_definition,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.parser import AttrParser, Parser
from xdsl.printer import Printer
from xdsl.traits import HasParent, Pure, SymbolOpInterface
from xdsl.utils.exceptions import VerifyException

from tdsl.dialects.weighted import WeightedOp
from tdsl.dialects.shapes import dims_of, linear_result_dims, make_tensor, same_dim
from tdsl.dialects.tdsl import (
    AnyTensor,
    ConvGeometry,
    ParamReadOp,
    Dim,
    LayerOp,
    ShapeInferenceError,
    ValueOp,
    _check_rank,
    _f64,
    _layer_of,
    _ranked,
    _result_type,
    CONV_KINDS,
    element_type_of,
)

i2 = IntegerType(2)
"""The element type of a trit."""

FORMATS: tuple[str, ...] = ("2bit", "base3")
"""Packed storage formats (docs/PACKED_FORMAT.md)."""

THRESHOLDS: tuple[str, ...] = ("twn", "absmean", "fixed", "sparsity")
"""Rules that pick the ternarisation threshold (tdsl/quant/ternary.py)."""


def _trits_type(dims: Sequence[Dim] | None) -> Attribute:
    return make_tensor(i2, dims) if dims is not None else TensorType(i2, [])


def _scale_dims(out_channels: Dim, per_channel: bool) -> list[Dim]:
    return [out_channels] if per_channel else []


# --------------------------------------------------------------------------- types


@irdl_attr_definition
class PackedTensorType(ParametrizedAttribute, TypeAttribute):
    """Packed trits of a weight: the unpacked weight's shape and the storage format.

    `!tern.packed<64x64x3x3, "2bit">`
    """

    name = "tern.packed"
    shape: ArrayAttr[IntAttr]
    format: StringAttr

    def __init__(self, shape: Sequence[int], format: str):
        super().__init__(ArrayAttr([IntAttr(int(d)) for d in shape]), StringAttr(format))

    def get_shape(self) -> tuple[int, ...]:
        return tuple(d.data for d in self.shape.data)

    def verify(self) -> None:
        if self.format.data not in FORMATS:
            raise VerifyException(
                f"'!tern.packed' format must be one of {', '.join(FORMATS)}, but got \"{self.format.data}\""
            )
        if any(d < 1 for d in self.get_shape()):
            raise VerifyException(f"'!tern.packed' dims must be static and positive, but got {list(self.get_shape())}")

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[Attribute]:
        with parser.in_angle_brackets():
            dims = parser.parse_dimension_list()
            parser.parse_punctuation(",")
            fmt = parser.parse_str_literal()
        return (ArrayAttr([IntAttr(d) for d in dims]), StringAttr(fmt))

    def print_parameters(self, printer: Printer) -> None:
        with printer.in_angle_brackets():
            printer.print_dimension_list(self.get_shape())
            printer.print_string(", ")
            printer.print_string_literal(self.format.data)


def _check_trits(op_name: str, operand: str, value: SSAValue) -> None:
    t = value.type
    if isinstance(t, TensorType) and t.get_element_type() != i2:
        raise VerifyException(f"'{op_name}' {operand} must have element type i2, but got {t}")


def _check_scale(op_name: str, value: SSAValue, out_channels: Dim) -> None:
    """A scale is f32 of rank 0 (per tensor) or rank 1 with one entry per output channel."""
    t = value.type
    if not isinstance(t, TensorType):
        return
    if t.get_element_type() != f32:
        raise VerifyException(f"'{op_name}' scale must have element type f32, but got {t}")
    dims = dims_of(t)
    assert dims is not None
    if len(dims) > 1:
        raise VerifyException(f"'{op_name}' scale must have rank 0 or 1, but got rank {len(dims)} ({t})")
    if len(dims) == 1 and not same_dim(dims[0], out_channels):
        raise VerifyException(
            f"'{op_name}' scale has {dims[0]} entries but the weight has {out_channels} output channels"
        )


# --------------------------------------------------------------------------- quantisation


@irdl_op_definition
class QuantizeOp(IRDLOperation):
    """Ternarises a latent float weight: w -> trits T and scale alpha with w ~ alpha * T.

    `%t, %s = tern.quantize %w {delta = 7.000000e-01 : f64, per_channel = true, sparsity = 0.000000e+00 : f64,
    threshold = "twn"} : tensor<8x4xf32> -> (tensor<8x4xi2>, tensor<8xf32>)`

    `threshold` picks the rule (tdsl/quant/ternary.py): `twn` (0.7 mean |w|), `absmean`,
    `fixed` (`delta` is the threshold), `sparsity` (`sparsity` is the zero fraction). With
    `per_channel` the scale has one entry per output channel (dim 0 of w).
    """

    name = "tern.quantize"
    weight = operand_def(AnyTensor)
    trits = result_def(TensorType)
    scale = result_def(TensorType)
    threshold = prop_def(StringAttr)
    delta = prop_def(FloatAttr[f64])
    sparsity = prop_def(FloatAttr[f64])
    per_channel = prop_def(BoolAttr)
    traits = traits_def(Pure())
    assembly_format = "$weight attr-dict `:` type($weight) `->` `(` type($trits) `,` type($scale) `)`"
    irdl_options = (ParsePropInAttrDict(),)

    def __init__(
        self,
        w: SSAValue,
        threshold: str = "twn",
        delta: float = 0.7,
        sparsity: float = 0.0,
        per_channel: bool = True,
    ):
        dims = dims_of(w.type)
        out = dims[0] if dims else None
        super().__init__(
            operands=[w],
            result_types=[_trits_type(dims), make_tensor(f32, _scale_dims(out, per_channel))],
            properties={
                "threshold": StringAttr(threshold), "delta": _f64(delta), "sparsity": _f64(sparsity),
                "per_channel": IntegerAttr.from_bool(per_channel),
            },
        )

    @property
    def is_per_channel(self) -> bool:
        return bool(self.per_channel.value.data)

    def verify_(self) -> None:
        if self.threshold.data not in THRESHOLDS:
            raise VerifyException(
                f"'tern.quantize' threshold must be one of {', '.join(THRESHOLDS)}, but got \"{self.threshold.data}\""
            )
        if not self.delta.value.data > 0.0:
            raise VerifyException(f"'tern.quantize' delta must be > 0, but got {self.delta.value.data}")
        if not 0.0 <= self.sparsity.value.data < 1.0:
            raise VerifyException(f"'tern.quantize' sparsity must be in [0, 1), but got {self.sparsity.value.data}")
        _check_rank(self.name, "weight", self.weight, "rank >= 1", lambda r: r >= 1)
        w = self.weight.type
        if isinstance(w, TensorType) and not element_type_of(w).name.startswith("f"):
            raise VerifyException(f"'tern.quantize' weight must be a float tensor, but got {w}")
        _check_trits(self.name, "trits", self.trits)
        if isinstance(w, TensorType) and self.trits.type.get_shape() != w.get_shape():
            raise VerifyException(
                f"'tern.quantize' trits shape {self.trits.type} does not match the weight shape {w}"
            )
        dims = dims_of(w)
        expected_rank = 1 if self.is_per_channel else 0
        if len(self.scale.type.get_shape()) != expected_rank:
            mode = "per_channel" if self.is_per_channel else "per tensor"
            raise VerifyException(
                f"'tern.quantize' scale must have rank {expected_rank} ({mode}), but got {self.scale.type}"
            )
        _check_scale(self.name, self.scale, dims[0] if dims else None)

    def infer_result_types(self) -> tuple[TensorType, TensorType]:
        w = _ranked("quantize", "weight", self.weight)
        return make_tensor(i2, w), make_tensor(f32, _scale_dims(w[0], self.is_per_channel))


@irdl_op_definition
class DequantizeOp(ValueOp):
    """alpha * T as a float tensor (scale broadcast over dim 0 when per channel).

    `%w = tern.dequantize %t, %s : (tensor<8x4xi2>, tensor<8xf32>) -> tensor<8x4xf32>`
    """

    name = "tern.dequantize"
    trits = operand_def(AnyTensor)
    scale = operand_def(AnyTensor)
    output = result_def(AnyTensor)
    traits = traits_def(Pure())
    assembly_format = "$trits `,` $scale attr-dict `:` functional-type(operands, results)"

    def __init__(self, trits: SSAValue, scale: SSAValue, result_type: Attribute | None = None):
        if result_type is None:
            dims = dims_of(trits.type)
            result_type = make_tensor(f32, dims) if dims is not None else TensorType(f32, [])
        super().__init__(operands=[trits, scale], result_types=[result_type])

    def verify_(self) -> None:
        _check_trits(self.name, "trits", self.trits)
        dims = dims_of(self.trits.type)
        _check_scale(self.name, self.scale, dims[0] if dims else None)

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        return list(dims["trits"])

    def infer_result_type(self) -> TensorType:  # the result takes the scale's float type
        return make_tensor(element_type_of(self.scale.type), _ranked("dequantize", "trits", self.trits))


# --------------------------------------------------------------------------- compute


class ScaledWeight:
    """A weight operand that may be packed (its type then holds the logical shape) and a
    scale operand outside the shape rule: what the tern and kern compute ops share."""

    def weight_dims(self) -> list[Dim] | None:
        t = self.weight.type  # type: ignore[attr-defined]
        if isinstance(t, PackedTensorType):
            return list(t.get_shape())
        return dims_of(t)

    def ranked_weight(self, op_name: str) -> list[Dim]:
        dims = self.weight_dims()
        if dims is None:
            raise ShapeInferenceError(f"{op_name}: weight has unranked type {self.weight.type}; its shape is unknown")  # type: ignore[attr-defined]
        return dims

    def operand_dims(self, name: str, value: SSAValue) -> list[Dim]:
        if name == "weight":
            return self.ranked_weight(self.shape_name)  # type: ignore[attr-defined]
        if name == "scale":  # checked by the verifier, not part of the rule
            return dims_of(value.type) or []
        return super().operand_dims(name, value)  # type: ignore[misc]


class _TernComputeOp(ScaledWeight, ValueOp):
    """A conv/linear whose weight is alpha * T; subclasses declare `input, weight, scale, bias`
    (conv adds its geometry, `ConvGeometry`)."""

    input = operand_def(AnyTensor)
    weight = operand_def(AnyTensor | PackedTensorType)
    scale = operand_def(AnyTensor)
    bias = opt_operand_def(AnyTensor)
    output = result_def(AnyTensor)
    traits = traits_def(Pure())
    assembly_format = "$input `,` $weight `,` $scale (`,` $bias^)? attr-dict `:` functional-type(operands, results)"

    PACKED: ClassVar[bool] = False
    """Whether the weight is `!tern.packed` (the packed_* ops) or `i2` trits (the others)."""

    def __init__(self, x: SSAValue, weight: SSAValue, scale: SSAValue, b: SSAValue | None = None, *,
                 result_type: Attribute | None = None, **geometry: Any):
        super().__init__(
            operands=[x, weight, scale, [] if b is None else [b]],
            result_types=[_result_type(x, result_type)],
            properties=self.conv_properties(**geometry) if isinstance(self, ConvGeometry) else {},
        )


    def verify_weight(self, rank: int, expected: str) -> None:
        if self.PACKED != isinstance(self.weight.type, PackedTensorType):  # type: ignore[attr-defined]
            want = "a !tern.packed weight" if self.PACKED else "a tensor of i2 trits"
            raise VerifyException(f"'{self.name}' weight must be {want}, but got {self.weight.type}")  # type: ignore[attr-defined]
        if self.PACKED:
            t = self.weight.type  # type: ignore[attr-defined]
            if len(t.get_shape()) != rank:
                raise VerifyException(f"'{self.name}' weight must have {expected}, but got rank {len(t.get_shape())} ({t})")
        else:
            _check_rank(self.name, "weight", self.weight, expected, lambda r: r == rank)  # type: ignore[attr-defined]
            _check_trits(self.name, "weight", self.weight)  # type: ignore[attr-defined]
        dims = self.weight_dims()
        _check_scale(self.name, self.scale, dims[0] if dims else None)  # type: ignore[attr-defined]
        if self.bias is not None:  # type: ignore[attr-defined]
            _check_rank(self.name, "bias", self.bias, "rank 1", lambda r: r == 1)  # type: ignore[attr-defined]


class _TernConvBase(_TernComputeOp):
    """A convolution kind (mixed with its `ConvGeometry`) with a ternary weight: same
    attributes and shape rule as the kind's `tdsl` op."""

    irdl_options = (ParsePropInAttrDict(),)

    def verify_(self) -> None:
        _check_rank(self.name, "input", self.input, "rank 4 (N, C, H, W)", lambda r: r == 4)  # type: ignore[attr-defined]
        self.verify_weight(4, "rank 4 (O, C/groups, kh, kw)")
        self.verify_geometry()  # type: ignore[attr-defined]

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        return self.conv_dims(self.shape_name, dims["input"], self.ranked_weight(self.shape_name),  # type: ignore[attr-defined]
                              dims.get("bias"))


class _TernLinearBase(_TernComputeOp):
    """`y = x @ (alpha * T)^T + b`: x[..., in], weight[out, in], optional b[out] -> [..., out]."""

    def verify_(self) -> None:
        _check_rank(self.name, "input", self.input, "rank >= 1", lambda r: r >= 1)  # type: ignore[attr-defined]
        self.verify_weight(2, "rank 2")

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        return linear_result_dims(self.shape_name, dims["input"], self.ranked_weight(self.shape_name),
                                  dims.get("bias"))


def _tern_conv(kind: type[ConvGeometry], packed: bool) -> type[_TernConvBase]:
    """`tern.<kind>` (i2 trits) or `tern.packed_<kind>` (`!tern.packed`) of a convolution kind."""
    level = "packed" if packed else "trits"

    class Op(kind, _TernConvBase):  # type: ignore[valid-type,misc]
        name = f"tern.packed_{kind.KIND}" if packed else f"tern.{kind.KIND}"
        traits = traits_def(Pure(), WeightedOp(kind.KIND, level))
        PACKED: ClassVar[bool] = packed

    props, hw_in, hw_out = kind.EXAMPLE
    weight = '!tern.packed<8x4x3x3, "2bit">' if packed else "tensor<8x4x3x3xi2>"
    what = "alpha * unpack(P)" if packed else "alpha * T (trits `i2`, scale per tensor or per output channel)"
    Op.__name__ = Op.__qualname__ = kind.class_name("Packed" if packed else "Tern")
    Op.__doc__ = (
        f"{kind.SUMMARY} with weight {what}; attributes and shape rule as `tdsl.{kind.KIND}`.\n\n"
        f"`%y = {Op.name} %x, %{'p' if packed else 't'}, %s {{{props}}} : (tensor<?x4x{hw_in}xf32>, {weight}, "
        f"tensor<8xf32>) -> tensor<?x8x{hw_out}xf32>`\n")
    return irdl_op_definition(Op)


TERN_CONVS: dict[str, type[_TernConvBase]] = {kind.KIND: _tern_conv(kind, packed=False) for kind in CONV_KINDS}
"""`tern.<kind>` of every convolution kind."""
PACKED_CONVS: dict[str, type[_TernConvBase]] = {kind.KIND: _tern_conv(kind, packed=True) for kind in CONV_KINDS}
"""`tern.packed_<kind>` of every convolution kind."""
TernConv2dOp = TERN_CONVS["conv2d"]
PackedConv2dOp = PACKED_CONVS["conv2d"]


@irdl_op_definition
class TernLinearOp(_TernLinearBase):
    """Linear layer with weight alpha * T.

    `%y = tern.linear %x, %t, %s : (tensor<?x8xf32>, tensor<4x8xi2>, tensor<4xf32>) -> tensor<?x4xf32>`
    """

    name = "tern.linear"
    traits = traits_def(Pure(), WeightedOp("linear", "trits"))


# --------------------------------------------------------------------------- packed storage


@irdl_op_definition
class PackedParamOp(IRDLOperation):
    """Packed trits of a weight, declared in a `tdsl.layer` (values live in the parameter store).

    `tern.packed_param @weight : !tern.packed<64x64x3x3, "2bit"> {kind = "param"}`
    """

    name = "tern.packed_param"
    sym_name = prop_def(SymbolNameConstraint())
    type = prop_def(PackedTensorType)
    kind = prop_def(StringAttr)
    traits = traits_def(SymbolOpInterface(), HasParent(LayerOp))

    KINDS: ClassVar[tuple[str, ...]] = ("param", "buffer")

    def __init__(self, sym_name: str, type: PackedTensorType, kind: str = "param"):
        super().__init__(properties={"sym_name": StringAttr(sym_name), "type": type, "kind": StringAttr(kind)})

    # A declarative `$type` would print the type without its `!tern.packed` prefix.
    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_symbol_name(self.sym_name.data)
        printer.print_string(" : ")
        printer.print_attribute(self.type)
        printer.print_op_attributes({"kind": self.kind, **self.attributes})

    @classmethod
    def parse(cls, parser: Parser) -> PackedParamOp:
        sym_name = parser.parse_symbol_name()
        parser.parse_punctuation(":")
        type = parser.parse_type()
        attrs = parser.parse_optional_attr_dict()
        kind = attrs.pop("kind", None)
        if not isinstance(type, PackedTensorType):
            parser.raise_error(f"'tern.packed_param' expects a !tern.packed type, but got {type}")
        if not isinstance(kind, StringAttr):
            parser.raise_error("'tern.packed_param' expects a string `kind` attribute")
        op = cls(sym_name.data, type, kind.data)
        op.attributes.update(attrs)
        return op

    def verify_(self) -> None:
        if self.kind.data not in self.KINDS:
            raise VerifyException(
                f"'tern.packed_param' @{self.sym_name.data} kind must be \"param\" or \"buffer\", "
                f"but got \"{self.kind.data}\""
            )


def lookup_packed_param(layer: LayerOp, name: str) -> PackedParamOp | None:
    for op in layer.body.block.ops:
        if isinstance(op, PackedParamOp) and op.sym_name.data == name:
            return op
    return None


@irdl_op_definition
class GetPackedOp(ParamReadOp):
    """Reads a `tern.packed_param` of the enclosing layer.

    `%p = tern.get_packed @weight : !tern.packed<64x64x3x3, "2bit">`
    """

    name = "tern.get_packed"
    output = result_def(PackedTensorType)

    def declaration(self) -> PackedParamOp | None:
        layer = _layer_of(self)
        return None if layer is None else lookup_packed_param(layer, self.param.root_reference.data)

    def verify_(self) -> None:
        layer = _layer_of(self)
        if layer is None:
            return
        decl = self.declaration()
        if decl is None:
            raise VerifyException(
                f"'tern.get_packed' refers to @{self.param.root_reference.data}, which is not a tern.packed_param "
                f"of layer @{layer.sym_name.data}"
            )
        if self.output.type != decl.type:
            raise VerifyException(
                f"'tern.get_packed' result type {self.output.type} does not match the declared type {decl.type} "
                f"of @{decl.sym_name.data}"
            )


@irdl_op_definition
class PackedLinearOp(_TernLinearBase):
    """Linear layer with weight alpha * unpack(P).

    `%y = tern.packed_linear %x, %p, %s : (tensor<?x8xf32>, !tern.packed<4x8, "2bit">, tensor<4xf32>) -> tensor<?x4xf32>`
    """

    name = "tern.packed_linear"
    traits = traits_def(Pure(), WeightedOp("linear", "packed"))
    PACKED: ClassVar[bool] = True


TERN = Dialect(
    "tern",
    [
        # quantisation
        QuantizeOp,
        DequantizeOp,
        # compute on alpha * T
        *TERN_CONVS.values(),
        TernLinearOp,
        # packed storage
        PackedParamOp,
        GetPackedOp,
        *PACKED_CONVS.values(),
        PackedLinearOp,
    ],
    [PackedTensorType],
)
