"""The instance tree of a module: dotted instance paths and layer cloning, shared by passes.

A `tdsl.layer` is a specialisation that many instances may share. A pass that needs two
instances of one specialisation to differ (`shape-infer` for input types, `ternarize` and
`precision` for weight precisions) clones the layer under a fresh `Name_N` and retargets
the `tdsl.instance`.
"""
from __future__ import annotations

from xdsl.dialects.builtin import ModuleOp, StringAttr

from tdsl.dialects.tdsl import LayerOp, module_layers


def child_path(path: str, name: str) -> str:
    """The dotted path of instance `name` inside the instance at `path` ('' is the entry)."""
    return f"{path}.{name}" if path else name


def fresh_layer_name(module: ModuleOp, origin: str) -> str:
    """`origin_1`, `origin_2`, ...: the first that no layer of the module uses."""
    taken = module_layers(module)
    n = 1
    while f"{origin}_{n}" in taken:
        n += 1
    return f"{origin}_{n}"


def clone_layer(module: ModuleOp, layer: LayerOp, origin: str) -> LayerOp:
    """A copy of `layer` named `origin_N` (fresh), placed right after it."""
    copy = layer.clone()
    copy.sym_name = StringAttr(fresh_layer_name(module, origin))
    module.body.block.insert_op_after(copy, layer)
    return copy
