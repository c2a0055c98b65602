"""Pass registry: every pass is an xDSL ModulePass registered here by its flag name."""
from __future__ import annotations

import re
from collections.abc import Callable

from xdsl.passes import ModulePass, PassPipeline
from xdsl.utils.exceptions import ArgSpecParseError

from tdsl.errors import PassError, did_you_mean


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

DEFAULT_PIPELINE = "shape-infer,canonicalize"

PipelineCallback = Callable[[ModulePass | None, object, ModulePass | None], None]


def parse_pipeline(spec: str, callback: PipelineCallback | None = None) -> PassPipeline:
    """Parse `name{opt=val ...},name2` into a pipeline; a bad spec raises `PassError`."""
    try:
        return PassPipeline.parse_spec(PASSES, spec, callback)  # type: ignore[arg-type]
    except ValueError as e:
        hint = ""
        if str(e).startswith("Unrecognized passes"):
            names = re.findall(r"(?:^|,)\s*([A-Za-z0-9_-]+)", re.sub(r"\{[^}]*\}", "", spec))
            guesses = "".join(did_you_mean(n, list(PASSES)) for n in names if n not in PASSES)
            hint = f"{guesses} (available: {', '.join(PASSES)})"
        message = re.sub(r'"(\w+)"', lambda m: '"' + m.group(1).replace("_", "-") + '"', str(e))
        raise PassError(f"invalid pass pipeline '{spec}': {message}{hint}") from None
    except ArgSpecParseError as e:  # derives from BaseException, not Exception
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        where = re.search(r"pass-pipeline:\d+:(\d+)", str(e))
        at = f" at column {where.group(1)}" if where else ""
        raise PassError(f"invalid pass pipeline '{spec}'{at}: {lines[-1] if lines else e}") from None
