"""The module plan of the torch emitter: which classes it emits and what every attribute is
called, decided from the IR before any text is written (`emit._ModuleEmitter` writes it out;
`freeze` reads the state-dict keys off it)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from xdsl.dialects.builtin import ModuleOp, SymbolRefAttr
from xdsl.ir import SSAValue

from tdsl.backends.torch.literals import PyValue, op_name, py_value
from tdsl.backends.torch.names import ATTRIBUTE, GLOBAL, LOCAL, py_ident
from tdsl.dialects import tdsl as t
from tdsl.dialects import tern
from tdsl.dialects.locations import loc_of
from tdsl.dialects.storage import PACKED_SUFFIX, SCALE_SUFFIX, is_frozen
from tdsl.errors import TdslError


class EmitterBug(RuntimeError):
    """The IR broke an invariant the emitter relies on (a compiler bug, not a user error)."""


def precision_of(op: t.ParamOp) -> str | None:
    """The `precision` recorded on a weight param (None: none recorded, i.e. fp32)."""
    return op.precision.data if op.precision is not None else None


def param_values(layer: t.LayerOp) -> tuple[PyValue, ...]:
    """The DSL parameter values of a specialisation, in IR order (the `_SPECS` key)."""
    return tuple(py_value(v, layer) for v in layer.params.data.values())


def sequential_chain(layer: t.LayerOp) -> bool:
    """Whether a built-in `Sequential` specialisation only chains its children `0`, `1`, …

    Such a specialisation is emitted inline as `nn.Sequential(...)`, as torchvision does.
    """
    if layer.layer.data != "Sequential" or layer.params_ops():
        return False
    instances = layer.instance_ops()
    if [i.sym_name.data for i in instances] != [str(k) for k in range(len(instances))]:
        return False
    forward = layer.forward
    if len(forward.args) != 1:
        return False
    current: SSAValue = forward.args[0]
    body = list(forward.body.block.ops)
    for k, op in enumerate(body[:-1]):
        if not (isinstance(op, t.CallOp) and op.callee.root_reference.data == str(k)
                and len(op.outputs) == 1 and tuple(op.inputs) == (current,)):
            return False
        current = op.outputs[0]
    ret = body[-1]
    return len(body) - 1 == len(instances) and isinstance(ret, t.ReturnOp) and tuple(ret.values) == (current,)


LIST_MEMBER = re.compile(r"(.+)\.(\d+)")


@dataclass
class Member:
    """An attribute of an emitted class: a param/buffer, a child, or a ModuleList."""

    ident: str
    is_list: bool = False


@dataclass
class ClassPlan:
    """What the emitter decided for one DSL layer before writing any text."""

    layer: str
    ident: str
    specs: list[t.LayerOp]
    frozen: bool = False
    param_names: tuple[str, ...] = ()
    arg_idents: tuple[str, ...] = ()
    members: dict[str, Member] = field(default_factory=dict)

    def member_expr(self, name: str) -> str:
        """`self.<attr>` for a param/instance name, `self.<attr>[i]` for a list element."""
        match = LIST_MEMBER.fullmatch(name)
        if match is not None and self.members[match.group(1)].is_list:
            return f"self.{self.members[match.group(1)].ident}[{int(match.group(2))}]"
        return f"self.{self.members[name].ident}"


def int8_scale_key(name: str) -> str:
    """The member key of a frozen int8 weight's scale buffer (never an IR symbol name)."""
    return name + "#" + SCALE_SUFFIX


def member_key(name: str) -> tuple[str, bool]:
    match = LIST_MEMBER.fullmatch(name)
    return (match.group(1), True) if match is not None else (name, False)


class ModulePlan:
    """What the emitter decides for a module before writing text: one class per DSL layer and
    precision variant, the attribute name of every param and child, the inlined `nn.Sequential`
    chains. Storage keys (`freeze.storage_layout`) are read off it too."""

    def __init__(self, module: ModuleOp, frozen: bool | None = None):
        self.module = module
        self.frozen = is_frozen(module) if frozen is None else frozen
        self.layers: dict[str, t.LayerOp] = {}
        for op in module.ops:
            if not isinstance(op, t.LayerOp):
                raise TdslError(f"the torch backend cannot emit '{op_name(op)}' at module level", loc_of(op))
            self.layers[op.sym_name.data] = op
        entry = module.attributes.get("tdsl.entry")
        self.entry = entry.root_reference.data if isinstance(entry, SymbolRefAttr) else None
        self.inline = {s for s, layer in self.layers.items() if s != self.entry and sequential_chain(layer)}
        self.plans: dict[str, ClassPlan] = {}
        self._plan()

    def _variant(self, sym: str, memo: dict[str, tuple]) -> tuple:
        """What besides its DSL parameters decides a specialisation's code: the precision
        (and packing) of its weights and, recursively, the variants of its children.

        `ternarize`/`precision` clone a layer whose instances need different precisions;
        the clones keep the DSL parameters, so the class of a DSL layer is split into one
        class per variant (`Conv2d_fp16`, `Conv2d_ternary`, ...) where there are several.
        """
        if sym in memo:
            return memo[sym]
        memo[sym] = ()
        layer = self.layers[sym]
        own: list[tuple] = []
        children: list[tuple] = []
        for op in layer.body.block.ops:
            if isinstance(op, t.ParamOp) and op.precision is not None:
                quant = op.attributes.get("quant")
                own.append((op.sym_name.data, op.precision.data, str(quant) if quant is not None else ""))
            elif isinstance(op, tern.PackedParamOp):
                own.append((op.sym_name.data, "packed", op.type.format.data))
            elif isinstance(op, t.InstanceOp):
                callee = op.callee.root_reference.data
                if callee in self.layers:
                    children.append((op.sym_name.data, self.layers[callee].layer.data, self._variant(callee, memo)))
        memo[sym] = (tuple(own), tuple(children))
        return memo[sym]

    def _plan(self) -> None:
        """One class per DSL layer and precision signature of its own weights; a further
        class (`Name_2`, …) only where two specialisations with equal DSL parameters still
        emit different code (children of different precision variants)."""
        memo: dict[str, tuple] = {}
        by_layer: dict[str, dict[tuple, list[list[t.LayerOp]]]] = {}
        for sym, layer in self.layers.items():
            if sym in self.inline:
                continue
            full = self._variant(sym, memo)
            groups = by_layer.setdefault(layer.layer.data, {}).setdefault(full[0], [])
            key = param_values(layer)
            for group in groups:
                if all(param_values(s) != key or self._variant(s.sym_name.data, memo) == full for s in group):
                    group.append(layer)
                    break
            else:
                groups.append([layer])
        class_names: set[str] = set()
        self.plan_by_sym: dict[str, ClassPlan] = {}
        self.all_plans: list[ClassPlan] = []
        for name, variants in by_layer.items():
            labels: list[str] = []
            for k, own in enumerate(variants):
                precisions = list(dict.fromkeys(p for _, p, _ in own))
                label = "_".join(precisions) if precisions else ""
                labels.append(label if label and label not in labels else f"v{k + 1}")
            for (own, groups), label in zip(variants.items(), labels):
                for specs in groups:
                    cls = name if len(variants) == 1 else f"{name}_{label}"
                    plan = self._plan_class(name, py_ident(cls, GLOBAL, class_names), specs)
                    self.all_plans.append(plan)
                    self.plans.setdefault(name, plan)
                    if self.entry is not None and any(s.sym_name.data == self.entry for s in specs):
                        self.plans[name] = plan
                    for spec in specs:
                        self.plan_by_sym[spec.sym_name.data] = plan

    def _plan_class(self, name: str, ident: str, specs: list[t.LayerOp]) -> ClassPlan:
        plan = ClassPlan(name, ident, specs, frozen=self.frozen)
        plan.param_names = tuple(specs[0].params.data)
        for spec in specs:
            if tuple(spec.params.data) != plan.param_names:
                raise EmitterBug(f"specialisations of layer {name} have different parameter names")
        taken: set[str] = set()
        plan.arg_idents = tuple(py_ident(p, LOCAL, taken) for p in plan.param_names)
        attrs: set[str] = set()
        for spec in specs:
            for op in spec.body.block.ops:
                if isinstance(op, t.ParamOp | t.InstanceOp | tern.PackedParamOp):
                    key, is_list = member_key(op.sym_name.data)
                    is_list = is_list and isinstance(op, t.InstanceOp)
                    key = key if is_list else op.sym_name.data
                    if key not in plan.members:
                        attr = key + PACKED_SUFFIX if isinstance(op, tern.PackedParamOp) else key
                        plan.members[key] = Member(py_ident(attr, ATTRIBUTE, attrs), is_list)
                    if self.frozen and isinstance(op, t.ParamOp) and precision_of(op) == "int8":
                        scale_key = int8_scale_key(key)
                        if scale_key not in plan.members:
                            plan.members[scale_key] = Member(py_ident(key + SCALE_SUFFIX, ATTRIBUTE, attrs))
        return plan

    def plan_of(self, layer: t.LayerOp) -> ClassPlan:
        return self.plan_by_sym[layer.sym_name.data]

    def callee(self, instance: t.InstanceOp) -> t.LayerOp:
        layer = self.layers.get(instance.callee.root_reference.data)
        if layer is None:
            raise TdslError(
                f"instance '{instance.sym_name.data}' refers to unknown layer @{instance.callee.root_reference.data}",
                loc_of(instance),
            )
        return layer
