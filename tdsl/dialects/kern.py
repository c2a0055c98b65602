"""The `kern` dialect: the kernel level of the IR (see docs/KERNEL_IR.md).

After `inline` and `fuse`, one op is one runtime kernel call: `kern.conv2d` / `kern.linear`
compute `act(bn(x * W [+ b]) [+ residual])` where W is a float weight, trits times a
scale, or packed trits times a scale. The IR says *what* is fused; the numbers (weights,
batch-norm statistics, the folded scale and bias) live in the parameter store and are
combined by the backend that materialises the weights.

Optional operands are told apart by `operandSegmentSizes` (a property), and every
attribute is an upstream builtin form, so the generic form parses in
`mlir-opt --allow-unregistered-dialect`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from xdsl.dialects.builtin import (
    FloatAttr,
    StringAttr,
    TensorType,
    f64,
)
from xdsl.ir import Attribute, Dialect, SSAValue
from xdsl.irdl import (
    AttrSizedOperandSegments,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from tdsl.dialects.shapes import (
    Dim,
    ShapeInferenceError,
    format_dims,
    linear_result_dims,
    same_dim,
)
from tdsl.dialects.tdsl import (
    AnyTensor,
    ConvGeometry,
    ValueOp,
    _check_rank,
    _f64,
    _result_type,
    CONV_KINDS,
    element_type_of,
)
from tdsl.dialects.weighted import WeightedOp
from tdsl.dialects.tern import PackedTensorType, ScaledWeight, _check_scale, i2
from tdsl.ops.elementwise import EPILOGUES


PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8", "ternary")
"""Weight precisions (docs/TERNARY.md); `ternary` weights carry a scale operand."""

BN_OPERANDS: tuple[str, ...] = ("bn_mean", "bn_var", "bn_weight", "bn_bias")


class _KernOp(ScaledWeight, ValueOp):
    """A fused conv/linear: the operands `input, weight, scale?, bias?, bn_mean?, bn_var?,
    bn_weight?, bn_bias?, residual?` and the epilogue properties; conv adds its geometry."""

    input = operand_def(AnyTensor)
    weight = operand_def(AnyTensor | PackedTensorType)
    scale = opt_operand_def(AnyTensor)
    bias = opt_operand_def(AnyTensor)
    bn_mean = opt_operand_def(AnyTensor)
    bn_var = opt_operand_def(AnyTensor)
    bn_weight = opt_operand_def(AnyTensor)
    bn_bias = opt_operand_def(AnyTensor)
    residual = opt_operand_def(AnyTensor)
    output = result_def(AnyTensor)
    eps = opt_prop_def(FloatAttr[f64])
    activation = prop_def(StringAttr)
    precision = prop_def(StringAttr)
    format = opt_prop_def(StringAttr)
    traits = traits_def(Pure())
    irdl_options = (AttrSizedOperandSegments(as_property=True),)

    WEIGHT_RANK: ClassVar[int]
    WEIGHT_RANK_TEXT: ClassVar[str]

    def __init__(
        self,
        x: SSAValue,
        weight: SSAValue,
        *,
        scale: SSAValue | None = None,
        bias: SSAValue | None = None,
        bn: Sequence[SSAValue] | None = None,
        eps: float | None = None,
        residual: SSAValue | None = None,
        activation: str = "none",
        precision: str = "fp32",
        format: str | None = None,
        result_type: Attribute | None = None,
        **geometry: Any,
    ):
        if geometry and not isinstance(self, ConvGeometry):
            raise TypeError(f"{self.name} takes no {', '.join(geometry)}")
        props = self.conv_properties(**geometry) if isinstance(self, ConvGeometry) else {}
        props.update(_epilogue_properties(eps, activation, precision, format))
        super().__init__(
            operands=[x, weight, *_optional_operands(scale, bias, bn, residual)],
            result_types=[_result_type(x, result_type)],
            properties=props,
        )

    @property
    def has_bn(self) -> bool:
        return self.bn_mean is not None  # type: ignore[attr-defined]

    @property
    def is_packed(self) -> bool:
        return isinstance(self.weight.type, PackedTensorType)  # type: ignore[attr-defined]

    def bn_operands(self) -> tuple[SSAValue, SSAValue, SSAValue, SSAValue] | None:
        """(mean, var, weight, bias) of the folded batch norm, or None."""
        if not self.has_bn:
            return None
        return tuple(getattr(self, n) for n in BN_OPERANDS)  # type: ignore[return-value]

    # Several optional operands cannot share a declarative `functional-type(operands, ...)`,
    # so each optional operand is introduced by a keyword and the types follow as one list.
    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_list([self.input, self.weight], printer.print_operand)  # type: ignore[attr-defined]
        for keyword in ("scale", "bias"):
            value = getattr(self, keyword)
            if value is not None:
                printer.print_string(f" {keyword} ")
                printer.print_operand(value)
        bn = self.bn_operands()
        if bn is not None:
            printer.print_string(" bn")
            with printer.in_parens():
                printer.print_list(bn, printer.print_operand)
        if self.residual is not None:  # type: ignore[attr-defined]
            printer.print_string(" residual ")
            printer.print_operand(self.residual)  # type: ignore[attr-defined]
        props = {k: v for k, v in self.properties.items() if k != "operandSegmentSizes"}
        printer.print_op_attributes({**props, **self.attributes})
        printer.print_string(" : ")
        printer.print_function_type([v.type for v in self.operands], [self.output.type])  # type: ignore[attr-defined]

    @classmethod
    def parse(cls, parser: Parser) -> _KernOp:
        pos = parser.pos
        unresolved = [parser.parse_unresolved_operand()]
        parser.parse_punctuation(",")
        unresolved.append(parser.parse_unresolved_operand())
        segments: list[int] = [1, 1]
        for keyword in ("scale", "bias"):
            present = parser.parse_optional_keyword(keyword) is not None
            if present:
                unresolved.append(parser.parse_unresolved_operand())
            segments.append(int(present))
        if parser.parse_optional_keyword("bn") is not None:
            bn = parser.parse_comma_separated_list(parser.Delimiter.PAREN, parser.parse_unresolved_operand)
            if len(bn) != len(BN_OPERANDS):
                parser.raise_error(f"'{cls.name}' bn(...) takes {len(BN_OPERANDS)} operands: {', '.join(BN_OPERANDS)}")
            unresolved.extend(bn)
            segments.extend([1] * len(BN_OPERANDS))
        else:
            segments.extend([0] * len(BN_OPERANDS))
        present = parser.parse_optional_keyword("residual") is not None
        if present:
            unresolved.append(parser.parse_unresolved_operand())
        segments.append(int(present))
        attrs = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        fn = parser.parse_function_type()
        operands = parser.resolve_operands(unresolved, fn.inputs.data, pos)
        if len(fn.outputs.data) != 1:
            parser.raise_error(f"'{cls.name}' has one result, but the type lists {len(fn.outputs.data)}")
        prop_names = cls.get_irdl_definition().properties.keys()
        props = {k: v for k, v in attrs.items() if k in prop_names}
        groups: list[list[SSAValue]] = []
        it = iter(operands)
        for n in segments:
            groups.append([next(it) for _ in range(n)])
        op = cls.build(
            operands=groups, result_types=[fn.outputs.data[0]], properties=props,
            attributes={k: v for k, v in attrs.items() if k not in prop_names},
        )
        return op

    def verify_epilogue(self) -> None:
        """Checks shared by conv and linear: bn, eps, activation, precision, scale, format, ranks."""
        name = self.name
        given = [n for n in BN_OPERANDS if getattr(self, n) is not None]
        if given and len(given) != len(BN_OPERANDS):
            raise VerifyException(
                f"'{name}' batch-norm operands {', '.join(BN_OPERANDS)} must be given all or none, "
                f"but got only {', '.join(given)}"
            )
        eps = self.eps  # type: ignore[attr-defined]
        if given and eps is None:
            raise VerifyException(f"'{name}' has batch-norm operands but no eps")
        if not given and eps is not None:
            raise VerifyException(f"'{name}' has eps but no batch-norm operands")
        if eps is not None and not eps.value.data > 0.0:
            raise VerifyException(f"'{name}' eps must be > 0, but got {eps.value.data}")
        for operand in ("bias", *BN_OPERANDS):
            value = getattr(self, operand)
            if value is not None:
                _check_rank(name, operand, value, "rank 1", lambda r: r == 1)
        activation = self.activation.data  # type: ignore[attr-defined]
        if activation not in EPILOGUES:
            raise VerifyException(
                f"'{name}' activation must be one of {', '.join(EPILOGUES)}, but got \"{activation}\""
            )
        precision = self.precision.data  # type: ignore[attr-defined]
        if precision not in PRECISIONS:
            raise VerifyException(
                f"'{name}' precision must be one of {', '.join(PRECISIONS)}, but got \"{precision}\""
            )
        self.verify_weight(precision)
        residual = self.residual  # type: ignore[attr-defined]
        out = self.output.type  # type: ignore[attr-defined]
        if residual is not None and isinstance(residual.type, TensorType) and isinstance(out, TensorType) \
                and residual.type != out:
            raise VerifyException(f"'{name}' residual type {residual.type} does not match the result type {out}")

    def verify_weight(self, precision: str) -> None:
        name, weight, scale = self.name, self.weight, self.scale  # type: ignore[attr-defined]
        fmt = self.format  # type: ignore[attr-defined]
        t = weight.type
        is_trits = isinstance(t, TensorType) and element_type_of(t) == i2
        if (precision == "ternary") != (self.is_packed or is_trits):
            raise VerifyException(
                f"'{name}' precision \"{precision}\" does not fit weight type {t} "
                "(packed or i2 weights are exactly the ternary ones)"
            )
        if precision == "ternary" and scale is None:
            raise VerifyException(f"'{name}' ternary weight needs a scale operand")
        if precision != "ternary" and scale is not None:
            raise VerifyException(f"'{name}' scale operand is only for ternary weights, but precision is \"{precision}\"")
        if self.is_packed:
            assert isinstance(t, PackedTensorType)
            if len(t.get_shape()) != self.WEIGHT_RANK:
                raise VerifyException(
                    f"'{name}' weight must have {self.WEIGHT_RANK_TEXT}, but got rank {len(t.get_shape())} ({t})"
                )
            got = "none" if fmt is None else f'"{fmt.data}"'
            if fmt is None or fmt.data != t.format.data:
                raise VerifyException(f"'{name}' format must be \"{t.format.data}\" (the packed weight's), but got {got}")
        else:
            _check_rank(name, "weight", weight, self.WEIGHT_RANK_TEXT, lambda r: r == self.WEIGHT_RANK)
            if fmt is not None:
                raise VerifyException(f"'{name}' format is only for packed weights, but the weight is {t}")
        if scale is not None:
            dims = self.weight_dims()
            _check_scale(name, scale, dims[0] if dims else None)

    @property
    def shape_name(self) -> str:
        return self.name

    def check_epilogue_dims(self, dims: Mapping[str, list[Dim]], out: list[Dim]) -> None:
        """bn operands have one entry per output channel (dim 1), the residual the output's shape."""
        for operand in BN_OPERANDS:
            if operand in dims:
                d = dims[operand]
                if len(out) < 2 or not same_dim(d[0], out[1]):
                    raise ShapeInferenceError(
                        f"{self.name}: output {format_dims(out)} has {out[1] if len(out) > 1 else 'no'} channels "
                        f"but {operand} has {d[0]} elements"
                    )
        if "residual" in dims:
            r = dims["residual"]
            if len(r) != len(out) or not all(same_dim(a, b) for a, b in zip(r, out)):
                raise ShapeInferenceError(
                    f"{self.name}: residual {format_dims(r)} does not match the output {format_dims(out)}"
                )


def _epilogue_properties(eps: float | None, activation: str, precision: str, format: str | None) -> dict[str, Attribute]:
    props: dict[str, Attribute] = {"activation": StringAttr(activation), "precision": StringAttr(precision)}
    if eps is not None:
        props["eps"] = _f64(eps)
    if format is not None:
        props["format"] = StringAttr(format)
    return props


def _optional_operands(
    scale: SSAValue | None,
    bias: SSAValue | None,
    bn: Sequence[SSAValue] | None,
    residual: SSAValue | None,
) -> list[list[SSAValue]]:
    """The optional operand segments in order: scale, bias, the four bn operands, residual."""
    bn_list: list[list[SSAValue]] = [[v] for v in bn] if bn is not None else [[] for _ in BN_OPERANDS]
    return [[] if scale is None else [scale], [] if bias is None else [bias], *bn_list, [] if residual is None else [residual]]


class _KernConvBase(_KernOp):
    """The fused kernel of a convolution kind (mixed with its `ConvGeometry`)."""

    WEIGHT_RANK: ClassVar[int] = 4
    WEIGHT_RANK_TEXT: ClassVar[str] = "rank 4 (O, C/groups, kh, kw)"

    def verify_(self) -> None:
        _check_rank(self.name, "input", self.input, "rank 4 (N, C, H, W)", lambda r: r == 4)
        self.verify_epilogue()
        self.verify_geometry()  # type: ignore[attr-defined]

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        out = self.conv_dims(self.name, dims["input"], self.ranked_weight(self.name), dims.get("bias"))  # type: ignore[attr-defined]
        self.check_epilogue_dims(dims, out)
        return out


def _kern_conv(kind: type[ConvGeometry]) -> type[_KernConvBase]:
    """`kern.<kind>` of a convolution kind."""

    class Op(kind, _KernConvBase):  # type: ignore[valid-type,misc]
        name = f"kern.{kind.KIND}"
        traits = traits_def(Pure(), WeightedOp(kind.KIND, "kernel"))

    props, hw_in, hw_out = kind.EXAMPLE
    Op.__name__ = Op.__qualname__ = kind.class_name()
    Op.__doc__ = (
        f"One fused {kind.SUMMARY} kernel: act(bn({kind.KIND}(x, W) [+ b]) [+ residual]), W = weight [* scale].\n\n"
        f"`%y = {Op.name} %x, %p scale %s bn(%m, %v, %g, %b) residual %r {{activation = \"relu\", eps = 1.000000e-05 : "
        f"f64, format = \"2bit\", precision = \"ternary\", {props}}} : (tensor<?x4x{hw_in}xf32>, "
        f"!tern.packed<8x4x3x3, \"2bit\">, ...) -> tensor<?x8x{hw_out}xf32>`\n")
    return irdl_op_definition(Op)


CONVS: dict[str, type[_KernConvBase]] = {kind.KIND: _kern_conv(kind) for kind in CONV_KINDS}
"""`kern.<kind>` of every convolution kind."""
Conv2dOp = CONVS["conv2d"]


@irdl_op_definition
class LinearOp(_KernOp):
    """One fused linear kernel: act(bn(x @ W^T [+ b]) [+ residual]), W = weight [* scale].

    `%y = kern.linear %x, %w bias %b {activation = "relu", precision = "fp16"} :
    (tensor<?x512xf32>, tensor<10x512xf32>, tensor<10xf32>) -> tensor<?x10xf32>`

    A folded batch norm normalises dim 1, so it needs a rank-2 result.
    """

    name = "kern.linear"
    traits = traits_def(Pure(), WeightedOp("linear", "kernel"))
    WEIGHT_RANK: ClassVar[int] = 2
    WEIGHT_RANK_TEXT: ClassVar[str] = "rank 2 (out, in)"

    def verify_(self) -> None:
        _check_rank(self.name, "input", self.input, "rank >= 1", lambda r: r >= 1)
        self.verify_epilogue()
        if self.has_bn:
            _check_rank(self.name, "input", self.input, "rank 2 (N, in) with a batch norm", lambda r: r == 2)

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        out = linear_result_dims(self.name, dims["input"], self.ranked_weight(self.name), dims.get("bias"))
        self.check_epilogue_dims(dims, out)
        return out


KERN = Dialect(
    "kern",
    [
        # fused compute kernels
        *CONVS.values(),
        LinearOp,
    ],
    [],
)
