"""Pass registry: every pass is an xDSL ModulePass registered here by its flag name (the
pipelines built from them, and the loop that runs them, are `tdsl.passes.pipelines`)."""
from __future__ import annotations

from collections.abc import Callable

from xdsl.passes import ModulePass


def _shape_infer() -> type[ModulePass]:
    from tdsl.passes.shape_infer import ShapeInferPass

    return ShapeInferPass


def _canonicalize() -> type[ModulePass]:
    from tdsl.passes.canonicalize import CanonicalizePass

    return CanonicalizePass


def _ternarize() -> type[ModulePass]:
    from tdsl.passes.ternarize import TernarizePass

    return TernarizePass


def _precision() -> type[ModulePass]:
    from tdsl.passes.precision import PrecisionPass

    return PrecisionPass


def _pack() -> type[ModulePass]:
    from tdsl.passes.pack import PackPass

    return PackPass


def _inline() -> type[ModulePass]:
    from tdsl.passes.inline import InlinePass

    return InlinePass


def _fuse() -> type[ModulePass]:
    from tdsl.passes.fuse import FusePass

    return FusePass


PASSES: dict[str, Callable[[], type[ModulePass]]] = {
    "shape-infer": _shape_infer,
    "canonicalize": _canonicalize,
    "ternarize": _ternarize,
    "precision": _precision,
    "pack": _pack,
    "inline": _inline,
    "fuse": _fuse,
}
