"""Which precision each weight gets: the policy machinery `ternarize` and `precision` share.

A *weight-bearing op* is a float-level weighted op (`WeightedOp`: `tdsl.conv2d`,
`tdsl.linear`, ...), a `tdsl.ternary_matmul` or a `tdsl.matmul` whose weight operand is a
`tdsl.get_param`. Its *path* is the dotted
instance path from the entry layer plus the param name (`layer1.0.conv1.weight`).
Precedence (docs/TERNARY.md): an override (`glob=precision`, fnmatch, first match wins),
then the param's DSL annotation (`precision` on the `tdsl.param`), then the policy.

Layers are specialisations shared by instances; `specialise` clones a layer whose
instances need different precisions (fresh `Name_N`, instance retargeted) and returns,
per layer, the precision of each of its weight params.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from xdsl.dialects.builtin import ModuleOp, SymbolRefAttr
from xdsl.ir import Operation

from tdsl.dialects.locations import loc_of
from tdsl.dialects.tdsl import (
    CallOp,
    GetParamOp,
    LayerOp,
    MatmulOp,
    TernaryMatmulOp,
    module_layers,
)
from tdsl.dialects.weighted import weighted
from tdsl.errors import PassError, SourceLoc
from tdsl.passes.instances import child_path, clone_layer

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8", "ternary")
POLICIES: tuple[str, ...] = ("default", "all", "none", "b158")

WeightOp = Operation
"""A weight-bearing op (see the module docstring); found by `weight_read`, not by class."""


def weight_read(op: Operation) -> GetParamOp | None:
    """The `tdsl.get_param` that gives a weight-bearing op its weight, or None for other ops."""
    trait = weighted(op)
    if (trait is not None and trait.level == "float") or isinstance(op, TernaryMatmulOp):
        weight = op.weight  # type: ignore[attr-defined]
    elif isinstance(op, MatmulOp):
        weight = op.rhs
    else:
        return None
    read = weight.owner
    return read if isinstance(read, GetParamOp) else None


def weight_ops(layer: LayerOp) -> Iterator[tuple[WeightOp, GetParamOp]]:
    """The weight-bearing ops of a layer's forward with their weight reads, in order."""
    for op in layer.forward.body.block.ops:
        read = weight_read(op)
        if read is not None:
            yield op, read  # type: ignore[misc]


@dataclass(frozen=True)
class WeightSite:
    """One weight-bearing op reached from the entry, in execution order."""

    path: str
    """`layer1.0.conv1.weight`: the instance path plus the param name."""
    param: str
    annotation: str | None
    """The `precision` of the `tdsl.param` (a DSL annotation), if any."""
    is_linear: bool
    """A linear, matmul or ternary_matmul (the `default` policy keeps the last one)."""
    loc: SourceLoc | None


def _called_instances(layer: LayerOp) -> Iterator[str]:
    """Names of the instances a layer's forward calls, first call first, each once."""
    seen: set[str] = set()
    for op in layer.forward.body.block.ops:
        if isinstance(op, CallOp):
            name = op.callee.root_reference.data
            if name not in seen:
                seen.add(name)
                yield name


def collect_sites(module: ModuleOp, entry: LayerOp, pass_name: str) -> list[WeightSite]:
    """Every weight-bearing op reached by calls from the entry, in execution order."""
    layers = module_layers(module)
    sites: list[WeightSite] = []
    seen: set[str] = set()

    def visit(layer: LayerOp, path: str, stack: tuple[str, ...]) -> None:
        for op in layer.forward.body.block.ops:
            read = weight_read(op)
            if read is not None:
                param = read.param.root_reference.data
                site_path = child_path(path, param)
                if site_path in seen:
                    continue
                seen.add(site_path)
                decl = layer.lookup_param(param)
                annotation = decl.precision.data if decl is not None and decl.precision is not None else None
                trait = weighted(op)  # None for the matmuls, which count as linear
                is_linear = trait is None or trait.kind == "linear"
                sites.append(WeightSite(site_path, param, annotation, is_linear, loc_of(op)))
            elif isinstance(op, CallOp):
                name = op.callee.root_reference.data
                instance = layer.lookup_instance(name)
                callee = layers.get(instance.callee.root_reference.data) if instance is not None else None
                if callee is None:
                    raise PassError(f"{pass_name}: call to unknown instance '{child_path(path, name)}'", loc_of(op))
                if callee.sym_name.data in stack:
                    raise PassError(f"{pass_name}: layer '{callee.layer.data}' calls itself", loc_of(op))
                visit(callee, child_path(path, name), (*stack, callee.sym_name.data))

    visit(entry, "", (entry.sym_name.data,))
    return sites


def parse_overrides(text: str, pass_name: str, allowed: tuple[str, ...] = PRECISIONS) -> list[tuple[str, str]]:
    """`conv1=fp16 layer4.*=int8` -> [(glob, precision), ...]; a bad entry is a PassError."""
    overrides: list[tuple[str, str]] = []
    for entry in text.split():
        glob, sep, precision = entry.rpartition("=")
        if not sep or not glob:
            raise PassError(f"{pass_name}: override entries must be glob=precision, got '{entry}'")
        if precision not in allowed:
            raise PassError(
                f"{pass_name}: override '{entry}': precision must be one of {', '.join(allowed)}, got '{precision}'"
            )
        overrides.append((glob, precision))
    return overrides


def check_choice(pass_name: str, option: str, value: str, choices: tuple[str, ...]) -> None:
    """`pass: option must be one of a, b, got 'x'` unless `value` is a choice."""
    if value not in choices:
        raise PassError(f"{pass_name}: {option} must be one of {', '.join(choices)}, got '{value}'")


def resolve(
    sites: list[WeightSite], overrides: list[tuple[str, str]], policy: str, keep: str,
) -> dict[str, str | None]:
    """Each site's precision; None leaves the param as it is (policy `none`, nothing else)."""
    first = sites[0].path if sites else None
    linears = [s.path for s in sites if s.is_linear]
    last_linear = linears[-1] if linears else None
    out: dict[str, str | None] = {}
    for site in sites:
        chosen = next((p for glob, p in overrides if fnmatchcase(site.path, glob)), None)
        if chosen is None:
            chosen = site.annotation
        if chosen is None:
            if policy == "all":
                chosen = "ternary"
            elif policy == "default":
                chosen = keep if site.path in (first, last_linear) else "ternary"
            elif policy == "b158":  # BitNet b1.58: every projection ternary but the LM head
                chosen = keep if site.path == last_linear else "ternary"
        out[site.path] = chosen
    return out


@dataclass
class _Specialiser:
    """Clones layers so that every layer's weights have one precision per param."""

    module: ModuleOp
    precisions: dict[str, str | None]
    memo: dict[tuple, str] = field(default_factory=dict)
    """(origin symbol, own precisions, children's targets) -> the layer specialised for them."""
    origin: dict[str, str] = field(default_factory=dict)
    """Clone symbol -> the symbol it was cloned from."""
    used: set[str] = field(default_factory=set)
    assignment: dict[str, dict[str, str | None]] = field(default_factory=dict)

    def visit(self, layer: LayerOp, path: str) -> str:
        own = tuple(
            (read.param.root_reference.data, self.precisions.get(child_path(path, read.param.root_reference.data)))
            for _, read in weight_ops(layer)
        )
        layers = module_layers(self.module)
        children = []
        for name in _called_instances(layer):
            instance = layer.lookup_instance(name)
            assert instance is not None, "collect_sites checked every call"
            callee = layers[instance.callee.root_reference.data]
            children.append((name, self.visit(callee, child_path(path, name))))
        sym = layer.sym_name.data
        key = (self.origin.get(sym, sym), own, tuple(children))
        if key in self.memo:
            return self.memo[key]
        target = layer if sym not in self.used else clone_layer(self.module, layer, layer.layer.data)
        target_sym = target.sym_name.data
        self.origin[target_sym] = self.origin.get(sym, sym)
        self.used.add(target_sym)
        self.memo[key] = target_sym
        for name, child in children:
            instance = target.lookup_instance(name)
            assert instance is not None
            instance.callee = SymbolRefAttr(child)
        self.assignment[target_sym] = dict(own)
        return target_sym


def specialise(module: ModuleOp, entry: LayerOp, precisions: dict[str, str | None]) -> dict[str, dict[str, str | None]]:
    """Clone shared layers whose instances need different precisions; per layer symbol, the
    precision of each weight param its forward reads (None: leave it)."""
    spec = _Specialiser(module, precisions)
    spec.visit(entry, "")
    return spec.assignment
