"""A readable tdsl program from an exported graph (`torch_graph.Graph`).

Every module call becomes an instance: its declarations (sub-modules as `let`s named as in
the torch module tree, its own parameters and buffers as weights) and its forward, written
as tokens where every number is a `Hole`. Leaf modules that a prelude layer matches
(`nn.Conv2d` → `Conv2d(cin, cout, kernel=3, ...)`) are written as that layer; a Sequential
whose children run in a chain is `Sequential(...)`. Instances of one module class are then
compared: those with the same text up to their numbers become one `layer`, the numbers that
differ between them its parameters (equal columns share one). So the repeated blocks of a
ResNet are one layer used several times, and weight names stay the state-dict keys.
"""
from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tdsl.errors import TdslError
from tdsl.importers import aten_ops as A
from tdsl.importers.aten_ops import Hole, Tokens
from tdsl.importers.torch_graph import Call, Graph

if TYPE_CHECKING:
    from torch.fx import Node

PRELUDE = {"Linear", "Conv2d", "Conv1d", "BatchNorm2d", "BatchNorm1d", "LayerNorm", "RMSNorm", "Embedding", "ReLU",
           "ReLU6", "GELU", "Sigmoid", "Tanh", "Softmax", "Dropout", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
           "Flatten", "Identity", "Sequential"}
RESERVED = set(keyword.kwlist) | {"layer", "fn", "let", "return", "true", "false", "none", "in", "Tensor", "int",
                                  "float", "bool", "str", "list", "trit", "int8", "int32", "float16", "float32",
                                  "range", "len", "min", "max", "sqrt", "round", "forward"}
PARAM_NAMES = {"bias": "with_bias", "weight": "weight_dim"}
SEQUENTIAL = "torch.nn.modules.container.Sequential"
MAX_INLINE_DEPTH = 4


def identifier(name: str) -> str:
    """A DSL identifier for a torch name (`LayerNorm` stays, `1x1` becomes `_1x1`)."""
    name = re.sub(r"\W", "_", name)
    if not name or name[0].isdigit():
        name = "_" + name
    return name + "_" if name in RESERVED else name


def wrap(line: str, width: int = 110) -> str:
    """A long `let x = Sequential(a, b, ...)` or list with one item per line, aligned."""
    if len(line) <= width or not ("Sequential(" in line or "= [" in line):
        return line
    start = line.index("Sequential(") + len("Sequential(") if "Sequential(" in line else line.index("= [") + 3
    items, depth, current = [], 0, ""
    for ch in line[start:-1]:
        depth += ch in "([" and 1 or 0
        depth -= ch in ")]" and 1 or 0
        if ch == "," and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += ch
    items.append(current.strip())
    indent = " " * (start - len(line) + len(line.lstrip()) + 4)
    return line[:start] + (",\n" + indent).join(items) + line[-1]


def dsl_path(path: str) -> str:
    """A torch module path as the program names it: each name an identifier (`layer` is a
    tdsl keyword, so `encoder.layer.0` is `encoder.layer_.0`), list indices kept."""
    return ".".join(p if p.isdigit() else identifier(p) for p in path.split(".")) if path else ""


@dataclass
class ChildRef:
    """A generated layer's constructor call, written once its class's parameters are known."""

    instance: Instance


@dataclass
class Instance:
    """One module call, written out; `tokens` are its declarations and forward body."""

    call: Call
    cls: str
    decls: list[Tokens] = field(default_factory=list)
    body: list[Tokens] = field(default_factory=list)
    input_types: list[str] = field(default_factory=list)
    output_type: str = "Tensor[float32]"
    inputs: list[Node] = field(default_factory=list)
    output: Node | None = None
    variant: Variant | None = None
    args: list[Any] = field(default_factory=list)
    children: list[Instance] = field(default_factory=list)


@dataclass
class Variant:
    """A generated `layer`: the shared text of instances that differ only in their numbers."""

    name: str
    params: list[tuple[str, str]]
    columns: list[int | str]
    """Per hole: the index of its parameter, or its literal text where all instances agree."""
    template: Instance


def literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text if any(c in text for c in ".en") else text + ".0"
    return str(value)


def type_name(value: Any) -> str:
    return "bool" if isinstance(value, bool) else ("float" if isinstance(value, float) else "int")


def tensor_type(value: Any, dims: list[str] | None = None) -> str:
    dtype = "float32" if getattr(value, "is_floating_point", lambda: True)() else "int32"
    return f"Tensor[{dtype}{''.join(', ' + d for d in dims or [])}]"


class ProgramWriter:
    """Writes `graph` as DSL text; `weights` then maps each program weight to its array."""

    def __init__(self, graph: Graph, source: str):
        self.graph = graph
        self.source = source
        self.index = {n: i for i, n in enumerate(graph.root.nodes)}
        self.pads: dict[Node, tuple[int, int]] = {}
        self.identity: set[Node] = set()
        self.constants: dict[str, Any] = {}
        self.weights: dict[str, str] = {}
        """Program weight path to state-dict key."""
        self.symbols: dict[str, str] = {}
        self.attention: dict[Node, tuple[list[Node], int, bool]] = {}
        self._fold_pads()
        self._fold_attention()
        self.live = self._live()
        self.instances: dict[str, Instance] = {}

    # ------------------------------------------------------------------ graph facts

    def canonical(self, node: Any) -> Any:
        while hasattr(node, "op") and node in self.identity:
            node = node.args[0]
        return node

    def _fold_pads(self) -> None:
        """Zero pads that are symmetric and feed only a convolution become its padding;
        identity ops (dropout, copies) are marked so every reference looks through them."""
        for node in self.graph.root.nodes:
            target = str(node.target)
            if target in A.IDENTITY and target not in A.PAD_OPS:
                self.identity.add(node)
        for node in self.graph.root.nodes:
            if str(node.target) not in A.PAD_OPS:
                continue
            pads = [int(p) for p in node.args[1]]
            if not any(pads):
                self.identity.add(node)
                continue
            constant = str(node.target) == "aten.constant_pad_nd.default"
            value = node.args[2 if constant else 3] if len(node.args) > (2 if constant else 3) else 0
            mode = "constant" if constant or len(node.args) < 3 else node.args[2]
            users = self._through_identity_users(node)
            convs = [u for u in users if str(u.target) in ("aten.conv2d.default", "aten.convolution.default")
                     and u.args[0] is not None and self.canonical(u.args[0]) is node]
            symmetric = len(pads) == 4 and pads[0] == pads[1] and pads[2] == pads[3]
            if not (mode == "constant" and (value or 0) == 0 and symmetric and convs and len(convs) == len(users)):
                continue  # written as pad2d (aten_ops refuses what pad2d cannot do)
            if any(not self._fits_padding(conv, (pads[2], pads[0])) for conv in convs):
                continue
            self.identity.add(node)
            for conv in convs:
                self.pads[conv] = (pads[2], pads[0])

    def _fits_padding(self, conv: Node, extra: tuple[int, int]) -> bool:
        """tdsl's convolutions pad at most half the kernel on each side."""
        kernel = self.graph.values[conv.args[1]].shape[2:]
        own = conv.args[4] if len(conv.args) > 4 and not isinstance(conv.args[4], str) else [0, 0]
        own = list(own) * (2 // len(own)) if own else [0, 0]
        return len(kernel) == 2 and all(2 * (p + e) <= k for p, e, k in zip(own, extra, kernel))

    def _through_identity_users(self, node: Node) -> list[Node]:
        out = []
        for user in node.users:
            if str(user.target) in A.IDENTITY and str(user.target) not in A.PAD_OPS:
                out += self._through_identity_users(user)
            else:
                out.append(user)
        return out

    def _live(self) -> set[Node]:
        live: set[Node] = set()
        todo = [self.canonical(self.graph.output)]
        while todo:
            node = todo.pop()
            if node in live or node.op != "call_function":
                continue
            live.add(node)
            if node in self.graph.folded:
                continue
            todo += [self.canonical(a) for a in self.inputs_of(node)]
        return live

    def inputs_of(self, node: Node) -> list[Node]:
        return self.attention[node][0] if node in self.attention else list(node.all_input_nodes)

    def _fold_attention(self) -> None:
        """torch's attention over [N, heads, T, head_dim] views (`view` + `transpose` of the
        [N, T, heads * head_dim] projections, transposed back and reshaped after) is tdsl's
        `attention` on the projections: the views around it become identities. A mask that
        is computed from no input and masks nothing (all true, or all zero) is dropped."""
        for node in self.graph.root.nodes:
            if str(node.target) != "aten.scaled_dot_product_attention.default":
                continue
            packed = [self._unpack_heads(t) for t in node.args[:3]]
            mask = node.args[3] if len(node.args) > 3 else node.kwargs.get("attn_mask")
            if any(p is None for p in packed) or (mask is not None and not (
                    self.canonical(mask) in self.graph.folded and _neutral(self.graph.values[mask]))):
                continue
            causal = bool(node.kwargs.get("is_causal", node.args[5] if len(node.args) > 5 else False))
            users = self._through_identity_users(node)
            if len(users) != 1 or not self._merge_heads(users[0]):
                continue
            self.attention[node] = (packed, int(self.graph.values[node.args[0]].shape[1]), causal)

    def _unpack_heads(self, t: Node) -> Node | None:
        t = self.canonical(t)
        target = str(t.target)
        if target == "aten.transpose.int" and sorted(int(d) % 4 for d in t.args[1:3]) == [1, 2]:
            view = self.canonical(t.args[0])
        elif target == "aten.permute.default" and [int(d) % 4 for d in t.args[1]] == [0, 2, 1, 3]:
            view = self.canonical(t.args[0])
        else:
            return None
        if str(view.target) not in ("aten.view.default", "aten.reshape.default", "aten._unsafe_view.default"):
            return None
        return self.canonical(view.args[0])

    def _merge_heads(self, user: Node) -> bool:
        """Mark the transpose/reshape chain from [N, heads, T, d] back to [N, T, heads * d]
        as identities; False when `user` starts no such chain."""
        chain = []
        node = user
        while str(node.target) in ("aten.transpose.int", "aten.permute.default", "aten.view.default",
                                   "aten.reshape.default", "aten._unsafe_view.default", "aten.contiguous.default",
                                   "aten.clone.default"):
            chain.append(node)
            if self.graph.values[node].dim() == 3:
                self.identity.update(chain)
                return True
            if len(node.users) != 1:
                return False
            node = next(iter(node.users))
        return False

    def module_of(self, node: Node) -> str:
        call = self.graph.calls.get(node)
        return call.path if call is not None else ""

    def args_of(self, node: Node) -> list[Node]:
        """The canonical nodes `node` reads (not weights, not shape symbols)."""
        out = []
        for a in self.inputs_of(node):
            a = self.canonical(a)
            if a in self.graph.weights or str(a.target) == "aten.sym_size.int":
                continue
            out.append(a)
        return out

    # ------------------------------------------------------------------ one module call

    def _inside(self, call: Call, node: Node) -> bool:
        path = self.module_of(node)
        return call.path == "" or path == call.path or path.startswith(call.path + ".")

    def _io(self, call: Call) -> tuple[list[Node], list[Node]]:
        members = {n for n in call.nodes if n in self.live}
        inputs: list[Node] = []
        outputs: list[Node] = []
        for node in call.nodes:
            if node not in members or node in self.identity or node in self.graph.folded:
                continue
            for a in self.args_of(node):
                if a in self.graph.folded:
                    outside = not self._inside(call, a)
                else:
                    outside = a not in members
                if outside and a not in inputs:
                    inputs.append(a)
        for node in self.graph.root.nodes:
            if node in members or node not in self.live or node in self.identity or node in self.graph.folded:
                continue
            for a in self.args_of(node):
                if a in members and a not in self.graph.folded and a not in outputs:
                    outputs.append(a)
        out = self.canonical(self.graph.output)
        if out in members and out not in outputs:
            outputs.append(out)
        return inputs, outputs

    def instance(self, call: Call) -> Instance | None:
        """The instance of `call`, or None when nothing it computes is used."""
        inputs, outputs = self._io(call) if call.path else (list(self.graph.inputs), [
            self.canonical(self.graph.output)])
        if not outputs:
            return None
        if len(outputs) > 1:
            raise TdslError(f"module '{call.path}' ({call.class_name}) hands {len(outputs)} tensors to the rest of "
                            f"the model ({', '.join(o.name for o in outputs)}); an imported module must return "
                            "one")
        inst = Instance(call, call.class_name, inputs=inputs, output=outputs[0])
        self.instances[call.key] = inst
        inst.input_types = [tensor_type(self.graph.values.get(a)) for a in inputs]
        inst.output_type = tensor_type(self.graph.values.get(outputs[0]))
        ScopeWriter(self, inst).write()
        return inst

    def prelude(self, call: Call, inst_inputs: list[Node]) -> Tokens | None:
        """The prelude layer a leaf torch.nn module is, or None."""
        if call.children or not call.type.startswith("torch.nn.modules."):
            return None
        ops = [n for n in call.nodes if n in self.live and n not in self.identity and n not in self.graph.folded]
        name = call.class_name
        if not ops:
            return A.call("Dropout", p=A.lit(float(call_p(call)), "p")) if name == "Dropout" else None
        if len(ops) != 1 or len(inst_inputs) != 1 or self.args_of(ops[0]) != inst_inputs:
            return None
        node = ops[0]
        target = str(node.target)
        own = {f"{call.path}.{k}" for k in ("weight", "bias", "running_mean", "running_var")}
        used = [self.graph.weights[a] for a in node.all_input_nodes if a in self.graph.weights]
        if any(u not in own for u in used):
            return None
        shape = {k: tuple(self.graph.state[k].shape) for k in used}
        rank = self.graph.values[node.args[0]].dim() if hasattr(node.args[0], "op") else 0
        w = shape.get(f"{call.path}.weight")
        has_bias = f"{call.path}.bias" in shape
        if name == "Conv2d" and target == "aten.conv2d.default" and w is not None:
            _, _, _, stride, padding, dilation, groups = A._args(node, None, None, None, [1, 1], [0, 0], [1, 1], 1)
            padding = [int(p) + e for p, e in zip(padding, self.pads.get(node, (0, 0)))]
            if isinstance(padding, str) or w[2] != w[3] or len({*stride}) > 1 or len({*padding}) > 1 or \
                    len({*dilation}) > 1:
                return None
            ctor = A.call("Conv2d", A.lit(w[1] * groups, "cin"), A.lit(w[0], "cout"), kernel=A.lit(w[2], "kernel"))
            opts = [A.Opt(key, Hole(value, key), default) for key, value, default in (
                ("stride", int(stride[0]), 1), ("padding", int(padding[0]), 0), ("dilation", int(dilation[0]), 1),
                ("groups", int(groups), 1), ("bias", has_bias, True))]
            return ctor[:-1] + opts + [")"]
        if name == "Linear" and target == "aten.linear.default" and w is not None and rank == 2:
            ctor = A.call("Linear", A.lit(w[1], "in_features"), A.lit(w[0], "out_features"))
            return ctor[:-1] + [A.Opt("bias", Hole(has_bias, "bias"), True), ")"]
        if name in ("BatchNorm2d", "BatchNorm1d") and target == "aten.batch_norm.default" and len(used) == 4 \
                and not node.args[5] and rank == (4 if name == "BatchNorm2d" else rank) and rank in (2, 3, 4):
            eps = float(node.args[7])
            return A.call(name, A.lit(w[0], "c"), *([] if eps == 1e-5 else [["eps="] + A.lit(eps, "eps")]))
        if name == "LayerNorm" and target == "aten.layer_norm.default" and len(used) == 2 and len(node.args[1]) == 1:
            eps = float(node.args[4]) if len(node.args) > 4 else 1e-5
            return A.call("LayerNorm", A.lit(w[0], "d"), *([] if eps == 1e-5 else [["eps="] + A.lit(eps, "eps")]))
        if name == "Embedding" and target == "aten.embedding.default" and len(used) == 1:
            return A.call("Embedding", A.lit(w[0], "num"), A.lit(w[1], "dim"))
        simple = {("ReLU", "aten.relu.default"), ("ReLU", "aten.relu_.default"), ("GELU", "aten.gelu.default"),
                  ("Sigmoid", "aten.sigmoid.default"), ("Tanh", "aten.tanh.default")}
        if (name, target) in simple and len(node.args) == 1 and not node.kwargs:
            return A.call(name)
        if name == "ReLU6" and target.startswith("aten.hardtanh") and [float(a) for a in node.args[1:3]] == [0, 6]:
            return A.call("ReLU6")
        if name == "Flatten" and target == "aten.flatten.using_ints" and node.args[2:] in ((), (-1,)):
            return A.call("Flatten", *([] if node.args[1] == 1 else [A.lit(node.args[1], "start_dim")]))
        if name == "AdaptiveAvgPool2d" and target == "aten.adaptive_avg_pool2d.default" and \
                len(set(node.args[1])) == 1:
            return A.call("AdaptiveAvgPool2d", A.lit(node.args[1][0], "size"))
        if name == "MaxPool2d" and target == "aten.max_pool2d.default":
            _, kernel, stride, padding, dilation, ceil = A._args(node, None, None, [], 0, 1, False)
            same = [len(set(v)) == 1 if isinstance(v, (list, tuple)) and v else True for v in (kernel, stride, padding)]
            if all(same) and not ceil and dilation in (1, [1, 1]):
                first = [v[0] if isinstance(v, (list, tuple)) and v else v for v in (kernel, stride, padding)]
                kw = {"stride": A.lit(first[1] or first[0], "stride")}
                if first[2]:
                    kw["padding"] = A.lit(first[2], "padding")
                return A.call("MaxPool2d", A.lit(first[0], "kernel"), **kw)
        return None

    # ------------------------------------------------------------------ classes and text

    def write(self) -> str:
        root = self.instance(self.graph.root)
        assert root is not None
        variants = self._resolve(root)
        lines = [f"# Imported from {self.source} by `tdsl import` (torch.export): one layer per module class,",
                 "# sub-modules and weights named as in the torch module tree, so every weight keeps its",
                 "# state_dict key. Edit it like any tdsl program."]
        renamed = sorted({(t, p) for key, torch_key in self.weights.items() if key != torch_key
                          for t, p in zip(torch_key.split("."), key.split(".")) if t != p})
        if renamed:
            lines.append("# Renamed (tdsl keywords): " + ", ".join(f"{t} -> {p}" for t, p in renamed)
                         + " in module and weight names.")
        if self.graph.unused:
            counts: dict[str, int] = {}
            for key in self.graph.unused:
                last = key.rpartition(".")[2]
                counts[last] = counts.get(last, 0) + 1
            lines.append("# Not stored (forward never reads them): " + ", ".join(
                f"{k} ({n} module{'s' if n > 1 else ''})" for k, n in counts.items()))
        for variant in variants:
            lines.append("")
            lines += self._layer_text(variant, entry=variant.template is root)
        return "\n".join(lines) + "\n"

    def _resolve(self, root: Instance) -> list[Variant]:
        """Group instances into variants, children before parents; the root is last."""
        order: list[Instance] = []

        def visit(inst: Instance) -> None:
            for child in inst.children:
                visit(child)
            order.append(inst)
        visit(root)
        by_class: dict[str, list[Instance]] = {}
        for inst in order:
            by_class.setdefault(inst.call.type, []).append(inst)
        variants: list[Variant] = []
        names: set[str] = set(PRELUDE)
        pending = list(dict.fromkeys(inst.call.type for inst in order))
        while pending:
            ready = [c for c in pending if all(ch.variant is not None for m in by_class[c] for ch in m.children)]
            if not ready:
                raise TdslError(f"module classes {', '.join(pending)} contain each other; tdsl layers cannot recurse")
            for cls in ready:
                buckets: dict[tuple[Any, ...], list[Instance]] = {}
                for member in by_class[cls]:
                    skeleton, _ = self._flatten(member)
                    buckets.setdefault(skeleton, []).append(member)
                for members in buckets.values():
                    variants.append(self._variant(members, names))
                pending.remove(cls)
        root_variant = root.variant
        variants.remove(root_variant)
        return variants + [root_variant]

    def _flatten(self, inst: Instance) -> tuple[tuple[Any, ...], list[Hole]]:
        holes: list[Hole] = []
        skeleton: list[Any] = []
        for line in [*inst.decls, ["\n"], *inst.body, ["->", *inst.input_types, inst.output_type]]:
            for tok in self._expand(line):
                if isinstance(tok, A.Opt):
                    holes.append(tok.hole)
                    skeleton.append(("opt", tok.key, type_name(tok.hole.value)))
                elif isinstance(tok, Hole):
                    holes.append(tok)
                    skeleton.append((type_name(tok.value),))
                else:
                    skeleton.append(tok)
            skeleton.append("\n")
        return tuple(skeleton), holes

    def _expand(self, tokens: Tokens) -> Tokens:
        out: Tokens = []
        for tok in tokens:
            if isinstance(tok, ChildRef):
                variant = tok.instance.variant
                assert variant is not None, "children are resolved before their parents"
                out += [variant.name, "("]
                for i, ((pname, _), value) in enumerate(zip(variant.params, tok.instance.args)):
                    out += ([", "] if i else []) + [Hole(value, pname)]
                out.append(")")
            elif isinstance(tok, list):
                out += self._expand(tok)
            else:
                out.append(tok)
        return out

    def _variant(self, members: list[Instance], names: set[str]) -> Variant:
        columns_values = [[h for h in self._flatten(m)[1]] for m in members]
        first = columns_values[0]
        params: list[tuple[str, str]] = []
        columns: list[int | str] = []
        seen: dict[tuple[Any, ...], int] = {}
        taken = set(RESERVED) | {self._decl_name(d) for d in members[0].decls}
        for j, hole in enumerate(first):
            vector = tuple((type(m[j].value), m[j].value) for m in columns_values)
            if len({v for v in vector}) == 1:
                columns.append(literal(hole.value))
                continue
            if vector not in seen:
                base = identifier(PARAM_NAMES.get(hole.hint, hole.hint))
                if base == "dim" and members[0].call.class_name == "Linear":
                    base = "out_features" if "out_features" not in taken else "in_features"
                name, k = base, 2
                while name in taken:
                    name, k = f"{base}{k}", k + 1
                taken.add(name)
                seen[vector] = len(params)
                params.append((name, type_name(hole.value)))
            columns.append(seen[vector])
        base = identifier(members[0].cls)
        if base in PRELUDE:
            base = "Torch" + base
        name, k = base, 2
        while name in names:
            name, k = f"{base}{k}", k + 1
        names.add(name)
        variant = Variant(name, params, columns, members[0])
        for m, holes in zip(members, columns_values):
            m.variant = variant
            args: list[Any] = [None] * len(params)
            for col, hole in zip(columns, holes):
                if isinstance(col, int):
                    args[col] = hole.value
            m.args = args
        return variant

    @staticmethod
    def _decl_name(decl: Tokens) -> str:
        text = "".join(t for t in decl if isinstance(t, str))
        match = re.search(r"let (\w+)", text)
        return match.group(1) if match else ""

    def _render(self, tokens: Tokens, variant: Variant, holes: list[Hole], cursor: list[int]) -> str:
        out = []
        for tok in self._expand(tokens):
            if isinstance(tok, A.Opt):
                col = variant.columns[cursor[0]]
                cursor[0] += 1
                if not (isinstance(col, str) and col == literal(tok.default)):
                    out.append(f", {tok.key}={variant.params[col][0] if isinstance(col, int) else col}")
            elif isinstance(tok, Hole):
                col = variant.columns[cursor[0]]
                cursor[0] += 1
                out.append(variant.params[col][0] if isinstance(col, int) else col)
            else:
                out.append("(" if tok == A.OPEN else ")" if tok == A.CLOSE else tok)
        return wrap("".join(out))

    def _layer_text(self, variant: Variant, entry: bool) -> list[str]:
        inst = variant.template
        _, holes = self._flatten(inst)
        cursor = [0]
        params = ", ".join(f"{n}: {t}" for n, t in variant.params)
        lines = [f"layer {variant.name}({params}) {{" if params else f"layer {variant.name} {{"]
        for decl in inst.decls:
            lines.append("    " + self._render(decl, variant, holes, cursor))
        body = [self._render(line, variant, holes, cursor) for line in inst.body]
        names = ScopeWriter.input_names(self, inst)
        if entry:
            args = ", ".join(f"{n}: {self.entry_type(a)}" for n, a in zip(names, inst.inputs))
            result = self.entry_type(inst.output)
        else:
            args = ", ".join(f"{n}: {t}" for n, t in zip(names, inst.input_types))
            result = inst.output_type
        head = f"    fn forward({args}) -> {result} {{"
        if len(body) == 1 and "\n" not in body[0] and len(head) + len(body[0]) + 3 <= 120:
            lines.append(f"{head} {body[0]} }}")  # a one-statement forward on one line
        else:
            if inst.decls:
                lines.append("")
            lines.append(head)
            lines += ["        " + b for b in body]
            lines.append("    }")
        lines.append("}")
        return lines

    def entry_type(self, node: Node) -> str:
        """`Tensor[float32, N, 3, 224, 224]`: static dims as numbers, symbolic ones named."""
        value = self.graph.values[node]
        meta = node.meta.get("val")
        dims = []
        for i, d in enumerate(meta.shape if meta is not None else value.shape):
            if isinstance(d, int):
                dims.append(str(d))
            else:
                key = str(d)
                if key not in self.symbols:
                    self.symbols[key] = ["N", "T", "S", "M", "K"][len(self.symbols) % 5] if len(self.symbols) < 5 \
                        else f"D{len(self.symbols)}"
                dims.append(self.symbols[key])
        return tensor_type(value, dims)


def call_p(call: Call) -> float:
    for node in call.nodes:
        if "dropout" in str(node.target) and len(node.args) > 1:
            return float(node.args[1])
    return 0.5


class ScopeWriter(A.Context):
    """Writes one instance: declarations for its children and weights, its forward body."""

    def __init__(self, writer: ProgramWriter, inst: Instance):
        self.w = writer
        self.g = writer.graph
        self.inst = inst
        self.call = inst.call
        self.env: dict[Node, Tokens] = {}
        self.depth: dict[Node, int] = {}
        self.declared: dict[str, Tokens] = {}
        self.lists: dict[str, dict[int, Tokens]] = {}
        self.temps = 0

    @staticmethod
    def input_names(writer: ProgramWriter, inst: Instance) -> list[str]:
        if not inst.call.path:
            return [identifier(n.name) for n in inst.inputs]
        return ["x" if i == 0 else f"x{i + 1}" for i in range(len(inst.inputs))]

    # the Context interface
    def arg(self, node: Node, index: Any, name: str) -> Tokens:
        a = node.args[index[0]][index[1]] if isinstance(index, tuple) else node.args[index]
        return self.ref(a)

    def rank(self, node: Node) -> int:
        return self.g.values[node].dim()

    def shape(self, node: Node) -> list[Any]:
        meta = node.meta.get("val")
        return list(meta.shape) if meta is not None else list(self.g.values[node].shape)

    def extra_padding(self, node: Node) -> tuple[int, int]:
        return self.w.pads.get(node, (0, 0))

    def is_symbolic(self, value: Any) -> bool:
        return not isinstance(value, int)

    # references
    def ref(self, node: Any) -> Tokens:
        node = self.w.canonical(node)
        if node in self.g.weights:
            return [self.weight(node)]
        if node in self.env:
            return self.env[node]
        if node in self.g.folded:
            return self.constant(node)
        raise TdslError(f"internal: module '{self.call.path}' reads '{node.name}' before it is written")

    def weight(self, node: Node) -> str:
        key = self.g.weights[node]
        prefix = self.call.path + "." if self.call.path else ""
        if not key.startswith(prefix) or "." in key[len(prefix):]:
            raise TdslError(f"module '{self.call.path or '(top level)'}' reads '{key}', which belongs to another "
                            "module; an imported module may read only its own parameters and buffers")
        local = identifier(key[len(prefix):])
        if local not in self.declared:
            value = self.g.state[key]
            decl: Tokens = ["@buffer "] if key in self.g.buffers else []
            decl += [f"let {local}: ", tensor_type(value, None)[:-1]]
            for d in value.shape:
                decl += [", ", Hole(int(d), "dim")]
            decl += ["] = zeros()"]
            self.declared[local] = decl
            self.inst.decls.append(decl)
            self.w.weights[dsl_path(key)] = key
        return local

    def constant(self, node: Node) -> Tokens:
        """A value computed from buffers alone: position ids 0..T-1 of an input of ids are
        `positions(ids)`; anything else is stored as a buffer of this module, named after the node."""
        while str(node.target) in ("aten.expand.default",) and hasattr(node.args[0], "op"):
            node = node.args[0]
        import torch

        value = self.g.values[node]
        if not isinstance(value, torch.Tensor):
            raise TdslError(f"internal: '{node.name}' is not a tensor")
        positions = self._positions_of(value)
        if positions is not None:
            return positions
        name = self._constant_name(node)
        if name not in self.declared:
            decl: Tokens = ["@buffer ", f"let {name}: ", tensor_type(value, None)[:-1]]
            for d in value.shape:
                decl += [", ", Hole(int(d), "dim")]
            decl += ["] = zeros()"]
            self.declared[name] = decl
            self.inst.decls.append(decl)
            key = f"{dsl_path(self.call.path)}.{name}" if self.call.path else name
            self.w.constants[key] = value.detach().clone()
        return [name]

    def _constant_name(self, node: Node) -> str:
        """After the buffer it was computed from (`token_type_ids`), else the graph node."""
        todo, seen = [node], set()
        while todo:
            n = todo.pop(0)
            if n in self.g.weights:
                name = identifier(self.g.weights[n].rpartition(".")[2])
                return name if name not in self.declared and self.g.weights[n] not in self.w.weights.values() \
                    else identifier(node.name)
            if n not in seen:
                seen.add(n)
                todo += list(n.all_input_nodes)
        return identifier(node.name)

    def _positions_of(self, value: Any) -> Tokens | None:
        """`positions(ids)` when `value` is 0..T-1 ([T] or [1, T]) and this module takes ids [N, T]."""
        import torch

        if value.is_floating_point() or value.dim() not in (1, 2) or (value.dim() == 2 and value.shape[0] != 1):
            return None
        count = value.shape[-1]
        if not torch.equal(value.reshape(-1), torch.arange(count, dtype=value.dtype)):
            return None
        names = self.input_names(self.w, self.inst)
        for node, name in zip(self.inst.inputs, names):
            example = self.g.values.get(node)
            if isinstance(example, torch.Tensor) and not example.is_floating_point() and example.dim() == 2 \
                    and example.shape[-1] == count:
                return A.call("positions", [name])
        return None

    def child_slot(self, child: Call) -> tuple[str, Tokens]:
        """(how forward calls the child, its name) and declares it."""
        rel = self.call.child_name(child)
        parts = rel.split(".")
        if len(parts) == 1:
            return identifier(parts[0]), []
        if len(parts) == 2 and parts[1].isdigit():
            return f"{identifier(parts[0])}[{parts[1]}]", []
        raise TdslError(f"module '{child.path}' sits under '{self.call.path or '(top level)'}' as '{rel}': tdsl names "
                        "sub-modules by one name or a list index (ModuleDict and deeper containers are not supported)")

    # writing
    def write(self) -> None:
        members = set(self.call.nodes)
        live_children = []
        for child in self.call.children:
            child_inst = None
            if any(n in self.w.live for n in child.nodes):
                child_inst = self._child(child)
            live_children.append((child, child_inst))
        names = self.input_names(self.w, self.inst)
        for node, name in zip(self.inst.inputs, names):
            self.env[node] = [name]
            self.depth[node] = 0
        uses = self._uses(live_children)
        items: list[tuple[int, Any]] = []
        for node in self.call.nodes:
            if self.w.graph.calls.get(node) is self.call and node in self.w.live and node not in self.w.identity \
                    and node not in self.g.folded:
                items.append((self.w.index[node], node))
        for child, child_inst in live_children:
            if child_inst is not None and child_inst.output is not None and child_inst not in ("seq",):
                items.append((self.w.index[child_inst.output], (child, child_inst)))
        items.sort(key=lambda t: t[0])
        chains = self._chains(live_children, uses)
        for _, item in items:
            if isinstance(item, tuple):
                child, child_inst = item
                slot, _ = self.child_slot(child)
                name = slot.partition("[")[0]
                if name in chains:
                    first, last = chains[name]
                    if child_inst is not last:
                        continue
                    slot, child_inst = name, first
                expr = A.call(slot, *[self.ref(a) for a in child_inst.inputs])
                child_inst = item[1]
                self._bind(child_inst.output, expr, uses, 1 + max([self.depth.get(self.w.canonical(a), 0)
                                                                   for a in child_inst.inputs] or [0]))
            else:
                node = item
                row = A.ROWS.get(str(node.target))
                if node.target is A.GETITEM:
                    src = node.args[0]
                    if node.args[1] != 0:
                        raise A.unsupported(node, self.call.path, f"output {node.args[1]} of {src.target}")
                    self.env[node] = self.ref(src)
                    self.depth[node] = self.depth.get(src, 0)
                    continue
                if row is None:
                    raise A.unsupported(node, self.w.module_of(node))
                if str(node.target) == "aten.scaled_dot_product_attention.default":
                    expr = self._attention(node)
                else:
                    try:
                        expr = row(node, self)
                    except A.Unsupported as e:
                        raise A.unsupported(node, self.w.module_of(node), str(e)) from None
                depth = 1 + max([self.depth.get(a, 0) for a in self.w.args_of(node)] or [0])
                self._bind(node, expr, uses, depth)
        for name, slots in self.lists.items():
            count = max(slots) + 1
            items_tokens: Tokens = [f"let {name} = ["]
            for i in range(count):
                items_tokens += ([", "] if i else []) + slots.get(i, ["Identity()"])
            at = self.inst.decls.index([f"\0list {name}"])
            self.inst.decls[at] = items_tokens + ["]"]
        self.inst.body.append(["return "] + A.bare(self.ref(self.inst.output)))
        del members

    def _child(self, child: Call) -> Instance | None:
        child_inst = self.w.instance(child) if child.type != SEQUENTIAL else None
        if child.type == SEQUENTIAL:
            child_inst = self._sequential(child)
        if child_inst is None:
            return None
        slot, _ = self.child_slot(child)
        ctor = self.w.prelude(child, child_inst.inputs) if child.type != SEQUENTIAL else None
        if ctor is None and child.type != SEQUENTIAL:
            self.inst.children.append(child_inst)
            ctor = [ChildRef(child_inst)]
            child_inst.decls = child_inst.decls
        elif ctor is not None:
            child_inst.decls, child_inst.body = [], []
        if child.type == SEQUENTIAL:
            ctor = child_inst.decls.pop()  # _sequential leaves its constructor there
        self._declare(slot, ctor)
        return child_inst

    def _chains(self, live: list[tuple[Call, Instance | None]], uses: dict[Node, int]) -> dict[str, tuple[Instance,
                                                                                                          Instance]]:
        """Lists of children that run one after another (`layers(x)` for `layers[1](layers[0](x))`):
        each takes the previous one's output, used nowhere else."""
        lists: dict[str, dict[int, Instance | None]] = {}
        for child, inst in live:
            slot, _ = self.child_slot(child)
            if "[" in slot:
                name, index = slot[:-1].split("[")
                lists.setdefault(name, {})[int(index)] = inst
        out = {}
        for name, members in lists.items():
            ordered = [members.get(i) for i in range(max(members) + 1)]
            if len(ordered) < 2 or any(m is None or len(m.inputs) != 1 for m in ordered):
                continue
            if all(ordered[i].inputs[0] is ordered[i - 1].output and uses.get(ordered[i - 1].output, 0) == 1
                   for i in range(1, len(ordered))):
                out[name] = (ordered[0], ordered[-1])
        return out

    def _declare(self, slot: str, ctor: Tokens) -> None:
        if slot in self.declared:  # a module called more than once is declared once
            return
        self.declared[slot] = ctor
        if "[" in slot:
            name, index = slot[:-1].split("[")
            if name not in self.lists:
                self.inst.decls.append([f"\0list {name}"])  # filled in where the list's first member was
            self.lists.setdefault(name, {})[int(index)] = ctor
            return
        self.inst.decls.append([f"let {slot} = "] + ctor)

    def _sequential(self, seq: Call) -> Instance | None:
        """A torch Sequential whose children run one after another: `Sequential(a, b, ...)`."""
        inputs, outputs = self.w._io(seq)
        if not outputs:
            return None
        if len(outputs) > 1 or len(inputs) != 1:
            raise TdslError(f"Sequential '{seq.path}' does not run its children in a chain")
        inst = Instance(seq, "Sequential", inputs=inputs, output=outputs[0])
        slots: dict[int, Tokens] = {}
        current = inputs[0]
        for child in seq.children:
            rel = seq.child_name(child)
            if not rel.isdigit():
                raise TdslError(f"Sequential '{seq.path}' has a child '{rel}' that is not numbered")
            if not any(n in self.w.live and n not in self.w.identity for n in child.nodes):
                p = self.w.prelude(child, [current])
                slots[int(rel)] = p if p is not None else ["Identity()"]
                continue
            sub = self.w.instance(child)
            if sub is None or sub.inputs != [current]:
                raise TdslError(f"Sequential '{seq.path}': child '{rel}' does not take the previous child's output")
            ctor = self.w.prelude(child, sub.inputs)
            if ctor is None:
                self.inst.children.append(sub)
                ctor = [ChildRef(sub)]
            slots[int(rel)] = ctor
            current = sub.output
        if current != outputs[0]:
            raise TdslError(f"Sequential '{seq.path}' returns something other than its last child's output")
        total = max(slots) + 1 if slots else 0
        ctor: Tokens = ["Sequential("]
        for i in range(total):
            ctor += ([", "] if i else []) + slots.get(i, ["Identity()"])
        inst.decls = [ctor + [")"]]
        return inst

    def _uses(self, live_children: list[tuple[Call, Instance | None]]) -> dict[Node, int]:
        uses: dict[Node, int] = {}
        hidden: set[Node] = set()
        for child, child_inst in live_children:
            hidden.update(child.nodes)
            if child_inst is not None:
                for a in child_inst.inputs:
                    a = self.w.canonical(a)
                    uses[a] = uses.get(a, 0) + 1
        for node in self.call.nodes:
            if node in hidden or node not in self.w.live or node in self.w.identity or node in self.g.folded:
                continue
            for a in self.w.args_of(node):
                uses[a] = uses.get(a, 0) + 1
        out = self.w.canonical(self.inst.output)
        uses[out] = uses.get(out, 0) + 1
        return uses

    def _bind(self, node: Node, expr: Tokens, uses: dict[Node, int], depth: int) -> None:
        if uses.get(node, 0) <= 1 and depth < MAX_INLINE_DEPTH and node is not self.w.canonical(self.inst.output):
            self.env[node] = expr
            self.depth[node] = depth
            return
        if node is self.w.canonical(self.inst.output) and uses.get(node, 0) <= 1:
            self.env[node] = expr
            return
        self.temps += 1
        name = "h" if self.temps == 1 else f"h{self.temps}"
        self.inst.body.append([f"let {name} = "] + A.bare(expr))
        self.env[node] = [name]
        self.depth[node] = 0

    def _attention(self, node: Node) -> Tokens:
        if node not in self.w.attention:
            raise A.unsupported(node, self.w.module_of(node), "attention with a mask that depends on the input, or on "
                                "tensors that are not [N, heads, T, head_dim] views of [N, T, heads * head_dim] "
                                "projections,")
        packed, heads, causal = self.w.attention[node]
        head_dim = self.g.values[node].shape[-1]
        scale = node.kwargs.get("scale")
        if scale is not None and abs(float(scale) * head_dim ** 0.5 - 1) > 1e-6:
            raise A.unsupported(node, self.w.module_of(node), f"scale {scale} (1/sqrt(head_dim) only)")
        return A.call("attention", *[self.ref(p) for p in packed], A.lit(heads, "heads"),
                      causal=A.lit(causal, "causal"))


def _neutral(value: Any) -> bool:
    """An attention mask that changes nothing: all true, or all zero added."""
    import torch

    if not isinstance(value, torch.Tensor):
        return False
    if value.dtype == torch.bool:
        return bool(value.all())
    return bool((value == 0).all())
