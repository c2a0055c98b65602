"""The structure of a `torch.export` program that the program writer needs.

An exported graph is flat: every node carries `nn_module_stack`, the chain of module calls it
ran inside. `read_graph` rebuilds the call tree from it (one `Call` per module call, holding the
nodes it ran, in graph order), maps every lifted parameter and buffer back to its state-dict
key, runs the graph once on the example inputs so each node has a concrete value, and marks
the nodes that depend on no input and no parameter (`folded`): index tables and masks that
a program stores as constants instead of computing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tdsl.errors import TdslError

if TYPE_CHECKING:
    import torch
    from torch.fx import Node


@dataclass
class Call:
    """One call of a module: its path in the module tree ('' for the root), its class, and
    every graph node it ran (its own and its sub-modules'), in graph order."""

    key: str
    path: str
    type: str
    parent: Call | None = None
    nodes: list[Node] = field(default_factory=list)
    children: list[Call] = field(default_factory=list)

    @property
    def class_name(self) -> str:
        return self.type.rpartition(".")[2]

    def child_name(self, child: Call) -> str:
        """The child's path relative to this module (`conv1`, `layer.0`)."""
        return child.path[len(self.path) + 1:] if self.path else child.path


@dataclass
class Graph:
    """An exported program read for the program writer."""

    root: Call
    calls: dict[Node, Call]
    """Each call_function node's innermost module call."""
    inputs: list[Node]
    """The user inputs, in order."""
    output: Node
    """The one tensor the program returns."""
    weights: dict[Node, str]
    """Parameter and buffer placeholders to their state-dict key."""
    buffers: set[str]
    values: dict[Node, Any]
    """Every node's value on the example inputs."""
    folded: set[Node]
    """Nodes that depend on neither an input nor a parameter."""
    state: dict[str, torch.Tensor]
    """Every parameter and buffer (persistent or not) by its key."""
    unused: list[str] = field(default_factory=list)


IGNORED_STACK = "_empty_nn_module_stack_from_metadata_hook"


def _stack(node: Node) -> list[tuple[str, str, str]]:
    stack = node.meta.get("nn_module_stack") or {}
    out = []
    for key, (path, typ) in stack.items():
        if key == IGNORED_STACK:
            continue
        out.append((key, path, typ if isinstance(typ, str) else f"{typ.__module__}.{typ.__qualname__}"))
    return out


def _call_tree(nodes: list[Node], root_type: str) -> tuple[Call, dict[Node, Call]]:
    root = Call("", "", root_type)
    calls: dict[Node, Call] = {}
    by_key: dict[str, Call] = {}
    for node in nodes:
        current = root
        root.nodes.append(node)
        for key, path, typ in _stack(node):
            if path == "":
                root.type = typ
                continue
            call = by_key.get(key)
            if call is None:
                call = Call(key, path, typ, parent=current)
                by_key[key] = call
                current.children.append(call)
            call.nodes.append(node)
            current = call
        calls[node] = current
    return root, calls


def _example_values(program: Any, args: list[Any]) -> dict[Node, Any]:
    """Run the graph on `args` (lifted weights, then inputs) recording every node's value."""
    import torch
    from torch.fx import Interpreter

    values: dict[Node, Any] = {}

    class Recorder(Interpreter):
        def run_node(self, n: Node) -> Any:
            value = super().run_node(n)
            values[n] = value
            return value

    with torch.no_grad():
        Recorder(program.graph_module).run(*args)
    return values


def _depends(nodes: list[Node], sources: set[Node]) -> set[Node]:
    """The nodes that reach one of `sources` through their arguments (sources included)."""
    out = set(sources)
    for node in nodes:
        if any(a in out for a in node.all_input_nodes):
            out.add(node)
    return out


def read_graph(program: Any, example_inputs: tuple[Any, ...]) -> Graph:
    """Read an `ExportedProgram`; `example_inputs` are the user inputs it is run on."""
    from torch.export.graph_signature import InputKind

    signature = program.graph_signature
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
    state = dict(program.state_dict)
    state.update({k: v for k, v in program.constants.items() if hasattr(v, "shape")})
    weights: dict[Node, str] = {}
    buffers: set[str] = set()
    inputs: list[Node] = []
    args: list[Any] = []
    user = iter(example_inputs)
    for node, spec in zip(placeholders, signature.input_specs):
        if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            weights[node] = spec.target
            if spec.kind != InputKind.PARAMETER:
                buffers.add(spec.target)
            args.append(state[spec.target])
        elif spec.kind == InputKind.USER_INPUT:
            inputs.append(node)
            try:
                args.append(next(user))
            except StopIteration:
                raise TdslError(f"the program takes more inputs than the {len(example_inputs)} example "
                                "input(s) given") from None
        else:
            raise TdslError(f"input '{node.name}' of kind {spec.kind.name} is not supported (only parameters, "
                            "buffers, constants and tensor inputs)")
    output = next(n for n in program.graph.nodes if n.op == "output")
    results = [r for r in output.args[0] if r is not None]
    if len(results) != 1 or not hasattr(results[0], "op"):
        raise TdslError(f"the program returns {len(results)} values; an imported model must return one tensor "
                        "(export a wrapper that returns the one you need)")
    body = [n for n in program.graph.nodes if n.op == "call_function"]
    root_type = type(program).__name__
    root, calls = _call_tree(body, root_type)
    values = _example_values(program, args)
    dynamic = _depends(body, set(inputs) | {n for n in weights if weights[n] not in buffers})
    folded = {n for n in body if n not in dynamic}
    used = {weights[n] for n in weights if n.users}
    unused = sorted(k for k in state if k not in used and k in program.state_dict)
    return Graph(root, calls, inputs, results[0], weights, buffers, values, folded, state, unused)


def export_module(module: Any, example_inputs: tuple[Any, ...]) -> Any:
    """`torch.export` of `module` in eval mode, with the batch dim (dim 0) of every input
    symbolic, or static where the model fixes it."""
    import torch

    module = module.eval()
    batch = torch.export.Dim("N", min=1, max=65536)
    dynamic = tuple({0: batch} if getattr(x, "dim", lambda: 0)() > 0 else None for x in example_inputs)
    try:
        return torch.export.export(module, tuple(example_inputs), dynamic_shapes=dynamic, strict=False)
    except Exception:  # noqa: BLE001 - a model that specialises its batch: export it static instead
        try:
            return torch.export.export(module, tuple(example_inputs), strict=False)
        except Exception as e:  # noqa: BLE001 - torch.export's own message says what it could not trace
            raise TdslError(f"torch.export could not export the module: {type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}") from None
