"""Lowering a program for a backend, with the pipelines of `tdsl.passes.pipelines`.

Backends never run passes: they receive a module at their level from here. `kernel_level`
runs `inline` (when the entry calls sub-layers) then `fuse` on a copy, so one op is one
runtime kernel call (what the Numba plan and the ONNX export read). The frozen form of a
compiled program is `tdsl.model.compiled.frozen_program` (it builds a `CompiledModel`).
"""
from __future__ import annotations

from tdsl.passes.pipelines import kernel_level

__all__ = ["kernel_level"]
