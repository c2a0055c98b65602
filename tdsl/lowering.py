"""Lowering a compiled program for a backend, with the pipelines of `tdsl.passes.pipelines`.

Backends never run passes: they receive a module at their level from here.
- `frozen_program`: the deployment form of a compiled program (`frozen_passes`: `pack{format}`
  when it has ternary weights; what `freeze`, `quantize` and a loaded package hold);
- `kernel_level`: `inline` (when the entry calls sub-layers) then `fuse`, on a copy, so
  one op is one runtime kernel call (what the Numba plan and the ONNX export read).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from xdsl.dialects.builtin import UnitAttr

from tdsl.dialects.storage import FROZEN_ATTR
from tdsl.passes.pipelines import frozen_passes, kernel_level, run_passes

if TYPE_CHECKING:
    from tdsl.api import CompiledModel

__all__ = ["frozen_program", "kernel_level"]


def frozen_program(compiled: CompiledModel, format: str) -> CompiledModel:
    """A copy of `compiled` in frozen storage: marked `tdsl.frozen`, ternary weights packed in
    `format`; its stages end with "pack" (or "freeze" when nothing was ternary)."""
    from tdsl.api import CompiledModel, print_ir

    module = compiled.module.clone()
    stages = list(compiled.stages)
    module.attributes[FROZEN_ATTR] = UnitAttr()
    passes = frozen_passes(module, format)
    run_passes(module, passes)
    stages.append(("pack" if passes else "freeze", print_ir(module)))
    return CompiledModel(module, stages, compiled.filename, compiled.entry, dict(compiled.params),
                         compiled.pipeline)
