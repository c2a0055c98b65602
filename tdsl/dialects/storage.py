"""How the IR's parameters map to parameter-store keys: one definition for every stage.

The store (a state dict, or a package's safetensors) is keyed by the IR's param paths
(`layer1.0.conv1.weight`), with these conventions for frozen storage (docs/KERNEL_IR.md,
docs/TERNARY.md): `tern.packed_param @weight` is the uint8 array `weight_packed`; a ternary
weight's scale is the param `weight_scale` (`pack` declares it); a frozen int8 weight
`weight` keeps its per-channel scales in `weight_scale` too.
"""
from __future__ import annotations

from xdsl.dialects.builtin import ModuleOp

from tdsl.dialects import tern
from tdsl.dialects.tdsl import module_layers

FROZEN_ATTR = "tdsl.frozen"
"""A module attribute (unit) that asks for frozen storage even without packed weights."""

EXAMPLE_SHAPE = "tdsl.example_shape"
"""A forward's attribute: per input, the example size of each dim (-1: none), for the dims
declared `dynamic(example)` (any size taken, the example used for example inputs)."""

PACKED_SUFFIX = "_packed"
"""Store key suffix of a packed weight: the IR keeps the latent weight's name."""

SCALE_SUFFIX = "_scale"
"""Store key suffix of a weight's scale: ternary (a param of the IR) or frozen int8 (per channel)."""


def is_frozen(module: ModuleOp) -> bool:
    """Whether `module` describes frozen storage: marked so, or holding a packed weight."""
    if FROZEN_ATTR in module.attributes:
        return True
    return any(isinstance(op, tern.PackedParamOp) for layer in module_layers(module).values()
               for op in layer.body.block.ops)
