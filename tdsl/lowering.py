"""The one owner of lowering: from a compiled program to the level each backend reads.

Backends never run passes: they receive a module at their level from here.
- `frozen_program`: the deployment form of a compiled program, `pack{format}` applied when
  it has ternary weights (what `freeze`, `quantize` and a loaded package hold);
- `kernel_level`: `inline` (when the entry calls sub-layers) then `fuse`, on a copy, so
  one op is one runtime kernel call (what the Numba plan and the ONNX export read).
Every pass is followed by verification; a failure is a `TdslError` at the op's DSL location.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from xdsl.dialects.builtin import ModuleOp, UnitAttr
from xdsl.passes import ModulePass

from tdsl.dialects import tdsl as t
from tdsl.dialects import tern
from tdsl.dialects.context import make_context
from tdsl.dialects.storage import FROZEN_ATTR
from tdsl.dialects.verify import verify_module

if TYPE_CHECKING:
    from tdsl.api import CompiledModel


def run_passes(module: ModuleOp, passes: list[ModulePass]) -> None:
    """Apply `passes` in order to `module` in place, verifying after each."""
    ctx = make_context()
    for p in passes:
        p.apply(ctx, module)
        verify_module(module)


def has_ternary_weights(module: ModuleOp) -> bool:
    """Whether some forward still quantizes a weight to trits (`ternarize` ran, `pack` not yet)."""
    return any(isinstance(op, tern.QuantizeOp) for layer in t.module_layers(module).values()
               for op in layer.forward.body.block.ops)


def frozen_program(compiled: CompiledModel, format: str) -> CompiledModel:
    """A copy of `compiled` in frozen storage: marked `tdsl.frozen`, ternary weights packed in
    `format`; its stages end with "pack" (or "freeze" when nothing was ternary)."""
    from tdsl.api import CompiledModel, print_ir
    from tdsl.passes.pack import PackPass
    from tdsl.runtime.packing import check_format

    module = compiled.module.clone()
    stages = list(compiled.stages)
    module.attributes[FROZEN_ATTR] = UnitAttr()
    if has_ternary_weights(module):
        run_passes(module, [PackPass(format=format)])
        stages.append(("pack", print_ir(module)))
    else:
        check_format(format)
        stages.append(("freeze", print_ir(module)))
    return CompiledModel(module, stages, compiled.filename, compiled.entry, dict(compiled.params),
                         compiled.pipeline)


def kernel_level(module: ModuleOp) -> ModuleOp:
    """A copy of `module` lowered to the kernel level (docs/KERNEL_IR.md): `inline` when the
    entry calls sub-layers, then `fuse`. Both leave an already lowered module unchanged."""
    from tdsl.passes.fuse import FusePass
    from tdsl.passes.inline import InlinePass

    module = module.clone()
    passes: list[ModulePass] = [FusePass()]
    if any(isinstance(op, t.CallOp) for op in t.entry_layer(module).forward.body.block.ops):
        passes.insert(0, InlinePass())
    run_passes(module, passes)
    return module
