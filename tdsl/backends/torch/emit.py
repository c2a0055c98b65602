"""Emit readable PyTorch source (one `nn.Module` class per DSL layer) from `tdsl` IR.

The IR holds one `tdsl.layer` per specialisation; the emitted source holds one class per
DSL layer name. A class's `__init__` takes the DSL parameters, looks their values up in
the class table `_SPECS` (the parameter sets the IR was compiled for) and builds that
specialisation's weights, buffers and children; specialisations whose forward bodies
read the same share one `forward`, the others dispatch to `_forward_<k>`. Shape clones
(equal parameters, different IR types) must read the same; anything else is a bug here.

Every identifier comes from `names.py_ident`; every literal from `_literal` (repr-based),
so DSL names and strings never reach the emitted text unescaped. Output depends only on
the IR (its op order), never on dict or set iteration order of the emitter.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from xdsl.dialects.builtin import (
    DYNAMIC_INDEX,
    ArrayAttr,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    ModuleOp,
    StringAttr,
    SymbolRefAttr,
    TensorType,
    UnregisteredOp,
)
from xdsl.ir import Attribute, Operation, SSAValue

from tdsl.backends.torch.calls import call_of, conv_geometry
from tdsl.backends.torch.names import ATTRIBUTE, GLOBAL, LOCAL, py_ident
from tdsl.dialects import tdsl as t
from tdsl.dialects import tern
from tdsl.dialects.context import weighted_ops
from tdsl.dialects.locations import loc_of
from tdsl.dialects.storage import PACKED_SUFFIX, SCALE_SUFFIX, is_frozen
from tdsl.dialects.weighted import weighted
from tdsl.errors import TdslError
from tdsl.ops.composite import COMPOSITES, Composite
from tdsl.ops.elementwise import ACTIVATIONS, BINARY

PyValue = bool | int | float | str | tuple
"""A DSL parameter value as the emitted code spells it."""


class EmitterBug(RuntimeError):
    """The IR broke an invariant the emitter relies on (a compiler bug, not a user error)."""




def emit_module(module: ModuleOp, frozen: bool | None = None) -> str:
    """Python source defining one `nn.Module` class per DSL layer of `module`.

    `frozen` selects the storage of weights that carry a `precision`: False emits the
    training (QAT) form (float32 latent weights, fake-quant in forward), True the frozen
    form (fp16 weights as float16 buffers, int8 as int8 + `<name>_scale` buffers; packed
    ternary weights are always `<name>_packed` uint8 buffers). None: frozen iff the module
    holds a `tern.packed_param` or carries the `tdsl.frozen` attribute.
    """
    return _ModuleEmitter(module, frozen).emit()


def precision_of(op: t.ParamOp) -> str | None:
    """The `precision` recorded on a weight param (None: none recorded, i.e. fp32)."""
    return op.precision.data if op.precision is not None else None


def param_values(layer: t.LayerOp) -> tuple[PyValue, ...]:
    """The DSL parameter values of a specialisation, in IR order (the `_SPECS` key)."""
    return tuple(_py_value(v, layer) for v in layer.params.data.values())


# --------------------------------------------------------------------------- literals

_DTYPES = {
    "f16": "torch.float16", "bf16": "torch.bfloat16", "f32": "torch.float32", "f64": "torch.float64",
    "i2": "torch.int8", "i8": "torch.int8", "i32": "torch.int32", "i64": "torch.int64", "i1": "torch.bool",
}
"""Element type -> torch dtype; trits (`i2`) are stored as int8."""


def _py_value(attr: Attribute, op: Operation) -> PyValue:
    if isinstance(attr, IntegerAttr):
        value = attr.value.data
        return value != 0 if attr.type == IntegerType(1) else value
    if isinstance(attr, FloatAttr):
        return float(attr.value.data)
    if isinstance(attr, StringAttr):
        return attr.data
    if isinstance(attr, ArrayAttr):
        return tuple(_py_value(a, op) for a in attr.data)
    if isinstance(attr, DenseArrayBase):
        return tuple(attr.get_values())
    raise TdslError(f"the torch backend cannot pass the value {attr} to Python", loc_of(op))


def _literal(value: PyValue | list) -> str:
    """Python source for a value; repr keeps strings escaped, math spells inf and nan."""
    if isinstance(value, float) and not math.isfinite(value):
        return "math.nan" if math.isnan(value) else ("math.inf" if value > 0 else "-math.inf")
    if isinstance(value, tuple):
        inner = ", ".join(_literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return repr(value)


def _docstring(text: str) -> str:
    """A docstring literal for `text`, which may hold user-chosen file names."""
    plain = text.isprintable() and "\\" not in text and '"""' not in text and not text.endswith('"')
    return f'"""{text}"""' if plain else repr(text)


def _op_name(op: Operation) -> str:
    """The name the user sees, also for ops parsed without their dialect."""
    return op.op_name.data if isinstance(op, UnregisteredOp) else op.name


def _dtype(type_: Attribute, op: Operation) -> str:
    element = type_.get_element_type() if isinstance(type_, TensorType) else type_
    dtype = _DTYPES.get(str(element))
    if dtype is None:
        raise TdslError(f"the torch backend has no dtype for element type {element}", loc_of(op))
    return dtype


def _tensor_literal(value: DenseIntOrFPElementsAttr, op: Operation, device: str | None = None) -> str:
    """`torch.tensor(<nested list>, dtype=...)` for a dense attribute; trits read as signed 2-bit."""
    values = list(value.get_values())
    element = str(value.get_element_type())
    if element == "i2":
        values = [(int(v) + 2) % 4 - 2 for v in values]
    shape = value.get_shape()

    def nest(flat: list, dims: Sequence[int]) -> list:
        if len(dims) <= 1:
            return flat
        step = len(flat) // dims[0]
        return [nest(flat[i * step:(i + 1) * step], dims[1:]) for i in range(dims[0])]

    data = _literal(values[0]) if not shape else _literal(nest(values, shape))
    where = f", device={device}" if device is not None else ""
    return f"torch.tensor({data}, dtype={_dtype(value.type, op)}{where})"


# --------------------------------------------------------------------------- module plan


def _sequential_chain(layer: t.LayerOp) -> bool:
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


_LIST_MEMBER = re.compile(r"(.+)\.(\d+)")


@dataclass
class _Member:
    """An attribute of an emitted class: a param/buffer, a child, or a ModuleList."""

    ident: str
    is_list: bool = False


@dataclass
class _ClassPlan:
    """What the emitter decided for one DSL layer before writing any text."""

    layer: str
    ident: str
    specs: list[t.LayerOp]
    frozen: bool = False
    param_names: tuple[str, ...] = ()
    arg_idents: tuple[str, ...] = ()
    members: dict[str, _Member] = field(default_factory=dict)

    def member_expr(self, name: str) -> str:
        """`self.<attr>` for a param/instance name, `self.<attr>[i]` for a list element."""
        match = _LIST_MEMBER.fullmatch(name)
        if match is not None and self.members[match.group(1)].is_list:
            return f"self.{self.members[match.group(1)].ident}[{int(match.group(2))}]"
        return f"self.{self.members[name].ident}"


def _int8_scale_key(name: str) -> str:
    """The member key of a frozen int8 weight's scale buffer (never an IR symbol name)."""
    return name + "#" + SCALE_SUFFIX


def _member_key(name: str) -> tuple[str, bool]:
    match = _LIST_MEMBER.fullmatch(name)
    return (match.group(1), True) if match is not None else (name, False)


class _ModuleEmitter:
    """Emission state for one module: the plan of every class, then their text."""

    def __init__(self, module: ModuleOp, frozen: bool | None = None):
        self.module = module
        self.frozen = is_frozen(module) if frozen is None else frozen
        self.layers: dict[str, t.LayerOp] = {}
        for op in module.ops:
            if not isinstance(op, t.LayerOp):
                raise TdslError(f"the torch backend cannot emit '{_op_name(op)}' at module level", loc_of(op))
            self.layers[op.sym_name.data] = op
        entry = module.attributes.get("tdsl.entry")
        self.entry = entry.root_reference.data if isinstance(entry, SymbolRefAttr) else None
        self.inline = {s for s, layer in self.layers.items() if s != self.entry and _sequential_chain(layer)}
        self.plans: dict[str, _ClassPlan] = {}
        self._plan()

    # ------------------------------------------------------------------ planning

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
        self.plan_by_sym: dict[str, _ClassPlan] = {}
        self.all_plans: list[_ClassPlan] = []
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

    def _plan_class(self, name: str, ident: str, specs: list[t.LayerOp]) -> _ClassPlan:
        plan = _ClassPlan(name, ident, specs, frozen=self.frozen)
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
                    key, is_list = _member_key(op.sym_name.data)
                    is_list = is_list and isinstance(op, t.InstanceOp)
                    key = key if is_list else op.sym_name.data
                    if key not in plan.members:
                        attr = key + PACKED_SUFFIX if isinstance(op, tern.PackedParamOp) else key
                        plan.members[key] = _Member(py_ident(attr, ATTRIBUTE, attrs), is_list)
                    if self.frozen and isinstance(op, t.ParamOp) and precision_of(op) == "int8":
                        scale_key = _int8_scale_key(key)
                        if scale_key not in plan.members:
                            plan.members[scale_key] = _Member(py_ident(key + SCALE_SUFFIX, ATTRIBUTE, attrs))
        return plan

    def plan_of(self, layer: t.LayerOp) -> _ClassPlan:
        return self.plan_by_sym[layer.sym_name.data]

    def callee(self, instance: t.InstanceOp) -> t.LayerOp:
        layer = self.layers.get(instance.callee.root_reference.data)
        if layer is None:
            raise TdslError(
                f"instance '{instance.sym_name.data}' refers to unknown layer @{instance.callee.root_reference.data}",
                loc_of(instance),
            )
        return layer

    def constructor(self, layer: t.LayerOp) -> str:
        """The expression that builds a child bound to specialisation `layer`."""
        if layer.sym_name.data in self.inline:
            children = ", ".join(self.constructor(self.callee(i)) for i in layer.instance_ops())
            return f"nn.Sequential({children})"
        plan = self.plan_of(layer)
        args = ", ".join(f"{a}={_literal(v)}" for a, v in zip(plan.arg_idents, param_values(layer)))
        return f"{plan.ident}({args})"

    # ------------------------------------------------------------------ text

    def emit(self) -> str:
        source = self.module.attributes.get("tdsl.source")
        origin = f" from {source.data}" if isinstance(source, StringAttr) else ""
        header = [
            _docstring(f"PyTorch modules generated by tdsl{origin}. Generated code: edit the DSL source instead."),
            "import math",
            "",
            "import torch",
            "import torch.nn as nn",
            "import torch.nn.functional as F",
            "",
            "from tdsl.backends.torch import runtime as _rt",
        ]
        parts = ["\n".join(header)]
        parts.extend(_ClassEmitter(self, plan).emit() for plan in self.all_plans)
        table = "".join(f"    {_literal(p.layer)}: {p.ident},\n" for p in self.plans.values())
        parts.append(f"LAYERS = {{\n{table}}}\n{_docstring('DSL layer name -> emitted class.')}")
        return "\n\n\n".join(parts) + "\n"


# --------------------------------------------------------------------------- one class


def _indent(lines: Sequence[str], depth: int = 1) -> list[str]:
    return [("    " * depth + line) if line else "" for line in lines]


class _ClassEmitter:
    """Writes the class of one DSL layer from its plan."""

    def __init__(self, module: _ModuleEmitter, plan: _ClassPlan):
        self.module = module
        self.plan = plan

    def emit(self) -> str:
        plan = self.plan
        groups: dict[tuple[PyValue, ...], list[t.LayerOp]] = {}
        for spec in plan.specs:
            groups.setdefault(param_values(spec), []).append(spec)
        inits: list[list[str]] = []
        forwards: list[_Forward] = []
        for key, specs in groups.items():
            texts = [(self.init_body(s), _ForwardEmitter(plan, s).emit()) for s in specs]
            if any(text != texts[0] for text in texts[1:]):
                raise EmitterBug(
                    f"layer {plan.layer} specialisations {', '.join('@' + s.sym_name.data for s in specs)} "
                    f"share parameters {key} but emit different code"
                )
            inits.append(texts[0][0])
            forwards.append(texts[0][1])
        loc = loc_of(plan.specs[0])
        doc = f"DSL layer `{plan.layer}`" + (f" ({loc})" if loc is not None else "") + "."
        if len(groups) > 1:
            doc += f" Compiled for {len(groups)} parameter sets."
        lines = [f"class {plan.ident}(nn.Module):", f"    {_docstring(doc)}", ""]
        if plan.param_names:
            lines += self.specs_table(list(groups))
        lines += _indent(self.constructor(list(groups), inits))
        lines += _indent(self.forward_methods(forwards))
        return "\n".join(lines).rstrip("\n")

    def specs_table(self, keys: list[tuple[PyValue, ...]]) -> list[str]:
        rows = [f"        {_literal(key)}: {k}," for k, key in enumerate(keys)]
        return [f"    # {_tuple_of(self.plan.arg_idents)} -> specialisation", "    _SPECS = {", *rows, "    }", ""]

    def constructor(self, keys: list[tuple[PyValue, ...]], inits: list[list[str]]) -> list[str]:
        plan = self.plan
        single = len(keys) == 1
        args = [
            f"{a}: {type(v).__name__}" + (f" = {_literal(v)}" if single else "")
            for a, v in zip(plan.arg_idents, keys[0])
        ]
        lines = [f"def __init__({', '.join(['self', *args])}) -> None:", "    super().__init__()"]
        if plan.param_names:
            lookup = (f"_rt.lookup_spec(self._SPECS, {_tuple_of(plan.arg_idents)}, "
                      f"{_literal(plan.layer)}, {_literal(plan.param_names)})")
            lines.append(f"    {lookup}" if single else f"    self._spec = {lookup}")
        if single:
            return [*lines, *_indent(inits[0]), ""]
        lines += ['    getattr(self, f"_init_{self._spec}")()', ""]
        for k, body in enumerate(inits):
            lines += [f"def _init_{k}(self) -> None:", *_indent(body or ["pass"]), ""]
        return lines

    def forward_methods(self, forwards: list[_Forward]) -> list[str]:
        variants: list[_Forward] = []
        variant_of: list[int] = []
        for fwd in forwards:
            if fwd not in variants:
                variants.append(fwd)
            variant_of.append(variants.index(fwd))
        if len(variants) == 1:
            return variants[0].text("forward")
        if len({len(v.args) for v in variants}) != 1:
            raise EmitterBug(f"forward variants of layer {self.plan.layer} take different numbers of inputs")
        args = variants[0].args
        returns = variants[0].returns if len({v.returns for v in variants}) == 1 else ""
        lines = [f"def forward({_signature(args)}){returns}:"]
        for v in range(len(variants)):
            call = f"return self._forward_{v}({', '.join(args)})"
            if v == len(variants) - 1:
                lines.append(f"    {call}")
            else:
                specs = [k for k, w in enumerate(variant_of) if w == v]
                test = f"== {specs[0]}" if len(specs) == 1 else f"in {_literal(tuple(specs))}"
                lines += [f"    if self._spec {test}:", f"        {call}"]
        lines.append("")
        for v, fwd in enumerate(variants):
            lines += fwd.text(f"_forward_{v}")
        return lines

    def init_body(self, spec: t.LayerOp) -> list[str]:
        """The statements that build one specialisation's params, buffers and children."""
        lines: list[str] = []
        done: set[str] = set()
        for op in spec.body.block.ops:
            if isinstance(op, t.ParamOp):
                lines += self.param_lines(op)
            elif isinstance(op, tern.PackedParamOp):
                lines += self.packed_lines(op)
            elif isinstance(op, t.InstanceOp):
                key, is_list = _member_key(op.sym_name.data)
                member = self.plan.members[key if is_list else op.sym_name.data]
                if not member.is_list:
                    lines.append(f"self.{member.ident} = {self.module.constructor(self.module.callee(op))}")
                elif key not in done:
                    done.add(key)
                    lines.append(f"self.{member.ident} = nn.ModuleList([{self.list_children(spec, key)}])")
        return lines

    def list_children(self, spec: t.LayerOp, prefix: str) -> str:
        """Children `prefix.0`, `prefix.1`, … in index order; `nn.Identity()` fills removed ones."""
        found: dict[int, t.InstanceOp] = {}
        for op in spec.instance_ops():
            match = _LIST_MEMBER.fullmatch(op.sym_name.data)
            if match is not None and match.group(1) == prefix:
                found[int(match.group(2))] = op
        return ", ".join(
            self.module.constructor(self.module.callee(found[i])) if i in found else "nn.Identity()"
            for i in range(max(found) + 1)
        )

    def param_lines(self, op: t.ParamOp) -> list[str]:
        target = f"self.{self.plan.members[op.sym_name.data].ident}"
        shape = tuple(op.type.get_shape())
        dtype = _dtype(op.type, op)
        precision = precision_of(op)
        if self.plan.frozen and precision == "fp16":
            # Frozen fp16 storage: a float16 buffer, initialised like the float weight.
            empty = f"torch.empty({_literal(shape)}, dtype=torch.float16)"
            return [f"self.register_buffer({_literal(target.removeprefix('self.'))}, {empty})",
                    *_init_lines(op, target, shape)]
        if self.plan.frozen and precision == "int8":
            # Frozen int8 storage: int8 values and one float32 scale per output channel.
            scale = self.plan.members[_int8_scale_key(op.sym_name.data)].ident
            out = shape[0] if shape else 1
            return [
                f"self.register_buffer({_literal(target.removeprefix('self.'))}, "
                f"torch.zeros({_literal(shape)}, dtype=torch.int8))",
                f"self.register_buffer({_literal(scale)}, torch.ones(({out},), dtype=torch.float32))",
            ]
        empty = f"torch.empty({_literal(shape)}, dtype={dtype})"
        if op.kind.data == "buffer":
            create = f"self.register_buffer({_literal(target.removeprefix('self.'))}, {empty})"
        elif dtype in ("torch.float16", "torch.bfloat16", "torch.float32", "torch.float64"):
            create = f"{target} = nn.Parameter({empty})"
        else:
            create = f"{target} = nn.Parameter({empty}, requires_grad=False)"
        return [create, *_init_lines(op, target, shape)]


    def packed_lines(self, op: tern.PackedParamOp) -> list[str]:
        """The uint8 buffer of packed trits [rows, bytes_per_row] (docs/PACKED_FORMAT.md),
        initialised to all-zero trits; `freeze` fills it."""
        from tdsl.runtime.packing import bytes_per_row, matrix_shape

        attr = self.plan.members[op.sym_name.data].ident
        fmt = op.type.format.data
        rows, k = matrix_shape(op.type.get_shape())
        zero = 0x55 if fmt == "2bit" else 0x80
        return [f"self.register_buffer({_literal(attr)}, "
                f"torch.full(({rows}, {bytes_per_row(k, fmt)}), {zero}, dtype=torch.uint8))"]


def _init_lines(op: t.ParamOp, target: str, shape: tuple[int, ...]) -> list[str]:
    """Statements that initialise `target` per the param's `init` (torch's defaults where named)."""
    init = op.init.data
    args = dict(op.init_args.data) if op.init_args is not None else {}
    fan_in = _py_value(args["fan_in"], op) if "fan_in" in args else None
    if init == "kaiming_uniform":
        if len(shape) >= 2 and fan_in in (None, math.prod(shape[1:])):
            return [f"nn.init.kaiming_uniform_({target}, a=math.sqrt(5))"]
        if isinstance(fan_in, int) and fan_in > 0:
            return [f"nn.init.uniform_({target}, -1 / math.sqrt({fan_in}), 1 / math.sqrt({fan_in}))"]
        raise TdslError(
            f"kaiming_uniform init of '{op.sym_name.data}' needs a weight of rank >= 2 or init_args fan_in > 0",
            loc_of(op),
        )
    if init == "uniform":
        bound = _py_value(args["bound"], op) if "bound" in args else None
        if isinstance(bound, int | float) and not isinstance(bound, bool):
            return [f"nn.init.uniform_({target}, {_literal(-float(bound))}, {_literal(float(bound))})"]
        if isinstance(fan_in, int) and fan_in > 0:
            return [f"nn.init.uniform_({target}, -1 / math.sqrt({fan_in}), 1 / math.sqrt({fan_in}))"]
        raise TdslError(f"uniform init of '{op.sym_name.data}' needs init_args bound or fan_in", loc_of(op))
    simple = {"zeros": "nn.init.zeros_", "ones": "nn.init.ones_", "randn": "nn.init.normal_",
              "random_ternary": "_rt.random_ternary_"}
    if init in simple:
        return [f"{simple[init]}({target})"]
    if init == "constant":
        value = args.get("value")
        if isinstance(value, DenseIntOrFPElementsAttr):
            return ["with torch.no_grad():", f"    {target}.copy_({_tensor_literal(value, op)}.reshape({_literal(shape)}))"]
        if isinstance(value, IntegerAttr | FloatAttr):
            return [f"nn.init.constant_({target}, {_literal(_py_value(value, op))})"]
        raise TdslError(f"constant init of '{op.sym_name.data}' needs init_args value", loc_of(op))
    raise TdslError(f"the torch backend has no initialiser '{init}' (for '{op.sym_name.data}')", loc_of(op))


# --------------------------------------------------------------------------- forward


def _signature(args: Sequence[str]) -> str:
    return ", ".join(["self", *(f"{a}: torch.Tensor" for a in args)])


@dataclass(frozen=True)
class _Forward:
    """One emitted forward body; equal values emit equal methods."""

    args: tuple[str, ...]
    returns: str
    body: tuple[str, ...]

    def text(self, method: str) -> list[str]:
        return [f"def {method}({_signature(self.args)}){self.returns}:", *_indent(self.body), ""]


class _ForwardEmitter:
    """Writes one specialisation's forward: one line per value op, readable local names."""

    def __init__(self, plan: _ClassPlan, layer: t.LayerOp):
        self.plan = plan
        self.layer = layer
        self.names: dict[SSAValue, str] = {}
        self.taken: set[str] = set()
        self.device: str | None = None
        self.folded: dict[SSAValue, tuple[tern.QuantizeOp, str]] = {}
        """Results of a `tern.quantize` emitted as one α·T expression (trits and scale)."""

    def local(self, value: SSAValue, hint: str | None) -> str:
        name = py_ident(hint or value.name_hint or "v", LOCAL, self.taken)
        self.names[value] = name
        return name

    def __getitem__(self, value: SSAValue) -> str:
        if value in self.folded:
            quant, _ = self.folded[value]
            raise TdslError("the torch backend emits tern.quantize as one α·T tensor; its trits and scale "
                            "can only feed tern.conv2d, tern.linear or tern.dequantize", loc_of(quant))
        return self.names[value]

    def emit(self) -> _Forward:
        forward = self.layer.forward
        hints = [a.data for a in forward.arg_names.data] if forward.arg_names is not None else []
        args = [self.local(a, hints[i] if i < len(hints) else None) for i, a in enumerate(forward.args)]
        if args:
            self.device = f"{args[0]}.device"
        body: list[str] = []
        for op in forward.body.block.ops:
            if isinstance(op, t.ReturnOp):
                body.append(self.return_line(op))
                continue
            handler = HANDLERS.get(type(op))
            if handler is None:
                why = UNSUPPORTED.get(type(op), "it has no handler")
                raise TdslError(f"the torch backend cannot emit '{_op_name(op)}': {why}", loc_of(op))
            if isinstance(op, tern.QuantizeOp):  # two results: the handler writes the whole line
                body.append(handler(self, op))
                continue
            expr = handler(self, op)
            if expr is None:
                continue
            targets = [self.local(r, None) for r in op.results]
            body.append(f"{', '.join(targets)} = {expr}" if targets else expr)
        single = len(forward.function_type.outputs.data) == 1 and forward.return_op.names is None
        return _Forward(tuple(args), " -> torch.Tensor" if single else "", tuple(body))

    def return_line(self, op: t.ReturnOp) -> str:
        values = [self[v] for v in op.values]
        if op.names is not None:
            items = ", ".join(f"{_literal(n.data)}: {v}" for n, v in zip(op.names.data, values))
            return f"return {{{items}}}"
        if not values:
            return "return None"
        return f"return {', '.join(values)}"

    # ------------------------------------------------------------------ handlers

    def get_param(self, op: t.GetParamOp) -> None:
        self.names[op.output] = self.plan.member_expr(op.param.root_reference.data)

    def call(self, op: t.CallOp) -> str:
        return f"{self.plan.member_expr(op.callee.root_reference.data)}({', '.join(self[v] for v in op.inputs)})"

    def constant(self, op: t.ConstantOp) -> str:
        return _tensor_literal(op.value, op, self.device)

    # -- weights with a precision (docs/TERNARY.md)

    def weight_decl(self, value: SSAValue) -> t.ParamOp | None:
        """The `tdsl.param` a weight operand reads, if it reads one directly."""
        read = value.owner
        if isinstance(read, t.GetParamOp):
            return self.layer.lookup_param(read.param.root_reference.data)
        return None

    def weight(self, value: SSAValue, x: str) -> str:
        """A weight operand as the op computes with it: fp16 weights are rounded through
        float16 (training) or cast up from their float16 storage (frozen)."""
        decl = self.weight_decl(value)
        precision = precision_of(decl) if decl is not None else None
        if precision == "fp16":
            return f"{self[value]}.to({x}.dtype)" if self.plan.frozen else f"_rt.fake_fp16({self[value]})"
        return self[value]

    def int8_scale(self, value: SSAValue) -> str | None:
        """`self.<w>_scale` for a frozen int8 weight, None when the weight is not int8;
        int8 is handled by `_rt.int8_linear` / `_rt.int8_conv2d`."""
        decl = self.weight_decl(value)
        if decl is None or precision_of(decl) != "int8":
            return None
        if not self.plan.frozen:
            return ""
        return self.plan.member_expr(_int8_scale_key(decl.sym_name.data))

    def int8_unsupported(self, value: SSAValue, op: Operation) -> None:
        if self.int8_scale(value) is not None:
            raise TdslError(f"the torch backend supports int8 weights on conv2d and linear only, "
                            f"not on {_op_name(op)}", loc_of(op))

    def weighted_call(self, op: Operation, x: str, w: str) -> str:
        """The torch call of the op's kind (`calls.CALLS`) on input `x` and weight `w`."""
        trait = weighted(op)
        assert trait is not None, op.name
        bias = op.bias  # type: ignore[attr-defined]
        return call_of(trait.kind)(trait.geometry(op), x, w, self[bias] if bias is not None else None)

    def linear(self, op: t.LinearOp) -> str:
        scale = self.int8_scale(op.weight)
        if scale is not None:
            bias = f", {self[op.bias]}" if op.bias is not None else ""
            extra = f", weight_scale={scale}" if scale else ""
            return f"_rt.int8_linear({self[op.input]}, {self[op.weight]}{bias}{extra})"
        return self.weighted_call(op, self[op.input], self.weight(op.weight, self[op.input]))

    def matmul(self, op: t.MatmulOp) -> str:
        self.int8_unsupported(op.rhs, op)
        return f"torch.matmul({self[op.lhs]}, {self.weight(op.rhs, self[op.lhs])})"

    def ternary_matmul(self, op: t.TernaryMatmulOp) -> str:
        self.int8_unsupported(op.weight, op)
        x = self[op.input]
        return f"F.linear({x}, _rt.ternary({self.weight(op.weight, x)}).to({x}.dtype))"

    def conv(self, op: t.ConvGeometry) -> str:
        """`tdsl.<conv kind>`: the kind's torch call on the float weight."""
        scale = self.int8_scale(op.weight)  # type: ignore[attr-defined]
        if scale is not None:
            if op.KIND != "conv2d":
                self.int8_unsupported(op.weight, op)  # type: ignore[attr-defined, arg-type]
            bias = self[op.bias] if op.bias is not None else "None"  # type: ignore[attr-defined]
            extra = f", weight_scale={scale}" if scale else ""
            return (f"_rt.int8_conv2d({self[op.input]}, {self[op.weight]}, {bias}, "  # type: ignore[attr-defined]
                    f"{conv_geometry(op.geometry())}{extra})")
        x = self[op.input]  # type: ignore[attr-defined]
        return self.weighted_call(op, x, self.weight(op.weight, x))  # type: ignore[attr-defined, arg-type]

    # -- the tern dialect

    def quantize(self, op: tern.QuantizeOp) -> str:
        """`w_q = _rt.ternarize_ste(w, ...)`: α·T with the recorded rule, identity STE (QAT)."""
        read = op.weight.owner
        hint = f"{read.param.root_reference.data}_q" if isinstance(read, t.GetParamOp) else "w_q"
        name = py_ident(hint, LOCAL, self.taken)
        method = op.threshold.data
        args = [self[op.weight], f"method={_literal(method)}", f"per_channel={_literal(bool(op.is_per_channel))}"]
        if method == "sparsity":
            args.append(f"target_sparsity={_literal(float(op.sparsity.value.data))}")
        elif method == "fixed":
            args.append(f"threshold={_literal(float(op.delta.value.data))}")
        self.folded[op.trits] = self.folded[op.scale] = (op, name)
        return f"{name} = _rt.ternarize_ste({', '.join(args)})"

    def ternary_weight(self, trits: SSAValue, scale: SSAValue, x: str) -> str:
        """α·T for a tern compute op: the folded quantize, or trits times scale."""
        if trits in self.folded and scale in self.folded and self.folded[trits][0] is self.folded[scale][0]:
            return self.folded[trits][1]
        return f"_rt.dequantize_ternary({self[trits]}, {self[scale]}, {x}.dtype)"

    def dequantize(self, op: tern.DequantizeOp) -> str | None:
        if op.trits in self.folded and op.scale in self.folded:
            self.names[op.output] = self.ternary_weight(op.trits, op.scale, "")
            return None
        return f"_rt.dequantize_ternary({self[op.trits]}, {self[op.scale]})"

    def tern_weighted(self, op: Operation) -> str:
        """`tern.<kind>`: the kind's torch call on α·T (inputs fake-quantised where marked)."""
        x = self[op.input]  # type: ignore[attr-defined]
        return self.weighted_call(op, _act_quant(op, x), self.ternary_weight(op.weight, op.scale, x))  # type: ignore[attr-defined]

    def get_packed(self, op: tern.GetPackedOp) -> None:
        self.names[op.output] = self.plan.member_expr(op.param.root_reference.data)

    def packed_weight(self, op: tern.PackedConv2dOp | tern.PackedLinearOp, x: str) -> str:
        """α·T unpacked with tensor ops (`unpack_tensor`), in the activations' dtype."""
        packed_type = op.weight.type
        assert isinstance(packed_type, tern.PackedTensorType)
        return (f"_rt.unpack_ternary({self[op.weight]}, {self[op.scale]}, {_literal(packed_type.get_shape())}, "
                f"{_literal(packed_type.format.data)}, {x}.dtype)")

    def packed_weighted(self, op: Operation) -> str:
        """`tern.packed_<kind>`: the kind's torch call on the unpacked α·T."""
        x = self[op.input]  # type: ignore[attr-defined]
        return self.weighted_call(op, _act_quant(op, x), self.packed_weight(op, x))  # type: ignore[arg-type]

    def batch_norm(self, op: t.BatchNormOp) -> str:
        operands = ", ".join(self[v] for v in (op.input, op.mean, op.var, op.weight, op.bias))
        return (f"F.batch_norm({operands}, self.training, momentum={_literal(op.momentum.value.data)}, "
                f"eps={_literal(op.eps.value.data)})")

    def softmax(self, op: t.SoftmaxOp) -> str:
        return f"F.softmax({self[op.input]}, dim={op.dim.value.data})"

    def dropout(self, op: t.DropoutOp) -> str:
        return f"F.dropout({self[op.input]}, {_literal(op.p.value.data)}, self.training)"

    def pool(self, op: t.MaxPool2dOp | t.AvgPool2dOp) -> str:
        fn = "F.max_pool2d" if isinstance(op, t.MaxPool2dOp) else "F.avg_pool2d"
        return f"{fn}({self[op.input]}, {_pair(op.kernel)}, stride={_pair(op.stride)}, padding={_pair(op.padding)})"

    def adaptive_avg_pool2d(self, op: t.AdaptiveAvgPool2dOp) -> str:
        return f"F.adaptive_avg_pool2d({self[op.input]}, {_pair(op.output_size)})"

    def flatten(self, op: t.FlattenOp) -> str:
        return f"torch.flatten({self[op.input]}, {op.start_dim.value.data}, {op.end_dim.value.data})"

    def unsqueeze(self, op: t.UnsqueezeOp) -> str:
        return f"torch.unsqueeze({self[op.input]}, {op.dim.value.data})"

    def squeeze(self, op: t.SqueezeOp) -> str:
        return f"torch.squeeze({self[op.input]}, {op.dim.value.data})"

    def reshape(self, op: t.ReshapeOp) -> str:
        shape = [int(d) for d in op.shape.get_values()]
        result = op.output.type
        if isinstance(result, TensorType) and -1 not in shape:
            # A dim the IR left dynamic (the batch) must stay dynamic at run time.
            dynamic = [i for i, d in enumerate(result.get_shape()) if d == DYNAMIC_INDEX]
            if len(dynamic) == 1 and len(shape) == len(result.get_shape()):
                shape[dynamic[0]] = -1
        return f"torch.reshape({self[op.input]}, {_literal(tuple(shape))})"


def _tuple_of(idents: Sequence[str]) -> str:
    """`(a, b)` / `(a,)` from identifiers (no quotes, unlike `_literal`)."""
    return f"({idents[0]},)" if len(idents) == 1 else f"({', '.join(idents)})"


def _pair(attr: DenseArrayBase) -> str:
    return _literal(tuple(int(v) for v in attr.get_values()))


def _act_quant(op: Operation, x: str) -> str:
    """`x`, fake-quantised per token when the ternarize policy marked the op (`policy=b158`)."""
    mark = op.attributes.get("act_quant")
    if mark is None:
        return x
    if not isinstance(mark, StringAttr) or mark.data != "int8_token":
        raise TdslError(f"'{_op_name(op)}': unknown act_quant {mark}; the torch backend knows \"int8_token\"",
                        loc_of(op))
    return f"_rt.int8_tokens({x})"


def _unary(fn: str) -> Callable[[_ForwardEmitter, t.ActivationOp], str]:
    return lambda emitter, op: f"{fn}({emitter[op.input]})"


def _binary(symbol: str) -> Callable[[_ForwardEmitter, t.BinaryOp], str]:
    return lambda emitter, op: f"{emitter[op.lhs]} {symbol} {emitter[op.rhs]}"


def _composite(row: Composite) -> Callable[[_ForwardEmitter, Operation], str]:
    return lambda emitter, op: row.torch(op, [emitter[v] for v in op.operands])


HANDLERS: dict[type[Operation], Callable] = {
    t.GetParamOp: _ForwardEmitter.get_param,
    t.CallOp: _ForwardEmitter.call,
    t.ConstantOp: _ForwardEmitter.constant,
    t.LinearOp: _ForwardEmitter.linear,
    t.MatmulOp: _ForwardEmitter.matmul,
    t.TernaryMatmulOp: _ForwardEmitter.ternary_matmul,
    **{cls: _ForwardEmitter.conv for cls in t.CONVS.values()},
    t.BatchNormOp: _ForwardEmitter.batch_norm,
    **{row.op: _unary(row.torch) for row in ACTIVATIONS.values()},
    **{row.op: _binary(row.symbol) for row in BINARY.values()},
    **{row.op: _composite(row) for row in COMPOSITES.values()},
    t.SoftmaxOp: _ForwardEmitter.softmax,
    t.DropoutOp: _ForwardEmitter.dropout,
    t.MaxPool2dOp: _ForwardEmitter.pool,
    t.AvgPool2dOp: _ForwardEmitter.pool,
    t.AdaptiveAvgPool2dOp: _ForwardEmitter.adaptive_avg_pool2d,
    t.FlattenOp: _ForwardEmitter.flatten,
    t.ReshapeOp: _ForwardEmitter.reshape,
    t.UnsqueezeOp: _ForwardEmitter.unsqueeze,
    t.SqueezeOp: _ForwardEmitter.squeeze,
    tern.DequantizeOp: _ForwardEmitter.dequantize,
    **{cls: _ForwardEmitter.tern_weighted for cls in weighted_ops("trits")},
    tern.GetPackedOp: _ForwardEmitter.get_packed,
    **{cls: _ForwardEmitter.packed_weighted for cls in weighted_ops("packed")},
    tern.QuantizeOp: _ForwardEmitter.quantize,
}
"""One row per op class: the handler returns the right-hand side of the op's line (None: no line)."""

UNSUPPORTED: dict[type[Operation], str] = {
    cls: "kern ops are the kernel level, which runs on the Numba and ONNX backends; "
         "emit torch code from the program before `fuse`" for cls in weighted_ops("kernel")
}
"""Op classes this backend refuses, with the reason users read."""
