"""`inline`: one flat forward in the entry layer, every weight renamed to its dotted path."""
from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import (
    ModuleOp,
    StringAttr,
    SymbolRefAttr,
    UnrankedTensorType,
)
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from tdsl.dialects.locations import loc_of
from tdsl.dialects.tdsl import (
    CallOp,
    GetParamOp,
    InstanceOp,
    LayerOp,
    ParamOp,
    ReturnOp,
    module_layers,
)
from tdsl.dialects.tern import GetPackedOp, PackedParamOp
from tdsl.errors import PassError
from tdsl.passes.instances import child_path
from tdsl.passes.shape_infer import find_entry


def _fail(message: str, op: Operation) -> PassError:
    return PassError(f"inline: {message}", loc_of(op))


def instance_tree(module: ModuleOp, entry: LayerOp) -> dict[str, LayerOp]:
    """Every instance reachable from the entry by its dotted path ('' is the entry), parents
    before children, siblings in declaration order (the order torch registers sub-modules)."""
    layers = module_layers(module)
    tree: dict[str, LayerOp] = {}

    def visit(layer: LayerOp, path: str, stack: tuple[str, ...]) -> None:
        tree[path] = layer
        for instance in layer.instance_ops():
            callee = layers.get(instance.callee.root_reference.data)
            inst_path = child_path(path, instance.sym_name.data)
            if callee is None:
                raise _fail(f"instance '{inst_path}' refers to unknown layer @{instance.callee.root_reference.data}", instance)
            if callee.sym_name.data in stack:
                raise _fail(f"layer '{callee.layer.data}' (instance '{inst_path}') contains itself", instance)
            visit(callee, inst_path, (*stack, callee.sym_name.data))

    visit(entry, "", (entry.sym_name.data,))
    return tree


def _check_shape_inferred(tree: dict[str, LayerOp], module: ModuleOp) -> None:
    """Inlining needs one specialisation per instance, which only `shape-infer` guarantees."""
    layers = module_layers(module)
    for layer in tree.values():
        for op in layer.forward.body.block.ops:
            for result in op.results:
                if isinstance(result.type, UnrankedTensorType):
                    raise _fail(f"{op.name} has result type {result.type}; run shape-infer first", op)
            if isinstance(op, CallOp):
                instance = layer.lookup_instance(op.callee.root_reference.data)
                callee = layers.get(instance.callee.root_reference.data) if instance is not None else None
                if callee is None:
                    raise _fail(f"call to unknown instance '{op.callee.root_reference.data}'", op)
                declared = tuple(callee.forward.function_type.inputs.data)
                if tuple(v.type for v in op.inputs) != declared:
                    raise _fail(
                        f"call to '{op.callee.root_reference.data}' passes ({', '.join(str(v.type) for v in op.inputs)}) "
                        f"but its layer takes ({', '.join(map(str, declared))}); run shape-infer first",
                        op,
                    )


def _hoist_declarations(entry: LayerOp, tree: dict[str, LayerOp]) -> None:
    """Copy every param of every instance into the entry, named by its dotted path."""
    taken = {op.sym_name.data for op in entry.body.block.ops if isinstance(op, ParamOp | PackedParamOp | InstanceOp)}
    forward = entry.forward
    for path, layer in tree.items():
        if not path:
            continue
        for decl in layer.body.block.ops:
            if not isinstance(decl, ParamOp | PackedParamOp):
                continue
            name = child_path(path, decl.sym_name.data)
            if name in taken:
                raise _fail(f"the entry layer already declares @{name}", decl)
            taken.add(name)
            copy = decl.clone()
            copy.sym_name = StringAttr(name)
            entry.body.block.insert_op_before(copy, forward)


def _rename(op: Operation, path: str) -> None:
    """Point a read or call of the callee at `path` to its dotted name in the entry."""
    if isinstance(op, GetParamOp | GetPackedOp):
        op.param = SymbolRefAttr(child_path(path, op.param.root_reference.data))
    elif isinstance(op, CallOp):
        op.callee = SymbolRefAttr(child_path(path, op.callee.root_reference.data))


def _inline_call(call: CallOp, tree: dict[str, LayerOp]) -> Operation | None:
    """Replace `call` by a copy of its callee's forward body; returns the first copied op."""
    path = call.callee.root_reference.data
    body = tree[path].forward.body.block
    mapping: dict[SSAValue, SSAValue] = dict(zip(body.args, call.inputs))
    block = call.parent_block()
    assert block is not None
    first: Operation | None = None
    for inner in body.ops:
        if isinstance(inner, ReturnOp):
            for result, value in zip(call.results, inner.values):
                result.replace_all_uses_with(mapping.get(value, value))
            break
        copy = inner.clone(value_mapper=mapping)
        _rename(copy, path)
        block.insert_op_before(copy, call)
        first = first or copy
    next_op = call.next_op
    block.erase_op(call)
    return first or next_op


@dataclass(frozen=True)
class InlinePass(ModulePass):
    """Flatten the network: inline every tdsl.call into the entry layer's forward.

    Needs `shape-infer` before it (one specialisation per instance; a PassError
    otherwise) and works before or after `ternarize`/`pack`. Every `tdsl.param` and
    `tern.packed_param` of every instance reachable from the entry is copied into the
    entry under its dotted path (`layer1.0.conv1.weight`, the torch state-dict key), reads
    (`tdsl.get_param`, `tern.get_packed`) are renamed to match, and each inlined op keeps
    its DSL location. Afterwards the module holds only the entry layer, without
    `tdsl.instance`s.
    """

    name = "inline"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        entry = find_entry(op, self.name)
        tree = instance_tree(op, entry)
        _check_shape_inferred(tree, op)
        _hoist_declarations(entry, tree)
        block = entry.forward.body.block
        current = block.first_op
        while current is not None:
            if isinstance(current, CallOp):
                current = _inline_call(current, tree)
            else:
                current = current.next_op
        for instance in entry.instance_ops():
            entry.body.block.erase_op(instance)
        for layer in module_layers(op).values():
            if layer is not entry:
                op.body.block.erase_op(layer)
