"""`shape-infer`: give every value a static shape, specialising layers per input type."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, SymbolRefAttr, TensorType, UnrankedTensorType
from xdsl.ir import Attribute, BlockArgument, Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from tdsl.dialects.locations import loc_of
from tdsl.dialects.tdsl import (
    CallOp,
    LayerOp,
    ReturnOp,
    ShapeInferenceError,
    ValueOp,
    dims_of,
    entry_layer,
    module_layers,
)
from tdsl.errors import PassError, ShapeError
from tdsl.passes.instances import child_path, clone_layer


def retype(value: SSAValue, new_type: Attribute) -> SSAValue:
    """Give `value` a new type in place of the old one, keeping its uses and location."""
    if value.type == new_type:
        return value
    new_value = Rewriter.replace_value_with_new_type(value, new_type)
    if isinstance(value, BlockArgument):
        new_value.location = value.location
    return new_value


def shape_rule(op: Operation) -> Callable[[], Sequence[Attribute]] | None:
    """The op's shape rule, if it has one: `infer_result_types()` giving every result type
    (multi-result ops such as `tern.quantize`) or a `ValueOp`'s `infer_result_type()`."""
    rule = getattr(op, "infer_result_types", None)
    if callable(rule):
        return rule
    if isinstance(op, ValueOp):
        return lambda: (op.infer_result_type(),)
    return None


def accepts(declared: Attribute, actual: Attribute) -> bool:
    """Whether an argument declared as `declared` accepts a value of type `actual`.

    An unranked declaration accepts anything, and an unranked value (its rank left open
    in the program) is accepted by any declaration; otherwise both need the same rank and
    element type, and each static declared dim must equal the actual one (or be `?` there).
    """
    want, got = dims_of(declared), dims_of(actual)
    if want is None or got is None:
        return True
    if got is None or len(want) != len(got):
        return False
    if declared.get_element_type() != actual.get_element_type():  # type: ignore[attr-defined]
        return False
    return all(w is None or g is None or w == g for w, g in zip(want, got))


@dataclass
class _Specialiser:
    module: ModuleOp
    declared: dict[str, tuple[Attribute, ...]] = field(default_factory=dict)
    """Each layer's forward argument types as written, before any refinement (by origin symbol)."""
    origin: dict[str, str] = field(default_factory=dict)
    """Clone symbol -> the symbol it was cloned from."""
    memo: dict[tuple[str, tuple[Attribute, ...]], str] = field(default_factory=dict)
    """(origin symbol, argument types) -> the layer specialised for them."""
    specialised: set[str] = field(default_factory=set)
    in_progress: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        for sym, layer in module_layers(self.module).items():
            self.declared[sym] = tuple(layer.forward.function_type.inputs.data)

    def run(self, entry: LayerOp) -> None:
        args = self.declared[entry.sym_name.data]
        self.memo[(entry.sym_name.data, args)] = entry.sym_name.data
        self.infer(entry, args, path="")

    def infer(self, layer: LayerOp, arg_types: tuple[Attribute, ...], path: str) -> None:
        sym = layer.sym_name.data
        self.specialised.add(sym)
        self.in_progress.add(sym)
        forward = layer.forward
        for arg, t in zip(tuple(forward.body.block.args), arg_types):
            retype(arg, t)
        called: dict[str, tuple[Attribute, ...]] = {}
        for op in list(forward.body.block.ops):
            rule = shape_rule(op)
            if rule is not None:
                if any(isinstance(o.type, UnrankedTensorType) for o in op.operands):
                    continue  # an input whose rank the program leaves open keeps the result unranked
                try:
                    new_types = rule()
                except ShapeInferenceError as e:
                    raise ShapeError(str(e), loc_of(op)) from None
                for result, new_type in zip(tuple(op.results), new_types):
                    retype(result, new_type)
            elif isinstance(op, CallOp):
                self.infer_call(layer, op, path, called)
            elif isinstance(op, ReturnOp):
                forward.update_function_type()
        self.in_progress.discard(sym)

    def infer_call(self, layer: LayerOp, call: CallOp, path: str, called: dict[str, tuple[Attribute, ...]]) -> None:
        name = call.callee.root_reference.data
        instance = layer.lookup_instance(name)
        inst_path = child_path(path, name)
        callee = module_layers(self.module).get(instance.callee.root_reference.data) if instance else None
        if instance is None or callee is None:
            raise ShapeError(f"call to unknown instance '{inst_path}'", loc_of(call))
        origin = self.origin.get(callee.sym_name.data, callee.sym_name.data)
        declared = self.declared[origin]
        actual = tuple(v.type for v in call.inputs)
        dsl_name = callee.layer.data
        if len(declared) != len(actual):
            raise ShapeError(
                f"layer '{dsl_name}' (instance '{inst_path}') takes {len(declared)} arguments but got {len(actual)}",
                loc_of(call),
            )
        # A value whose rank the program leaves open takes the callee's declared type.
        actual = tuple(got if isinstance(got, TensorType) else want for want, got in zip(declared, actual))
        for i, (want, got) in enumerate(zip(declared, actual)):
            if not accepts(want, got):
                raise ShapeError(
                    f"argument {i + 1} of layer '{dsl_name}' (instance '{inst_path}') expects {want} but got {got}",
                    loc_of(call),
                )
        if name in called and called[name] != actual:
            raise ShapeError(
                f"instance '{inst_path}' is called with ({', '.join(map(str, actual))}) here but with "
                f"({', '.join(map(str, called[name]))}) before; one instance has one input type",
                loc_of(call),
            )
        called[name] = actual
        target = self.memo.get((origin, actual))
        if target is None:
            target_layer = callee if callee.sym_name.data not in self.specialised else self.clone(callee, origin)
            target = target_layer.sym_name.data
            if target in self.in_progress:
                raise ShapeError(f"layer '{dsl_name}' (instance '{inst_path}') calls itself", loc_of(call))
            self.memo[(origin, actual)] = target
            self.infer(target_layer, actual, inst_path)
        elif target in self.in_progress:
            raise ShapeError(f"layer '{dsl_name}' (instance '{inst_path}') calls itself", loc_of(call))
        instance.callee = SymbolRefAttr(target)
        outputs = module_layers(self.module)[target].forward.function_type.outputs.data
        if len(outputs) != len(call.outputs):
            raise ShapeError(
                f"layer '{dsl_name}' (instance '{inst_path}') returns {len(outputs)} values but the call "
                f"expects {len(call.outputs)}",
                loc_of(call),
            )
        for result, t in zip(tuple(call.outputs), outputs):
            retype(result, t)

    def clone(self, layer: LayerOp, origin: str) -> LayerOp:
        """A copy of `layer` under a fresh `Name_N`, placed right after it."""
        copy = clone_layer(self.module, layer, origin)
        self.origin[copy.sym_name.data] = origin
        return copy


def remove_unreachable_layers(module: ModuleOp) -> None:
    """Erase the layers that no instance chain from the entry layer reaches."""
    layers = module_layers(module)
    seen: set[str] = set()
    todo = [entry_layer(module).sym_name.data]
    while todo:
        sym = todo.pop()
        if sym in seen or sym not in layers:
            continue
        seen.add(sym)
        todo.extend(inst.callee.root_reference.data for inst in layers[sym].instance_ops())
    for sym, layer in layers.items():
        if sym not in seen:
            module.body.block.erase_op(layer)


def find_entry(module: ModuleOp, pass_name: str) -> LayerOp:
    try:
        return entry_layer(module)
    except LookupError as e:
        raise PassError(f"{pass_name}: {e}", loc_of(module)) from None


@dataclass(frozen=True)
class ShapeInferPass(ModulePass):
    """Give every value a static shape, specialising each layer per distinct input type.

    Starts at the forward of the `tdsl.entry` layer, whose declared argument types are the
    inputs, and applies each op's shape rule in order; only dims derived from a dynamic
    input dim stay `?`. A `tdsl.call` checks its operands against the callee's declared
    argument types, then specialises the callee for the operand types: the first use
    refines the layer in place, a use with other types clones it as `Name_1`, `Name_2`, ...
    and retargets the instance. Layers no longer reachable from the entry are removed.
    A mismatch raises `ShapeError` at the op's DSL location.
    """

    name = "shape-infer"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        entry = find_entry(op, self.name)
        _Specialiser(op).run(entry)
        remove_unreachable_layers(op)
