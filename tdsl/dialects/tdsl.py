"""The `tdsl` dialect: the network level of the IR (see docs/IR.md).

A `builtin.module` holds one `tdsl.layer` per specialisation of a DSL layer. A layer
declares its weights (`tdsl.param`) and sub-layers (`tdsl.instance`) and has one traced
`tdsl.forward`. Value ops inside a forward carry their own shape rule
(`infer_result_type`), which the `shape-infer` pass only calls.

Every attribute is an upstream builtin form, so the generic form parses in
`mlir-opt --allow-unregistered-dialect`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from xdsl.dialects.builtin import (
    ArrayAttr,
    BoolAttr,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    DictionaryAttr,
    FlatSymbolRefAttr,
    FloatAttr,
    FunctionType,
    IntegerAttr,
    IntegerType,
    ModuleOp,
    StringAttr,
    SymbolNameConstraint,
    SymbolRefAttr,
    TensorType,
    UnrankedTensorType,
    f64,
    i32,
    i64,
)
from xdsl.ir import Attribute, Block, Dialect, Operation, Region, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    region_def,
    result_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.traits import (
    HasParent,
    IsolatedFromAbove,
    IsTerminator,
    NoTerminator,
    Pure,
    SymbolOpInterface,
    SymbolTable,
)
from xdsl.utils.exceptions import VerifyException

from tdsl.dialects.weighted import WeightedOp
from tdsl.dialects.shapes import (
    Dim,
    ShapeInferenceError,
    broadcast,
    conv2d_result_dims,
    conv_channel_dims,
    dims_of,
    format_dims,
    linear_result_dims,
    make_tensor,
    matmul_result_dims,
    pool2d_result_dims,
    reshape_result_dims,
    same_dim,
)

AnyTensor = TensorType | UnrankedTensorType
"""A ranked or an unranked tensor type (results are unranked before shape-infer)."""


# --------------------------------------------------------------------------- helpers


def _i64(value: int) -> IntegerAttr:
    return IntegerAttr(value, i64)


def _f64(value: float) -> FloatAttr:
    return FloatAttr(float(value), f64)


def _array(values: Sequence[int]) -> DenseArrayBase:
    return DenseArrayBase.from_list(i64, [int(v) for v in values])


def _ints(attr: DenseArrayBase) -> tuple[int, ...]:
    return tuple(int(v) for v in attr.get_values())


def element_type_of(t: Attribute) -> Attribute:
    assert isinstance(t, TensorType | UnrankedTensorType), t
    return t.get_element_type()


def _unranked_like(value: SSAValue) -> UnrankedTensorType:
    return UnrankedTensorType(element_type_of(value.type))


def _result_type(value: SSAValue, result_type: Attribute | None) -> Attribute:
    return _unranked_like(value) if result_type is None else result_type


def _ranked(op_name: str, operand: str, value: SSAValue) -> list[Dim]:
    dims = dims_of(value.type)
    if dims is None:
        raise ShapeInferenceError(f"{op_name}: {operand} has unranked type {value.type}; its shape is unknown")
    return dims


def _check_rank(op_name: str, operand: str, value: SSAValue, expected: str, ok) -> None:
    """Raise a VerifyException when a ranked operand's rank fails `ok(rank)`."""
    dims = dims_of(value.type)
    if dims is not None and not ok(len(dims)):
        raise VerifyException(
            f"'{op_name}' {operand} must have {expected}, but got rank {len(dims)} ({value.type})"
        )


def _check_pair(op_name: str, prop: str, values: tuple[int, ...], minimum: int) -> None:
    if len(values) != 2:
        raise VerifyException(f"'{op_name}' {prop} must have 2 entries, but got {len(values)}")
    if any(v < minimum for v in values):
        raise VerifyException(f"'{op_name}' {prop} entries must be >= {minimum}, but got {list(values)}")


def _layer_of(op: Operation) -> LayerOp | None:
    parent = op.parent_op()
    while parent is not None and not isinstance(parent, LayerOp):
        parent = parent.parent_op()
    return parent


def _is_declaration(op: Operation) -> bool:
    """A symbol op that may live only in a layer: `tdsl.param`, `tdsl.instance`, `tern.packed_param`."""
    return op.has_trait(SymbolOpInterface) and op.has_trait(HasParent(LayerOp))


# --------------------------------------------------------------------------- structure


@irdl_op_definition
class LayerOp(IRDLOperation):
    """One specialisation of a DSL layer: its params, instances and one forward.

    `tdsl.layer @Linear layer "Linear" params {in_features = 8 : i64} { ... }`

    `sym_name` is unique per specialisation (`BasicBlock`, `BasicBlock_1`), `layer` is the DSL
    name and `params` the DSL parameter values (i64, f64, i1, string, array). The body holds
    `tdsl.param`, `tdsl.instance` and exactly one `tdsl.forward` (helper functions are inlined
    by IR generation).
    """

    name = "tdsl.layer"
    sym_name = prop_def(SymbolNameConstraint())
    layer = prop_def(StringAttr)
    params = prop_def(DictionaryAttr)
    body = region_def("single_block")
    traits = traits_def(SymbolOpInterface(), SymbolTable(), NoTerminator(), IsolatedFromAbove())
    assembly_format = "$sym_name `layer` $layer `params` $params attr-dict-with-keyword $body"

    def __init__(
        self,
        sym_name: str,
        layer: str,
        params: Mapping[str, Attribute] | DictionaryAttr | None = None,
        body: Region | None = None,
    ):
        if not isinstance(params, DictionaryAttr):
            params = DictionaryAttr(dict(params or {}))
        super().__init__(
            properties={"sym_name": StringAttr(sym_name), "layer": StringAttr(layer), "params": params},
            regions=[body if body is not None else Region(Block())],
        )

    def verify_(self) -> None:
        forwards = [op for op in self.body.block.ops if isinstance(op, ForwardOp)]
        if len(forwards) != 1:
            raise VerifyException(
                f"'tdsl.layer' @{self.sym_name.data} must hold exactly one tdsl.forward, but holds {len(forwards)}"
            )
        for op in self.body.block.ops:
            if not isinstance(op, ForwardOp) and not _is_declaration(op):
                raise VerifyException(
                    f"'tdsl.layer' @{self.sym_name.data} may hold only declarations (tdsl.param, "
                    f"tdsl.instance, tern.packed_param) and tdsl.forward, but holds {op.name}"
                )

    @property
    def forward(self) -> ForwardOp:
        for op in self.body.block.ops:
            if isinstance(op, ForwardOp):
                return op
        raise LookupError(f"layer @{self.sym_name.data} has no tdsl.forward")

    def params_ops(self) -> list[ParamOp]:
        return [op for op in self.body.block.ops if isinstance(op, ParamOp)]

    def instance_ops(self) -> list[InstanceOp]:
        return [op for op in self.body.block.ops if isinstance(op, InstanceOp)]

    def lookup_param(self, name: str) -> ParamOp | None:
        for op in self.params_ops():
            if op.sym_name.data == name:
                return op
        return None

    def lookup_instance(self, name: str) -> InstanceOp | None:
        for op in self.instance_ops():
            if op.sym_name.data == name:
                return op
        return None


@irdl_op_definition
class ParamOp(IRDLOperation):
    """A weight or buffer of the enclosing layer; its values live in the parameter store.

    `tdsl.param @weight : tensor<4x8xf32> {init = "kaiming_uniform", kind = "param"}`

    `init` is one of `kaiming_uniform`, `uniform`, `zeros`, `ones`, `randn`, `random_ternary`,
    `constant`, with `init_args` such as `{fan_in = 27 : i64}`; `kind` is `param` or `buffer`;
    `precision` comes from a `@fp16`/`@int8`/`@ternary`/`@fp32` annotation or a `TernaryTensor`
    type, and later from the `ternarize`/`precision` passes.
    """

    name = "tdsl.param"
    sym_name = prop_def(SymbolNameConstraint())
    type = prop_def(TensorType)
    init = prop_def(StringAttr)
    init_args = opt_prop_def(DictionaryAttr)
    kind = prop_def(StringAttr)
    precision = opt_prop_def(StringAttr)
    traits = traits_def(SymbolOpInterface(), HasParent(LayerOp))
    assembly_format = "$sym_name `:` $type attr-dict"
    irdl_options = (ParsePropInAttrDict(),)

    INITS: ClassVar[tuple[str, ...]] = (
        "kaiming_uniform", "uniform", "zeros", "ones", "randn", "random_ternary", "constant",
    )
    KINDS: ClassVar[tuple[str, ...]] = ("param", "buffer")

    def __init__(
        self,
        sym_name: str,
        type: TensorType,
        init: str = "zeros",
        kind: str = "param",
        init_args: Mapping[str, Attribute] | None = None,
        precision: str | None = None,
    ):
        props: dict[str, Attribute] = {
            "sym_name": StringAttr(sym_name), "type": type, "init": StringAttr(init), "kind": StringAttr(kind),
        }
        if init_args is not None:
            props["init_args"] = DictionaryAttr(dict(init_args))
        if precision is not None:
            props["precision"] = StringAttr(precision)
        super().__init__(properties=props)

    def verify_(self) -> None:
        if self.init.data not in self.INITS:
            raise VerifyException(
                f"'tdsl.param' @{self.sym_name.data} init must be one of {', '.join(self.INITS)}, "
                f"but got \"{self.init.data}\""
            )
        if self.kind.data not in self.KINDS:
            raise VerifyException(
                f"'tdsl.param' @{self.sym_name.data} kind must be \"param\" or \"buffer\", but got \"{self.kind.data}\""
            )


@irdl_op_definition
class InstanceOp(IRDLOperation):
    """A sub-layer instance of the enclosing layer, bound to a `tdsl.layer` specialisation.

    `tdsl.instance @fc = @Linear`
    """

    name = "tdsl.instance"
    sym_name = prop_def(SymbolNameConstraint())
    callee = prop_def(FlatSymbolRefAttr)
    traits = traits_def(SymbolOpInterface(), HasParent(LayerOp))
    assembly_format = "$sym_name `=` $callee attr-dict"

    def __init__(self, sym_name: str, callee: str):
        super().__init__(properties={"sym_name": StringAttr(sym_name), "callee": SymbolRefAttr(callee)})

    def verify_(self) -> None:
        layer = _layer_of(self)
        module = layer.parent_op() if layer is not None else None
        if not isinstance(module, ModuleOp):
            return
        target = SymbolTable.lookup_symbol(module, self.callee)
        if not isinstance(target, LayerOp):
            raise VerifyException(
                f"'tdsl.instance' @{self.sym_name.data} refers to @{self.callee.root_reference.data}, "
                "which is not a tdsl.layer of the module"
            )


@irdl_op_definition
class ForwardOp(IRDLOperation):
    """The traced forward function of a layer; block arguments are the inputs.

    `tdsl.forward (%x : tensor<?x8xf32>) -> tensor<?x4xf32> { ... tdsl.return %y : ... }`
    """

    name = "tdsl.forward"
    function_type = prop_def(FunctionType)
    arg_names = opt_prop_def(ArrayAttr[StringAttr])
    body = region_def("single_block")
    traits = traits_def(HasParent(LayerOp), IsolatedFromAbove())

    def __init__(
        self,
        input_types: Sequence[Attribute],
        result_types: Sequence[Attribute],
        body: Region | None = None,
        arg_names: Sequence[str] | None = None,
    ):
        props: dict[str, Attribute] = {"function_type": FunctionType.from_lists(input_types, result_types)}
        if arg_names is not None:
            props["arg_names"] = ArrayAttr([StringAttr(n) for n in arg_names])
        super().__init__(properties=props, regions=[body if body is not None else Region(Block(arg_types=input_types))])

    @property
    def args(self) -> tuple[SSAValue, ...]:
        return tuple(self.body.block.args)

    @property
    def return_op(self) -> ReturnOp:
        last = self.body.block.last_op
        assert isinstance(last, ReturnOp), "verified forward ends with tdsl.return"
        return last

    def update_function_type(self) -> None:
        """Set `function_type` from the block argument types and the return operand types."""
        self.function_type = FunctionType.from_lists(
            [a.type for a in self.body.block.args], [v.type for v in self.return_op.operands]
        )

    def verify_(self) -> None:
        inputs, outputs = self.function_type.inputs.data, self.function_type.outputs.data
        arg_types = tuple(a.type for a in self.body.block.args)
        if arg_types != inputs:
            raise VerifyException(
                f"'tdsl.forward' block argument types ({', '.join(map(str, arg_types))}) do not match "
                f"function_type inputs ({', '.join(map(str, inputs))})"
            )
        last = self.body.block.last_op
        if not isinstance(last, ReturnOp):
            raise VerifyException("'tdsl.forward' body must end with tdsl.return")
        ret_types = tuple(v.type for v in last.operands)
        if ret_types != outputs:
            raise VerifyException(
                f"'tdsl.forward' returns ({', '.join(map(str, ret_types))}) but function_type declares "
                f"({', '.join(map(str, outputs))})"
            )
        if self.arg_names is not None and len(self.arg_names.data) != len(inputs):
            raise VerifyException(
                f"'tdsl.forward' arg_names has {len(self.arg_names.data)} entries for {len(inputs)} arguments"
            )

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        with printer.in_parens():
            printer.print_list(self.body.block.args, printer.print_block_argument)
        printer.print_string(" -> ")
        outputs = self.function_type.outputs.data
        if len(outputs) == 1 and not isinstance(outputs[0], FunctionType):
            printer.print_attribute(outputs[0])
        else:
            with printer.in_parens():
                printer.print_list(outputs, printer.print_attribute)
        extra = dict(self.attributes)
        if self.arg_names is not None:
            extra["arg_names"] = self.arg_names
        printer.print_op_attributes(extra, print_keyword=True)
        printer.print_string(" ")
        printer.print_region(self.body, print_entry_block_args=False)

    @classmethod
    def parse(cls, parser: Parser) -> ForwardOp:
        def parse_arg() -> tuple[Parser.Argument, Attribute | None]:
            return parser.parse_argument(), parser.parse_optional_location()

        parsed = parser.parse_comma_separated_list(parser.Delimiter.PAREN, parse_arg)
        args = [arg for arg, _ in parsed]
        parser.parse_punctuation("->")
        if parser.parse_optional_punctuation("(") is not None:
            outputs: list[Attribute] = []
            if parser.parse_optional_punctuation(")") is None:
                outputs = parser.parse_comma_separated_list(parser.Delimiter.NONE, parser.parse_type)
                parser.parse_punctuation(")")
        else:
            outputs = [parser.parse_type()]
        attrs = parser.parse_optional_attr_dict_with_keyword()
        extra = dict(attrs.data) if attrs is not None else {}
        arg_names = extra.pop("arg_names", None)
        body = parser.parse_region(args)
        for block_arg, (_, loc) in zip(body.block.args, parsed):
            if loc is not None:
                block_arg.location = loc
        op = cls.__new__(cls)
        props: dict[str, Attribute] = {
            "function_type": FunctionType.from_lists([a.type for a in args], outputs)
        }
        if arg_names is not None:
            props["arg_names"] = arg_names
        IRDLOperation.__init__(op, properties=props, attributes=extra, regions=[body])
        return op


@irdl_op_definition
class ReturnOp(IRDLOperation):
    """Terminates a forward with its results; `names` labels them for the implicit `main` layer.

    `tdsl.return %y : tensor<?x4xf32>`
    """

    name = "tdsl.return"
    values = var_operand_def()
    names = opt_prop_def(ArrayAttr[StringAttr])
    traits = traits_def(IsTerminator(), HasParent(ForwardOp))
    assembly_format = "($values^ `:` type($values))? attr-dict"
    irdl_options = (ParsePropInAttrDict(),)

    def __init__(self, values: Sequence[SSAValue], names: Sequence[str] | None = None):
        props = {} if names is None else {"names": ArrayAttr([StringAttr(n) for n in names])}
        super().__init__(operands=[list(values)], properties=props)

    def verify_(self) -> None:
        if self.names is not None and len(self.names.data) != len(self.values):
            raise VerifyException(
                f"'tdsl.return' names has {len(self.names.data)} entries for {len(self.values)} values"
            )


# --------------------------------------------------------------------------- value ops


class ValueOp(IRDLOperation):
    """A single-result op inside a forward that owns a shape rule.

    The rule is `result_dims(dims)`: the result's dims from the operands' dims (a dict by
    operand name; absent optional operands are missing), raising `ShapeInferenceError`.
    `shape-infer` calls `infer_result_type`, the Numba plan `shapes.concrete_result_shape`:
    both run the same rule.
    """

    @property
    def shape_name(self) -> str:
        """How shape messages name the op (`conv2d`, `packed_linear`)."""
        return self.name.split(".", 1)[1]

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        raise NotImplementedError

    def operand_dims(self, name: str, value: SSAValue) -> list[Dim]:
        """The static dims of an operand (a packed weight overrides this with its logical shape)."""
        return _ranked(self.shape_name, name, value)

    def named_operands(self) -> list[tuple[str, SSAValue]]:
        """(operand name, value) for each operand present, in definition order."""
        out: list[tuple[str, SSAValue]] = []
        for name, _ in type(self).get_irdl_definition().operands:
            value = getattr(self, name)
            if isinstance(value, SSAValue):
                out.append((name, value))
        return out

    def infer_result_type(self) -> TensorType:
        dims = {name: self.operand_dims(name, v) for name, v in self.named_operands()}
        return make_tensor(element_type_of(self.operands[0].type), self.result_dims(dims))


class ParamReadOp(ValueOp):
    """Reads a declaration of the enclosing layer by name; subclasses declare `output`."""

    param = prop_def(FlatSymbolRefAttr, prop_name="name")
    traits = traits_def(Pure())
    assembly_format = "$name attr-dict `:` type($output)"

    def __init__(self, name: str, result_type: Attribute):
        super().__init__(properties={"name": SymbolRefAttr(name)}, result_types=[result_type])

    def declaration(self) -> Operation | None:
        raise NotImplementedError

    def infer_result_type(self) -> Attribute:
        decl = self.declaration()
        if decl is None:
            raise ShapeInferenceError(f"{self.shape_name}: unknown parameter @{self.param.root_reference.data}")
        return decl.type  # type: ignore[attr-defined]

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        return dims_of(self.infer_result_type()) or []


@irdl_op_definition
class GetParamOp(ParamReadOp):
    """Reads a `tdsl.param` of the enclosing layer.

    `%w = tdsl.get_param @weight : tensor<4x8xf32>`
    """

    name = "tdsl.get_param"
    output = result_def(AnyTensor)

    def declaration(self) -> ParamOp | None:
        layer = _layer_of(self)
        return None if layer is None else layer.lookup_param(self.param.root_reference.data)

    def verify_(self) -> None:
        layer = _layer_of(self)
        if layer is None:
            return
        decl = self.declaration()
        if decl is None:
            raise VerifyException(
                f"'tdsl.get_param' refers to @{self.param.root_reference.data}, which is not a tdsl.param "
                f"of layer @{layer.sym_name.data}"
            )
        if isinstance(self.output.type, TensorType) and self.output.type != decl.type:
            raise VerifyException(
                f"'tdsl.get_param' result type {self.output.type} does not match the declared type {decl.type} "
                f"of @{decl.sym_name.data}"
            )



@irdl_op_definition
class CallOp(IRDLOperation):
    """Calls the forward of a sub-layer instance of the enclosing layer.

    `%y = tdsl.call @fc(%x) : (tensor<?x8xf32>) -> tensor<?x4xf32>`

    Its result types come from the callee's forward, which `shape-infer` specialises.
    """

    name = "tdsl.call"
    callee = prop_def(FlatSymbolRefAttr)
    inputs = var_operand_def(AnyTensor)
    outputs = var_result_def(AnyTensor)
    assembly_format = "$callee `(` $inputs `)` attr-dict `:` functional-type($inputs, $outputs)"

    def __init__(self, callee: str, inputs: Sequence[SSAValue], result_types: Sequence[Attribute]):
        super().__init__(
            operands=[list(inputs)], result_types=[list(result_types)], properties={"callee": SymbolRefAttr(callee)}
        )

    def instance(self) -> InstanceOp | None:
        layer = _layer_of(self)
        return None if layer is None else layer.lookup_instance(self.callee.root_reference.data)

    def verify_(self) -> None:
        layer = _layer_of(self)
        if layer is None:
            return
        if self.instance() is None:
            raise VerifyException(
                f"'tdsl.call' refers to @{self.callee.root_reference.data}, which is not a tdsl.instance "
                f"of layer @{layer.sym_name.data}"
            )


@irdl_op_definition
class ConstantOp(ValueOp):
    """A literal tensor (trits as `i2`).

    `%c = tdsl.constant dense<[1, 0, -1]> : tensor<3xi2>`
    """

    name = "tdsl.constant"
    value = prop_def(DenseIntOrFPElementsAttr)
    output = result_def(TensorType)
    traits = traits_def(Pure())

    def __init__(self, value: DenseIntOrFPElementsAttr):
        super().__init__(properties={"value": value}, result_types=[value.type])

    def verify_(self) -> None:
        if self.output.type != self.value.type:
            raise VerifyException(
                f"'tdsl.constant' result type {self.output.type} does not match the value type {self.value.type}"
            )

    def infer_result_type(self) -> TensorType:
        return self.value.type

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        return dims_of(self.value.type) or []

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_attribute(self.value)
        printer.print_op_attributes(self.attributes)

    @classmethod
    def parse(cls, parser: Parser) -> ConstantOp:
        value = parser.parse_attribute()
        if not isinstance(value, DenseIntOrFPElementsAttr):
            parser.raise_error(f"'tdsl.constant' expects a dense elements attribute, but got {value}")
        attrs = parser.parse_optional_attr_dict()
        op = cls(value)
        op.attributes.update(attrs)
        return op


@irdl_op_definition
class LinearOp(ValueOp):
    """`y = x @ w^T + b`: x[..., in], w[out, in], optional b[out] -> [..., out].

    `%y = tdsl.linear %x, %w, %b : (tensor<?x8xf32>, tensor<4x8xf32>, tensor<4xf32>) -> tensor<?x4xf32>`
    """

    name = "tdsl.linear"
    input = operand_def(AnyTensor)
    weight = operand_def(AnyTensor)
    bias = opt_operand_def(AnyTensor)
    output = result_def(AnyTensor)
    traits = traits_def(Pure(), WeightedOp("linear", "float"))
    assembly_format = "$input `,` $weight (`,` $bias^)? attr-dict `:` functional-type(operands, results)"

    def __init__(self, x: SSAValue, w: SSAValue, b: SSAValue | None = None, result_type: Attribute | None = None):
        super().__init__(operands=[x, w, [] if b is None else [b]], result_types=[_result_type(x, result_type)])

    def verify_(self) -> None:
        _check_rank(self.name, "input", self.input, "rank >= 1", lambda r: r >= 1)
        _check_rank(self.name, "weight", self.weight, "rank 2", lambda r: r == 2)
        if self.bias is not None:
            _check_rank(self.name, "bias", self.bias, "rank 1", lambda r: r == 1)

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        return linear_result_dims("linear", dims["input"], dims["weight"], dims.get("bias"))




class LhsRhsOp(ValueOp):
    """An op of two activations, `lhs` and `rhs` (matmul and the elementwise binary ops)."""

    lhs = operand_def(AnyTensor)
    rhs = operand_def(AnyTensor)
    output = result_def(AnyTensor)
    traits = traits_def(Pure())
    assembly_format = "$lhs `,` $rhs attr-dict `:` functional-type(operands, results)"

    def __init__(self, a: SSAValue, b: SSAValue, result_type: Attribute | None = None):
        super().__init__(operands=[a, b], result_types=[_result_type(a, result_type)])


@irdl_op_definition
class MatmulOp(LhsRhsOp):
    """Matrix product a[..., m, k] @ b[..., k, n] -> [..., m, n], batch dims broadcast.

    `%y = tdsl.matmul %a, %b : (tensor<?x3x4xf32>, tensor<4x5xf32>) -> tensor<?x3x5xf32>`
    """

    name = "tdsl.matmul"

    def verify_(self) -> None:
        _check_rank(self.name, "lhs", self.lhs, "rank >= 2", lambda r: r >= 2)
        _check_rank(self.name, "rhs", self.rhs, "rank >= 2", lambda r: r >= 2)

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        return matmul_result_dims("matmul", dims["lhs"], dims["rhs"])


@irdl_op_definition
class TernaryMatmulOp(ValueOp):
    """x[..., in] times ternary w[out, in] transposed -> [..., out] in x's element type.

    `%y = tdsl.ternary_matmul %x, %t : (tensor<?x8xf32>, tensor<4x8xi2>) -> tensor<?x4xf32>`
    """

    name = "tdsl.ternary_matmul"
    input = operand_def(AnyTensor)
    weight = operand_def(AnyTensor)
    output = result_def(AnyTensor)
    traits = traits_def(Pure())
    assembly_format = "$input `,` $weight attr-dict `:` functional-type(operands, results)"

    def __init__(self, x: SSAValue, w: SSAValue, result_type: Attribute | None = None):
        super().__init__(operands=[x, w], result_types=[_result_type(x, result_type)])

    def verify_(self) -> None:
        _check_rank(self.name, "input", self.input, "rank >= 1", lambda r: r >= 1)
        _check_rank(self.name, "weight", self.weight, "rank 2", lambda r: r == 2)

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        x, w = dims["input"], dims["weight"]
        if not same_dim(x[-1], w[1]):
            raise ShapeInferenceError(
                f"ternary_matmul: input has {x[-1]} features but weight expects {w[1]} (weight is {format_dims(w)})"
            )
        return [*x[:-1], w[0]]


class ConvGeometry:
    """A 2-D convolution kind, defined once: its name, its geometry properties, their checks and
    the rule they give the output. Each dialect makes its op of every kind in `CONV_KINDS` from
    it (`tdsl.<kind>` here, `tern.<kind>` and `tern.packed_<kind>`, `kern.<kind>`), mixing the
    kind in beside the level's base, so a new kind is a subclass of this and a row in
    `CONV_KINDS`, not an op class per level. The weight is w[O, C/groups, kh, kw] at every
    level (scales, packing and batch-norm folds are per output channel, dim 0)."""

    KIND: ClassVar[str] = "conv2d"
    """The op name at every level and the `WeightedOp` kind."""
    SUMMARY: ClassVar[str] = "2-D convolution"
    RULE: ClassVar[str] = "oh = (H + 2 padding - dilation (kh - 1) - 1) / stride + 1 (floor), ow alike"
    EXAMPLE: ClassVar[tuple[str, str, str]] = (
        "dilation = array<i64: 1, 1>, groups = 1 : i64, padding = array<i64: 1, 1>, stride = array<i64: 1, 1>",
        "8x8", "8x8")
    """(properties, input H x W, output H x W) of the op docs' IR example."""

    stride = prop_def(DenseArrayBase.constr(i64))
    padding = prop_def(DenseArrayBase.constr(i64))
    dilation = prop_def(DenseArrayBase.constr(i64))
    groups = prop_def(IntegerAttr[i64])

    @classmethod
    def conv_properties(cls, stride: Sequence[int] = (1, 1), padding: Sequence[int] = (0, 0),
                        dilation: Sequence[int] = (1, 1), groups: int = 1) -> dict[str, Attribute]:
        """The properties from constructor keywords (the ones `geometry` returns)."""
        return {"stride": _array(stride), "padding": _array(padding), "dilation": _array(dilation),
                "groups": _i64(groups)}

    def geometry(self) -> dict[str, Any]:
        """stride, padding, dilation, groups as constructor keywords (to rebuild the op)."""
        return {"stride": _ints(self.stride), "padding": _ints(self.padding), "dilation": _ints(self.dilation),
                "groups": self.groups.value.data}

    def verify_geometry(self) -> None:
        """Check the stride, padding, dilation and groups."""
        name = self.name  # type: ignore[attr-defined]
        _check_pair(name, "stride", _ints(self.stride), 1)
        _check_pair(name, "padding", _ints(self.padding), 0)
        _check_pair(name, "dilation", _ints(self.dilation), 1)
        groups = self.groups.value.data
        if groups < 1:
            raise VerifyException(f"'{name}' groups must be >= 1, but got {groups}")

    def conv_dims(self, op_name: str, x: Sequence[Dim], w: Sequence[Dim], b: Sequence[Dim] | None) -> list[Dim]:
        return conv2d_result_dims(op_name, x, w, b, _ints(self.stride), _ints(self.padding),
                                  _ints(self.dilation), self.groups.value.data)

    @classmethod
    def class_name(cls, prefix: str = "") -> str:
        """`Conv2dOp`, `TernConv2dOp`, ...: the Python name of the kind's op at a level."""
        return prefix + "".join(part[:1].upper() + part[1:] for part in cls.KIND.split("_")) + "Op"


class ConvTransposeGeometry(ConvGeometry):
    """`conv_transpose2d`, the adjoint of conv2d (a "deconvolution"): each input pixel scatters
    w[:, c] times its value into a kh x kw window of the output, windows `stride` apart, then
    `padding` rows and columns are cut from each border and `output_padding` more kept at the
    bottom and right. The weight is w[O, C/groups, kh, kw] like conv2d's (one scale and one
    batch-norm fold per output channel, dim 0); torch's `F.conv_transpose2d` takes the same
    numbers as [C, O/groups, kh, kw]: swap dims 0 and 1 within each group."""

    KIND: ClassVar[str] = "conv_transpose2d"
    SUMMARY: ClassVar[str] = "2-D transposed convolution"
    RULE: ClassVar[str] = ("oh = (H - 1) stride - 2 padding + dilation (kh - 1) + output_padding + 1, ow alike; "
                           "output_padding < max(stride, dilation)")
    EXAMPLE: ClassVar[tuple[str, str, str]] = (
        "dilation = array<i64: 1, 1>, groups = 1 : i64, output_padding = array<i64: 1, 1>, "
        "padding = array<i64: 1, 1>, stride = array<i64: 2, 2>", "8x8", "16x16")

    output_padding = prop_def(DenseArrayBase.constr(i64))

    @classmethod
    def conv_properties(cls, output_padding: Sequence[int] = (0, 0), **geometry: Any) -> dict[str, Attribute]:
        return {**super().conv_properties(**geometry), "output_padding": _array(output_padding)}

    def geometry(self) -> dict[str, Any]:
        return {**super().geometry(), "output_padding": _ints(self.output_padding)}

    def verify_geometry(self) -> None:
        super().verify_geometry()
        name = self.name  # type: ignore[attr-defined]
        extra, stride, dilation = _ints(self.output_padding), _ints(self.stride), _ints(self.dilation)
        _check_pair(name, "output_padding", extra, 0)
        if any(e >= max(s, d) for e, s, d in zip(extra, stride, dilation)):
            raise VerifyException(f"'{name}' output_padding entries must be smaller than stride or dilation, "
                                  f"but got {list(extra)} with stride {list(stride)}, dilation {list(dilation)}")

    def conv_dims(self, op_name: str, x: Sequence[Dim], w: Sequence[Dim], b: Sequence[Dim] | None) -> list[Dim]:
        batch_and_channels = conv_channel_dims(op_name, x, w, b, self.groups.value.data)
        stride, padding, dilation = _ints(self.stride), _ints(self.padding), _ints(self.dilation)
        extra = _ints(self.output_padding)
        out = [None if x[2 + i] is None else
               (x[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (w[2 + i] - 1) + extra[i] + 1
               for i in range(2)]
        if any(o is not None and o < 1 for o in out):
            raise ShapeInferenceError(
                f"{op_name}: padding {padding[0]}x{padding[1]} leaves no output for input {format_dims(x[2:])} "
                f"and kernel {w[2]}x{w[3]}")
        return [*batch_and_channels, *out]


CONV_KINDS: tuple[type[ConvGeometry], ...] = (ConvGeometry, ConvTransposeGeometry)
"""Every 2-D convolution kind; each dialect defines its op of each kind from these."""


class _ConvOp(ValueOp):
    """The float-level op of a convolution kind (mixed with its `ConvGeometry`)."""

    input = operand_def(AnyTensor)
    weight = operand_def(AnyTensor)
    bias = opt_operand_def(AnyTensor)
    output = result_def(AnyTensor)
    assembly_format = "$input `,` $weight (`,` $bias^)? attr-dict `:` functional-type(operands, results)"
    irdl_options = (ParsePropInAttrDict(),)

    def __init__(self, x: SSAValue, w: SSAValue, b: SSAValue | None = None, *,
                 result_type: Attribute | None = None, **geometry: Any):
        super().__init__(
            operands=[x, w, [] if b is None else [b]],
            result_types=[_result_type(x, result_type)],
            properties=self.conv_properties(**geometry),  # type: ignore[attr-defined]
        )

    def verify_(self) -> None:
        _check_rank(self.name, "input", self.input, "rank 4 (N, C, H, W)", lambda r: r == 4)
        _check_rank(self.name, "weight", self.weight, "rank 4 (O, C/groups, kh, kw)", lambda r: r == 4)
        if self.bias is not None:
            _check_rank(self.name, "bias", self.bias, "rank 1", lambda r: r == 1)
        self.verify_geometry()  # type: ignore[attr-defined]

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        return self.conv_dims(self.shape_name, dims["input"], dims["weight"], dims.get("bias"))  # type: ignore[attr-defined]


def _float_conv(kind: type[ConvGeometry]) -> type[ValueOp]:
    class Op(kind, _ConvOp):  # type: ignore[valid-type,misc]
        name = f"tdsl.{kind.KIND}"
        traits = traits_def(Pure(), WeightedOp(kind.KIND, "float"))

    props, hw_in, hw_out = kind.EXAMPLE
    Op.__name__ = Op.__qualname__ = kind.class_name()
    Op.__doc__ = (
        f"{kind.SUMMARY}: x[N, C, H, W], w[O, C/groups, kh, kw], optional b[O] -> [N, O, oh, ow];\n"
        f"{kind.RULE}.\n\n"
        f"`%y = tdsl.{kind.KIND} %x, %w {{{props}}} : (tensor<?x4x{hw_in}xf32>, tensor<8x4x3x3xf32>) -> "
        f"tensor<?x8x{hw_out}xf32>`\n")
    return irdl_op_definition(Op)


CONVS: dict[str, type[ValueOp]] = {kind.KIND: _float_conv(kind) for kind in CONV_KINDS}
"""The float-level op of every convolution kind, by kind."""
Conv2dOp = CONVS["conv2d"]


@irdl_op_definition
class BatchNormOp(ValueOp):
    """Batch normalisation over dim 1: x[N, C, ...], mean/var/weight/bias[C] -> same type as x.

    `%y = tdsl.batch_norm %x, %m, %v, %g, %b {eps = 1.0e-05 : f64, momentum = 0.1 : f64} : (...) -> ...`
    """

    name = "tdsl.batch_norm"
    input = operand_def(AnyTensor)
    mean = operand_def(AnyTensor)
    var = operand_def(AnyTensor)
    weight = operand_def(AnyTensor)
    bias = operand_def(AnyTensor)
    output = result_def(AnyTensor)
    eps = prop_def(FloatAttr[f64])
    momentum = prop_def(FloatAttr[f64])
    traits = traits_def(Pure())
    assembly_format = (
        "$input `,` $mean `,` $var `,` $weight `,` $bias attr-dict `:` functional-type(operands, results)"
    )
    irdl_options = (ParsePropInAttrDict(),)

    def __init__(
        self,
        x: SSAValue,
        mean: SSAValue,
        var: SSAValue,
        weight: SSAValue,
        bias: SSAValue,
        eps: float = 1e-5,
        momentum: float = 0.1,
        result_type: Attribute | None = None,
    ):
        super().__init__(
            operands=[x, mean, var, weight, bias],
            result_types=[_result_type(x, result_type)],
            properties={"eps": _f64(eps), "momentum": _f64(momentum)},
        )

    def verify_(self) -> None:
        _check_rank(self.name, "input", self.input, "rank >= 2 (N, C, ...)", lambda r: r >= 2)
        for operand in ("mean", "var", "weight", "bias"):
            _check_rank(self.name, operand, getattr(self, operand), "rank 1", lambda r: r == 1)

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        x = dims["input"]
        for operand in ("mean", "var", "weight", "bias"):
            d = dims[operand]
            if not same_dim(d[0], x[1]):
                raise ShapeInferenceError(f"batch_norm: input has {x[1]} channels but {operand} has {d[0]} elements")
        return list(x)


@irdl_op_definition
class LayerNormOp(ValueOp):
    """Layer normalisation over the last dim: x[..., D], weight/bias[D] -> same type as x.

    `%y = tdsl.layer_norm %x, %g, %b {eps = 1.0e-05 : f64} : (tensor<?x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<?x8xf32>`
    """

    name = "tdsl.layer_norm"
    input = operand_def(AnyTensor)
    weight = operand_def(AnyTensor)
    bias = operand_def(AnyTensor)
    output = result_def(AnyTensor)
    eps = prop_def(FloatAttr[f64])
    traits = traits_def(Pure())
    assembly_format = "$input `,` $weight `,` $bias attr-dict `:` functional-type(operands, results)"
    irdl_options = (ParsePropInAttrDict(),)

    def __init__(self, x: SSAValue, weight: SSAValue, bias: SSAValue, eps: float = 1e-5,
                 result_type: Attribute | None = None):
        super().__init__(operands=[x, weight, bias], result_types=[_result_type(x, result_type)],
                         properties={"eps": _f64(eps)})

    def verify_(self) -> None:
        _check_rank(self.name, "input", self.input, "rank >= 1", lambda r: r >= 1)
        for operand in ("weight", "bias"):
            _check_rank(self.name, operand, getattr(self, operand), "rank 1", lambda r: r == 1)
        if not self.eps.value.data > 0.0:
            raise VerifyException(f"'tdsl.layer_norm' eps must be > 0, but got {self.eps.value.data}")

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        x = dims["input"]
        for operand in ("weight", "bias"):
            if not same_dim(dims[operand][0], x[-1]):
                raise ShapeInferenceError(
                    f"layer_norm: input has {x[-1]} features but {operand} has {dims[operand][0]} elements")
        return list(x)


class SameShapeOp(ValueOp):
    """An op on one tensor whose result has the input's shape (activations, softmax, dropout)."""

    input = operand_def(AnyTensor)
    output = result_def(AnyTensor)
    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        return list(dims["input"])


class ActivationOp(SameShapeOp):
    """An elementwise activation without properties; subclasses differ in name only, and each
    has one row in `tdsl.ops.elementwise.ACTIVATIONS` (its torch, ONNX and runtime forms)."""

    def __init__(self, x: SSAValue, result_type: Attribute | None = None):
        super().__init__(operands=[x], result_types=[_result_type(x, result_type)])


@irdl_op_definition
class ReluOp(ActivationOp):
    """`max(x, 0)`. `%y = tdsl.relu %x : tensor<?x4xf32> -> tensor<?x4xf32>`"""

    name = "tdsl.relu"


@irdl_op_definition
class Relu6Op(ActivationOp):
    """`min(max(x, 0), 6)`. `%y = tdsl.relu6 %x : tensor<?x4xf32> -> tensor<?x4xf32>`"""

    name = "tdsl.relu6"


@irdl_op_definition
class GeluOp(ActivationOp):
    """Exact (erf) GELU. `%y = tdsl.gelu %x : tensor<?x4xf32> -> tensor<?x4xf32>`"""

    name = "tdsl.gelu"


@irdl_op_definition
class SigmoidOp(ActivationOp):
    """Logistic sigmoid. `%y = tdsl.sigmoid %x : tensor<?x4xf32> -> tensor<?x4xf32>`"""

    name = "tdsl.sigmoid"


@irdl_op_definition
class TanhOp(ActivationOp):
    """Hyperbolic tangent. `%y = tdsl.tanh %x : tensor<?x4xf32> -> tensor<?x4xf32>`"""

    name = "tdsl.tanh"


@irdl_op_definition
class HardswishOp(ActivationOp):
    """`x * relu6(x + 3) / 6` (Howard et al. 2019, MobileNetV3).
    `%y = tdsl.hardswish %x : tensor<?x4xf32> -> tensor<?x4xf32>`"""

    name = "tdsl.hardswish"


@irdl_op_definition
class SiluOp(ActivationOp):
    """`x * sigmoid(x)` (SiLU / swish; the gate of a SwiGLU MLP).
    `%y = tdsl.silu %x : tensor<?x4xf32> -> tensor<?x4xf32>`"""

    name = "tdsl.silu"


@irdl_op_definition
class Relu2Op(ActivationOp):
    """`relu(x)^2`, squared ReLU (So et al. 2021, Primer; the BitNet b1.58 2B4T MLP).
    `%y = tdsl.relu2 %x : tensor<?x4xf32> -> tensor<?x4xf32>`"""

    name = "tdsl.relu2"


@irdl_op_definition
class DropoutOp(SameShapeOp):
    """Dropout with probability `p` (identity at inference).

    `%y = tdsl.dropout %x {p = 5.000000e-01 : f64} : tensor<?x4xf32> -> tensor<?x4xf32>`
    """

    name = "tdsl.dropout"
    p = prop_def(FloatAttr[f64])
    irdl_options = (ParsePropInAttrDict(),)

    def __init__(self, x: SSAValue, p: float = 0.5, result_type: Attribute | None = None):
        super().__init__(operands=[x], result_types=[_result_type(x, result_type)], properties={"p": _f64(p)})

    def verify_(self) -> None:
        if not 0.0 <= self.p.value.data < 1.0:
            raise VerifyException(f"'tdsl.dropout' p must be in [0, 1), but got {self.p.value.data}")


@irdl_op_definition
class SoftmaxOp(SameShapeOp):
    """Softmax along `dim`. `%y = tdsl.softmax %x {dim = -1 : i64} : tensor<?x4xf32> -> tensor<?x4xf32>`"""

    name = "tdsl.softmax"
    dim = prop_def(IntegerAttr[i64])
    irdl_options = (ParsePropInAttrDict(),)

    def __init__(self, x: SSAValue, dim: int = -1, result_type: Attribute | None = None):
        super().__init__(operands=[x], result_types=[_result_type(x, result_type)], properties={"dim": _i64(dim)})

    def verify_(self) -> None:
        dims = dims_of(self.input.type)
        d = self.dim.value.data
        if dims is not None and not -len(dims) <= d < len(dims):
            raise VerifyException(
                f"'tdsl.softmax' dim {d} is out of range for input of rank {len(dims)} ({self.input.type})"
            )


class BinaryOp(LhsRhsOp):
    """An elementwise op on two operands with numpy broadcasting."""

    def verify_(self) -> None:
        lt, rt = self.lhs.type, self.rhs.type
        if element_type_of(lt) != element_type_of(rt):
            raise VerifyException(
                f"'{self.name}' operands must have the same element type, but lhs is {lt} and rhs is {rt}"
            )

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        return broadcast(self.shape_name, dims["lhs"], dims["rhs"])


@irdl_op_definition
class AddOp(BinaryOp):
    """`a + b`. `%y = tdsl.add %a, %b : (tensor<?x4xf32>, tensor<4xf32>) -> tensor<?x4xf32>`"""

    name = "tdsl.add"


@irdl_op_definition
class SubOp(BinaryOp):
    """`a - b`. `%y = tdsl.sub %a, %b : (tensor<?x4xf32>, tensor<4xf32>) -> tensor<?x4xf32>`"""

    name = "tdsl.sub"


@irdl_op_definition
class MulOp(BinaryOp):
    """`a * b`. `%y = tdsl.mul %a, %b : (tensor<?x4xf32>, tensor<4xf32>) -> tensor<?x4xf32>`"""

    name = "tdsl.mul"


@irdl_op_definition
class DivOp(BinaryOp):
    """`a / b`. `%y = tdsl.div %a, %b : (tensor<?x4xf32>, tensor<4xf32>) -> tensor<?x4xf32>`"""

    name = "tdsl.div"


class Pool2dOp(ValueOp):
    """A 2-D window pool x[N, C, H, W] -> [N, C, oh, ow] (floor mode)."""

    input = operand_def(AnyTensor)
    output = result_def(AnyTensor)
    kernel = prop_def(DenseArrayBase.constr(i64))
    stride = prop_def(DenseArrayBase.constr(i64))
    padding = prop_def(DenseArrayBase.constr(i64))
    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    irdl_options = (ParsePropInAttrDict(),)

    def __init__(
        self,
        x: SSAValue,
        kernel: Sequence[int],
        stride: Sequence[int] | None = None,
        padding: Sequence[int] = (0, 0),
        result_type: Attribute | None = None,
    ):
        super().__init__(
            operands=[x],
            result_types=[_result_type(x, result_type)],
            properties={
                "kernel": _array(kernel), "stride": _array(kernel if stride is None else stride),
                "padding": _array(padding),
            },
        )

    def verify_(self) -> None:
        _check_rank(self.name, "input", self.input, "rank 4 (N, C, H, W)", lambda r: r == 4)
        _check_pair(self.name, "kernel", _ints(self.kernel), 1)
        _check_pair(self.name, "stride", _ints(self.stride), 1)
        _check_pair(self.name, "padding", _ints(self.padding), 0)
        kernel, padding = _ints(self.kernel), _ints(self.padding)
        if any(2 * p > k for p, k in zip(padding, kernel)):
            raise VerifyException(
                f"'{self.name}' padding must be at most half the kernel, but got padding {list(padding)} "
                f"for kernel {list(kernel)}"
            )

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        return pool2d_result_dims(self.shape_name, dims["input"], _ints(self.kernel), _ints(self.stride),
                                  _ints(self.padding))


@irdl_op_definition
class MaxPool2dOp(Pool2dOp):
    """Max pooling. `%y = tdsl.max_pool2d %x {kernel = array<i64: 2, 2>, padding = array<i64: 0, 0>,
    stride = array<i64: 2, 2>} : tensor<?x8x32x32xf32> -> tensor<?x8x16x16xf32>`"""

    name = "tdsl.max_pool2d"


@irdl_op_definition
class AvgPool2dOp(Pool2dOp):
    """Average pooling (padding counted). Same syntax as `tdsl.max_pool2d`."""

    name = "tdsl.avg_pool2d"


@irdl_op_definition
class AdaptiveAvgPool2dOp(ValueOp):
    """Average pooling to a fixed output size: x[N, C, H, W] -> [N, C, oh, ow].

    `%y = tdsl.adaptive_avg_pool2d %x {output_size = array<i64: 1, 1>} : tensor<?x8x7x7xf32> -> tensor<?x8x1x1xf32>`
    """

    name = "tdsl.adaptive_avg_pool2d"
    input = operand_def(AnyTensor)
    output = result_def(AnyTensor)
    output_size = prop_def(DenseArrayBase.constr(i64))
    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    irdl_options = (ParsePropInAttrDict(),)

    def __init__(self, x: SSAValue, output_size: Sequence[int] = (1, 1), result_type: Attribute | None = None):
        super().__init__(
            operands=[x], result_types=[_result_type(x, result_type)],
            properties={"output_size": _array(output_size)},
        )

    def verify_(self) -> None:
        _check_rank(self.name, "input", self.input, "rank 4 (N, C, H, W)", lambda r: r == 4)
        _check_pair(self.name, "output_size", _ints(self.output_size), 1)

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        x = dims["input"]
        return [x[0], x[1], *_ints(self.output_size)]


@irdl_op_definition
class FlattenOp(ValueOp):
    """Merges dims `start_dim..end_dim` (inclusive, negative counts from the end) into one.

    `%y = tdsl.flatten %x {end_dim = -1 : i64, start_dim = 1 : i64} : tensor<?x8x2x2xf32> -> tensor<?x32xf32>`
    """

    name = "tdsl.flatten"
    input = operand_def(AnyTensor)
    output = result_def(AnyTensor)
    start_dim = prop_def(IntegerAttr[i64])
    end_dim = prop_def(IntegerAttr[i64])
    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    irdl_options = (ParsePropInAttrDict(),)

    def __init__(self, x: SSAValue, start_dim: int = 1, end_dim: int = -1, result_type: Attribute | None = None):
        super().__init__(
            operands=[x], result_types=[_result_type(x, result_type)],
            properties={"start_dim": _i64(start_dim), "end_dim": _i64(end_dim)},
        )

    def _range(self, rank: int) -> tuple[int, int] | None:
        s, e = self.start_dim.value.data, self.end_dim.value.data
        s, e = s + rank if s < 0 else s, e + rank if e < 0 else e
        if not (0 <= s < max(rank, 1) and 0 <= e < max(rank, 1) and s <= e):
            return None
        return s, e

    def verify_(self) -> None:
        dims = dims_of(self.input.type)
        if dims is not None and self._range(len(dims)) is None:
            raise VerifyException(
                f"'tdsl.flatten' start_dim {self.start_dim.value.data} and end_dim {self.end_dim.value.data} "
                f"do not select a dim range of input of rank {len(dims)} ({self.input.type})"
            )

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        x = dims["input"]
        rng = self._range(len(x))
        if rng is None:
            raise ShapeInferenceError(f"flatten: bad dim range for input {format_dims(x)}")
        s, e = rng
        merged = x[s:e + 1]
        size = None if any(d is None for d in merged) else math.prod(merged)  # type: ignore[arg-type]
        return [*x[:s], size, *x[e + 1:]]


class _DimOp(ValueOp):
    """Inserts or removes one size-1 dim at `dim` (negative counts from the end)."""

    input = operand_def(AnyTensor)
    output = result_def(AnyTensor)
    dim = prop_def(IntegerAttr[i64])
    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    irdl_options = (ParsePropInAttrDict(),)

    def __init__(self, x: SSAValue, dim: int, result_type: Attribute | None = None):
        super().__init__(operands=[x], result_types=[_result_type(x, result_type)],
                         properties={"dim": _i64(dim)})

    def axis(self, rank: int) -> int | None:
        """The dim index in an input of `rank`, or None when `dim` is out of range."""
        d, limit = self.dim.value.data, rank + self.RANK_CHANGE
        d = d + limit if d < 0 else d
        return d if 0 <= d < max(limit, 1) else None

    def verify_(self) -> None:
        dims = dims_of(self.input.type)
        if dims is not None and self.axis(len(dims)) is None:
            raise VerifyException(
                f"'{self.name}' dim {self.dim.value.data} is out of range for input of rank {len(dims)} "
                f"({self.input.type})"
            )

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        x = dims["input"]
        axis = self.axis(len(x))
        inserts = self.RANK_CHANGE == 1
        if axis is None or not (inserts or same_dim(x[axis], 1)):
            raise ShapeInferenceError(f"{self.shape_name}: dim {self.dim.value.data} " + (
                f"is out of range for {format_dims(x)}" if inserts else f"of {format_dims(x)} is not a size-1 dim"))
        return [*x[:axis], 1, *x[axis:]] if inserts else [*x[:axis], *x[axis + 1:]]


@irdl_op_definition
class UnsqueezeOp(_DimOp):
    """Inserts a size-1 dim: what a 1-D convolution uses to run as a 2-D one.

    `%y = tdsl.unsqueeze %x {dim = 2 : i64} : tensor<?x8x40xf32> -> tensor<?x8x1x40xf32>`
    """

    name = "tdsl.unsqueeze"
    RANK_CHANGE: ClassVar[int] = 1


@irdl_op_definition
class SqueezeOp(_DimOp):
    """Removes a size-1 dim: `%y = tdsl.squeeze %x {dim = 2 : i64} : tensor<?x8x1x40xf32> -> tensor<?x8x40xf32>`"""

    name = "tdsl.squeeze"
    RANK_CHANGE: ClassVar[int] = 0


@irdl_op_definition
class ReshapeOp(ValueOp):
    """Reshape to `shape`, where one `-1` takes the remaining size (`?` when the input is dynamic).

    `%y = tdsl.reshape %x {shape = array<i64: -1, 32>} : tensor<?x8x2x2xf32> -> tensor<?x32xf32>`
    """

    name = "tdsl.reshape"
    input = operand_def(AnyTensor)
    output = result_def(AnyTensor)
    shape = prop_def(DenseArrayBase.constr(i64))
    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    irdl_options = (ParsePropInAttrDict(),)

    def __init__(self, x: SSAValue, shape: Sequence[int], result_type: Attribute | None = None):
        super().__init__(
            operands=[x], result_types=[_result_type(x, result_type)], properties={"shape": _array(shape)}
        )

    def verify_(self) -> None:
        shape = _ints(self.shape)
        if shape.count(-1) > 1:
            raise VerifyException(f"'tdsl.reshape' shape may contain at most one -1, but got {list(shape)}")
        if any(d < -1 or d == 0 for d in shape):
            raise VerifyException(f"'tdsl.reshape' shape entries must be positive or -1, but got {list(shape)}")

    def target_shape(self) -> list[int]:
        """`shape`, where a dim that the result type keeps dynamic (the batch, when a pass
        wrote the reshape from a result type) reads as -1."""
        shape = list(_ints(self.shape))
        result = dims_of(self.output.type)
        if result is not None and -1 not in shape and result.count(None) == 1 and len(result) == len(shape):
            shape[result.index(None)] = -1
        return shape

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        return reshape_result_dims("reshape", dims["input"], self.target_shape())


# --------------------------------------------------------------------------- sequence models
# The ops transformers need (issue 15). Activations are [N, T, D]; attention and rotary
# embedding take the heads packed into the last dim ([N, T, H*Dh]), as a linear writes
# them, so a block needs no reshape or transpose around them.


def _axis(d: int, rank: int) -> int | None:
    """`d` (negative counts from the end) as an index into `rank` dims, or None if out of range."""
    d = d + rank if d < 0 else d
    return d if 0 <= d < rank else None


def _check_axis(op_name: str, prop: str, value: SSAValue, d: int) -> None:
    dims = dims_of(value.type)
    if dims is not None and _axis(d, len(dims)) is None:
        raise VerifyException(f"'{op_name}' {prop} {d} is out of range for input of rank {len(dims)} ({value.type})")


def _is_integer(t: Attribute) -> bool:
    return isinstance(element_type_of(t), IntegerType)


@irdl_op_definition
class RmsNormOp(ValueOp):
    """Root-mean-square normalisation over the last dim (Zhang & Sennrich 2019):
    `x / sqrt(mean(x^2) + eps) * weight`, x[..., D], weight[D] -> same type as x.

    `%y = tdsl.rms_norm %x, %g {eps = 1.0e-06 : f64} : (tensor<?x8xf32>, tensor<8xf32>) -> tensor<?x8xf32>`
    """

    name = "tdsl.rms_norm"
    input = operand_def(AnyTensor)
    weight = operand_def(AnyTensor)
    output = result_def(AnyTensor)
    eps = prop_def(FloatAttr[f64])
    traits = traits_def(Pure())
    assembly_format = "$input `,` $weight attr-dict `:` functional-type(operands, results)"
    irdl_options = (ParsePropInAttrDict(),)

    def __init__(self, x: SSAValue, weight: SSAValue, eps: float = 1e-6, result_type: Attribute | None = None):
        super().__init__(operands=[x, weight], result_types=[_result_type(x, result_type)],
                         properties={"eps": _f64(eps)})

    def verify_(self) -> None:
        _check_rank(self.name, "input", self.input, "rank >= 1", lambda r: r >= 1)
        _check_rank(self.name, "weight", self.weight, "rank 1", lambda r: r == 1)
        if not self.eps.value.data > 0.0:
            raise VerifyException(f"'tdsl.rms_norm' eps must be > 0, but got {self.eps.value.data}")

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        x, w = dims["input"], dims["weight"]
        if not same_dim(w[0], x[-1]):
            raise ShapeInferenceError(f"rms_norm: input has {x[-1]} features but weight has {w[0]} elements")
        return list(x)


@irdl_op_definition
class EmbeddingOp(ValueOp):
    """Rows of a table by integer id: ids[...] (integers), weight[V, D] -> [..., D] in weight's type.

    `%y = tdsl.embedding %ids, %w : (tensor<?x?xi32>, tensor<256x16xf32>) -> tensor<?x?x16xf32>`
    """

    name = "tdsl.embedding"
    input = operand_def(AnyTensor)
    weight = operand_def(AnyTensor)
    output = result_def(AnyTensor)
    traits = traits_def(Pure())
    assembly_format = "$input `,` $weight attr-dict `:` functional-type(operands, results)"

    def __init__(self, ids: SSAValue, weight: SSAValue, result_type: Attribute | None = None):
        super().__init__(operands=[ids, weight],
                         result_types=[_unranked_like(weight) if result_type is None else result_type])

    def verify_(self) -> None:
        if not _is_integer(self.input.type):
            raise VerifyException(f"'tdsl.embedding' ids must be an integer tensor, but got {self.input.type}")
        _check_rank(self.name, "weight", self.weight, "rank 2 (vocabulary, dim)", lambda r: r == 2)

    def infer_result_type(self) -> TensorType:
        dims = {name: self.operand_dims(name, v) for name, v in self.named_operands()}
        return make_tensor(element_type_of(self.weight.type), self.result_dims(dims))

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        return [*dims["input"], dims["weight"][1]]


@irdl_op_definition
class PositionsOp(ValueOp):
    """The position of each element along the last dim, as int32: ids[..., T] -> [..., T]
    holding 0..T-1 (what a learned position embedding looks up).

    `%p = tdsl.positions %ids : tensor<?x?xi32> -> tensor<?x?xi32>`
    """

    name = "tdsl.positions"
    input = operand_def(AnyTensor)
    output = result_def(AnyTensor)
    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"

    def __init__(self, x: SSAValue, result_type: Attribute | None = None):
        super().__init__(operands=[x], result_types=[UnrankedTensorType(i32) if result_type is None else result_type])

    def verify_(self) -> None:
        _check_rank(self.name, "input", self.input, "rank >= 1", lambda r: r >= 1)

    def infer_result_type(self) -> TensorType:
        return make_tensor(i32, self.result_dims({"input": self.operand_dims("input", self.input)}))

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        return list(dims["input"])


@irdl_op_definition
class PermuteOp(ValueOp):
    """Reorders the dims: result dim i is input dim `dims[i]` (`transpose(x, a, b)` swaps two).

    `%y = tdsl.permute %x {dims = array<i64: 0, 2, 1>} : tensor<?x3x4xf32> -> tensor<?x4x3xf32>`
    """

    name = "tdsl.permute"
    input = operand_def(AnyTensor)
    output = result_def(AnyTensor)
    dims = prop_def(DenseArrayBase.constr(i64))
    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    irdl_options = (ParsePropInAttrDict(),)

    def __init__(self, x: SSAValue, dims: Sequence[int], result_type: Attribute | None = None):
        super().__init__(operands=[x], result_types=[_result_type(x, result_type)], properties={"dims": _array(dims)})

    def order(self) -> tuple[int, ...]:
        return _ints(self.dims)

    def verify_(self) -> None:
        order = self.order()
        if sorted(order) != list(range(len(order))):
            raise VerifyException(f"'tdsl.permute' dims must be a permutation of 0..{len(order) - 1}, "
                                  f"but got {list(order)}")
        _check_rank(self.name, "input", self.input, f"rank {len(order)} (one entry of dims per dim)",
                    lambda r: r == len(order))

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        x = dims["input"]
        if len(x) != len(self.order()):
            raise ShapeInferenceError(f"permute: dims {list(self.order())} do not fit input {format_dims(x)}")
        return [x[i] for i in self.order()]


@irdl_op_definition
class Pad2dOp(ValueOp):
    """Zeros around the last two dims: `pads` = [left, right, top, bottom] (torch's F.pad order),
    so TensorFlow's "same" padding ([0, 1, 0, 1] before a stride-2 convolution) can be written.

    `%y = tdsl.pad2d %x {pads = array<i64: 0, 1, 0, 1>} : tensor<?x3x8x8xf32> -> tensor<?x3x9x9xf32>`
    """

    name = "tdsl.pad2d"
    input = operand_def(AnyTensor)
    output = result_def(AnyTensor)
    pads = prop_def(DenseArrayBase.constr(i64))
    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    irdl_options = (ParsePropInAttrDict(),)

    def __init__(self, x: SSAValue, pads: Sequence[int], result_type: Attribute | None = None):
        super().__init__(operands=[x], result_types=[_result_type(x, result_type)], properties={"pads": _array(pads)})

    def amounts(self) -> tuple[int, ...]:
        """(left, right, top, bottom)."""
        return _ints(self.pads)

    def verify_(self) -> None:
        pads = self.amounts()
        if len(pads) != 4 or min(pads) < 0:
            raise VerifyException(f"'tdsl.pad2d' pads must be four non-negative integers [left, right, top, bottom], "
                                  f"but got {list(pads)}")
        _check_rank(self.name, "input", self.input, "rank >= 2", lambda r: r >= 2)

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        x = list(dims["input"])
        if len(x) < 2:
            raise ShapeInferenceError(f"pad2d: input {format_dims(x)} has fewer than two dims")
        left, right, top, bottom = self.amounts()
        x[-2] = None if x[-2] is None else x[-2] + top + bottom
        x[-1] = None if x[-1] is None else x[-1] + left + right
        return x


@irdl_op_definition
class TransposeOp(ValueOp):
    """Swaps two dims (negative counts from the end), any rank: what `k^T` in attention needs.

    `%y = tdsl.transpose %x {dim0 = -2 : i64, dim1 = -1 : i64} : tensor<?x3x4xf32> -> tensor<?x4x3xf32>`
    """

    name = "tdsl.transpose"
    input = operand_def(AnyTensor)
    output = result_def(AnyTensor)
    dim0 = prop_def(IntegerAttr[i64])
    dim1 = prop_def(IntegerAttr[i64])
    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    irdl_options = (ParsePropInAttrDict(),)

    def __init__(self, x: SSAValue, dim0: int, dim1: int, result_type: Attribute | None = None):
        super().__init__(operands=[x], result_types=[_result_type(x, result_type)],
                         properties={"dim0": _i64(dim0), "dim1": _i64(dim1)})

    def verify_(self) -> None:
        _check_axis(self.name, "dim0", self.input, self.dim0.value.data)
        _check_axis(self.name, "dim1", self.input, self.dim1.value.data)

    def order(self, rank: int) -> list[int]:
        """The permutation this transpose is for an input of `rank`."""
        a, b = _axis(self.dim0.value.data, rank), _axis(self.dim1.value.data, rank)
        if a is None or b is None:
            raise ShapeInferenceError(f"transpose: dims {self.dim0.value.data}, {self.dim1.value.data} are out of "
                                      f"range for rank {rank}")
        order = list(range(rank))
        order[a], order[b] = b, a
        return order

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        x = dims["input"]
        return [x[i] for i in self.order(len(x))]


@irdl_op_definition
class SliceOp(ValueOp):
    """Elements `start..end-1` of dim `dim` (static bounds; negative ones count from the end
    of a static dim): `%y = tdsl.slice %x {dim = -1 : i64, end = 8 : i64, start = 4 : i64}
    : tensor<?x16xf32> -> tensor<?x4xf32>`"""

    name = "tdsl.slice"
    input = operand_def(AnyTensor)
    output = result_def(AnyTensor)
    dim = prop_def(IntegerAttr[i64])
    start = prop_def(IntegerAttr[i64])
    end = prop_def(IntegerAttr[i64])
    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    irdl_options = (ParsePropInAttrDict(),)

    def __init__(self, x: SSAValue, dim: int, start: int, end: int, result_type: Attribute | None = None):
        super().__init__(operands=[x], result_types=[_result_type(x, result_type)],
                         properties={"dim": _i64(dim), "start": _i64(start), "end": _i64(end)})

    def verify_(self) -> None:
        _check_axis(self.name, "dim", self.input, self.dim.value.data)
        s, e = self.start.value.data, self.end.value.data
        if s >= 0 and e >= 0 and e <= s:
            raise VerifyException(f"'tdsl.slice' end must be > start, but got start {s} and end {e}")

    def bounds(self, size: int) -> tuple[int, int] | None:
        """(start, end) within a dim of `size`, or None when the slice is empty or out of range."""
        s, e = self.start.value.data, self.end.value.data
        s, e = s + size if s < 0 else s, e + size if e < 0 else e
        return (s, e) if 0 <= s < e <= size else None

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        x = list(dims["input"])
        axis = _axis(self.dim.value.data, len(x))
        if axis is None:
            raise ShapeInferenceError(f"slice: dim {self.dim.value.data} is out of range for {format_dims(x)}")
        s, e = self.start.value.data, self.end.value.data
        if x[axis] is None:
            if s < 0 or e < 0:
                raise ShapeInferenceError(f"slice: negative bounds need a static dim, but dim {axis} of "
                                          f"{format_dims(x)} is dynamic")
            x[axis] = e - s
            return x
        rng = self.bounds(x[axis])
        if rng is None:
            raise ShapeInferenceError(f"slice: [{s}, {e}) is not a non-empty range of dim {axis} of {format_dims(x)}")
        x[axis] = rng[1] - rng[0]
        return x


@irdl_op_definition
class ConcatOp(ValueOp):
    """Joins two tensors along `dim`; the other dims must agree.

    `%y = tdsl.concat %a, %b {dim = -1 : i64} : (tensor<?x4xf32>, tensor<?x2xf32>) -> tensor<?x6xf32>`
    """

    name = "tdsl.concat"
    lhs = operand_def(AnyTensor)
    rhs = operand_def(AnyTensor)
    output = result_def(AnyTensor)
    dim = prop_def(IntegerAttr[i64])
    traits = traits_def(Pure())
    assembly_format = "$lhs `,` $rhs attr-dict `:` functional-type(operands, results)"
    irdl_options = (ParsePropInAttrDict(),)

    def __init__(self, a: SSAValue, b: SSAValue, dim: int = -1, result_type: Attribute | None = None):
        super().__init__(operands=[a, b], result_types=[_result_type(a, result_type)], properties={"dim": _i64(dim)})

    def verify_(self) -> None:
        _check_axis(self.name, "dim", self.lhs, self.dim.value.data)
        if element_type_of(self.lhs.type) != element_type_of(self.rhs.type):
            raise VerifyException(f"'tdsl.concat' operands must have the same element type, but lhs is "
                                  f"{self.lhs.type} and rhs is {self.rhs.type}")

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        a, b = dims["lhs"], dims["rhs"]
        axis = _axis(self.dim.value.data, len(a))
        if len(a) != len(b) or axis is None:
            raise ShapeInferenceError(f"concat: cannot join {format_dims(a)} and {format_dims(b)} "
                                      f"along dim {self.dim.value.data}")
        out: list[Dim] = []
        for i, (x, y) in enumerate(zip(a, b)):
            if i == axis:
                out.append(None if x is None or y is None else x + y)
            elif not same_dim(x, y):
                raise ShapeInferenceError(f"concat: dim {i} differs ({format_dims(a)} vs {format_dims(b)})")
            else:
                out.append(x if x is not None else y)
        return out


def _head_dim(op_name: str, what: str, features: Dim, heads: int) -> Dim:
    if features is None:
        return None
    if features % heads:
        raise ShapeInferenceError(f"{op_name}: {what} has {features} features, not divisible by {heads} heads")
    return features // heads


@irdl_op_definition
class RotaryOp(ValueOp):
    """Rotary position embedding (Su et al. 2021, RoFormer), the rotate-half form of
    GPT-NeoX and Llama: x[N, T, H*Dh] with Dh even; position t rotates the pair (i, i + Dh/2)
    of each head by angle t * base^(-2i/Dh).

    `%y = tdsl.rope %x {base = 1.0e+04 : f64, heads = 2 : i64} : tensor<?x?x8xf32> -> tensor<?x?x8xf32>`
    """

    name = "tdsl.rope"
    input = operand_def(AnyTensor)
    output = result_def(AnyTensor)
    heads = prop_def(IntegerAttr[i64])
    base = prop_def(FloatAttr[f64])
    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"
    irdl_options = (ParsePropInAttrDict(),)

    def __init__(self, x: SSAValue, heads: int, base: float = 10000.0, result_type: Attribute | None = None):
        super().__init__(operands=[x], result_types=[_result_type(x, result_type)],
                         properties={"heads": _i64(heads), "base": _f64(base)})

    def verify_(self) -> None:
        _check_rank(self.name, "input", self.input, "rank 3 (N, T, heads*head_dim)", lambda r: r == 3)
        if self.heads.value.data < 1:
            raise VerifyException(f"'tdsl.rope' heads must be >= 1, but got {self.heads.value.data}")
        if not self.base.value.data > 1.0:
            raise VerifyException(f"'tdsl.rope' base must be > 1, but got {self.base.value.data}")

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        x = dims["input"]
        if len(x) != 3:
            raise ShapeInferenceError(f"rope: input must be N x T x heads*head_dim, not {format_dims(x)}")
        dh = _head_dim("rope", "input", x[2], self.heads.value.data)
        if dh is not None and dh % 2:
            raise ShapeInferenceError(f"rope: the head dim {dh} must be even")
        return list(x)


@irdl_op_definition
class AttentionOp(ValueOp):
    """Scaled dot-product attention over heads packed in the last dim: q[N, T, H*Dh],
    k and v[N, S, Hkv*Dh] -> [N, T, H*Dh]. `heads / kv_heads` query heads share each key/value
    head (grouped-query attention; kv_heads = heads is multi-head). Scores are scaled by
    1/sqrt(Dh); `causal` lets query t see keys up to t + S - T (the last T of S positions,
    as in decoding with a key/value cache).

    `%y = tdsl.attention %q, %k, %v {causal = true, heads = 4 : i64, kv_heads = 2 : i64}
    : (tensor<?x?x16xf32>, tensor<?x?x8xf32>, tensor<?x?x8xf32>) -> tensor<?x?x16xf32>`
    """

    name = "tdsl.attention"
    query = operand_def(AnyTensor)
    key = operand_def(AnyTensor)
    value = operand_def(AnyTensor)
    output = result_def(AnyTensor)
    heads = prop_def(IntegerAttr[i64])
    kv_heads = prop_def(IntegerAttr[i64])
    causal = prop_def(BoolAttr)
    traits = traits_def(Pure())
    assembly_format = "$query `,` $key `,` $value attr-dict `:` functional-type(operands, results)"
    irdl_options = (ParsePropInAttrDict(),)

    def __init__(self, q: SSAValue, k: SSAValue, v: SSAValue, heads: int, kv_heads: int | None = None,
                 causal: bool = True, result_type: Attribute | None = None):
        super().__init__(operands=[q, k, v], result_types=[_result_type(q, result_type)],
                         properties={"heads": _i64(heads), "kv_heads": _i64(heads if kv_heads is None else kv_heads),
                                     "causal": BoolAttr.from_bool(causal)})

    @property
    def is_causal(self) -> bool:
        return bool(self.causal.value.data)

    def verify_(self) -> None:
        for operand in ("query", "key", "value"):
            _check_rank(self.name, operand, getattr(self, operand), "rank 3 (N, T, heads*head_dim)",
                        lambda r: r == 3)
        h, kvh = self.heads.value.data, self.kv_heads.value.data
        if h < 1 or kvh < 1 or h % kvh:
            raise VerifyException(f"'tdsl.attention' heads ({h}) must be a positive multiple of kv_heads ({kvh})")

    def result_dims(self, dims: Mapping[str, list[Dim]]) -> list[Dim]:
        q, k, v = dims["query"], dims["key"], dims["value"]
        if not (len(q) == len(k) == len(v) == 3):
            raise ShapeInferenceError("attention: query, key and value must be N x T x heads*head_dim")
        h, kvh = self.heads.value.data, self.kv_heads.value.data
        dq = _head_dim("attention", "query", q[2], h)
        dk = _head_dim("attention", "key", k[2], kvh)
        if not same_dim(dq, dk):
            raise ShapeInferenceError(f"attention: query head dim {dq} ({h} heads) differs from key head dim "
                                      f"{dk} ({kvh} kv_heads)")
        if not same_dim(k[2], v[2]) or not same_dim(k[1], v[1]):
            raise ShapeInferenceError(f"attention: key {format_dims(k)} and value {format_dims(v)} differ")
        if not same_dim(q[0], k[0]):
            raise ShapeInferenceError(f"attention: query batch {q[0]} differs from key batch {k[0]}")
        return list(q)


# --------------------------------------------------------------------------- module helpers


def module_layers(module: ModuleOp) -> dict[str, LayerOp]:
    """The module's layers by `sym_name`, in program order."""
    return {op.sym_name.data: op for op in module.ops if isinstance(op, LayerOp)}


def entry_layer(module: ModuleOp) -> LayerOp:
    """The layer named by the module attribute `tdsl.entry` (a SymbolRefAttr)."""
    entry = module.attributes.get("tdsl.entry")
    if not isinstance(entry, SymbolRefAttr):
        raise LookupError("module has no `tdsl.entry` symbol reference attribute")
    layer = module_layers(module).get(entry.root_reference.data)
    if layer is None:
        raise LookupError(f"module attribute tdsl.entry refers to @{entry.root_reference.data}, which is not a tdsl.layer")
    return layer


def instance_callee(module: ModuleOp, instance: InstanceOp) -> LayerOp | None:
    """The layer an instance is bound to."""
    return module_layers(module).get(instance.callee.root_reference.data)


TDSL = Dialect(
    "tdsl",
    [
        # structure
        LayerOp,
        ParamOp,
        InstanceOp,
        ForwardOp,
        ReturnOp,
        # reads, calls, literals
        GetParamOp,
        CallOp,
        ConstantOp,
        # linear algebra and convolution
        LinearOp,
        MatmulOp,
        TernaryMatmulOp,
        *CONVS.values(),
        BatchNormOp,
        LayerNormOp,
        # elementwise
        ReluOp,
        Relu6Op,
        GeluOp,
        SigmoidOp,
        TanhOp,
        HardswishOp,
        SiluOp,
        Relu2Op,
        SoftmaxOp,
        DropoutOp,
        AddOp,
        SubOp,
        MulOp,
        DivOp,
        # pooling and shape
        MaxPool2dOp,
        AvgPool2dOp,
        AdaptiveAvgPool2dOp,
        FlattenOp,
        ReshapeOp,
        UnsqueezeOp,
        SqueezeOp,
        # sequence models
        RmsNormOp,
        EmbeddingOp,
        PositionsOp,
        PermuteOp,
        Pad2dOp,
        TransposeOp,
        SliceOp,
        ConcatOp,
        RotaryOp,
        AttentionOp,
    ],
    [],
)
