"""Every pipeline tdsl runs, and the one loop that runs them.

- `DEFAULT_PIPELINE`: what `tdsl.compile` runs when no pipeline is given;
- `pipeline_for`: the QAT program's pipeline for a precision, policy and override
  (`tdsl.quantize`, `tdsl.qat`, the training recipes);
- `frozen_passes`: the deployment form, `pack{format}` when some weight is still ternary;
- `kernel_passes`: `inline` (when the entry calls sub-layers) then `fuse`, so one op is one
  runtime kernel call (docs/KERNEL_IR.md; what the Numba plan and the ONNX export read).

`run_passes` applies a list of passes and verifies after each, so a failure is a `TdslError`
at the op's DSL location; nothing else in tdsl calls `ModulePass.apply`.
"""
from __future__ import annotations

import re
from collections.abc import Callable

from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass, PassPipeline
from xdsl.utils.exceptions import ArgSpecParseError

from tdsl.dialects import tdsl as t
from tdsl.dialects import tern
from tdsl.dialects.context import make_context
from tdsl.dialects.verify import verify_module
from tdsl.errors import PassError, TdslError, did_you_mean
from tdsl.passes import PASSES

DEFAULT_PIPELINE = "shape-infer,canonicalize"

PRECISIONS = ("fp32", "fp16", "int8", "ternary", "mixed")
POLICIES = ("default", "all", "none", "b158")
THRESHOLDS = ("twn", "absmean", "fixed=<delta>", "sparsity=<fraction>")

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


def run_passes(module: ModuleOp, passes: list[ModulePass] | tuple[ModulePass, ...],
               after_pass: Callable[[str, ModuleOp], None] | None = None) -> None:
    """Apply `passes` in order to `module` in place, verifying after each; `after_pass(name,
    module)` sees the module after every pass."""
    ctx = make_context()
    for p in passes:
        p.apply(ctx, module)
        verify_module(module)
        if after_pass is not None:
            after_pass(p.name, module)


def has_ternary_weights(module: ModuleOp) -> bool:
    """Whether some forward still quantizes a weight to trits (`ternarize` ran, `pack` not yet)."""
    return any(isinstance(op, tern.QuantizeOp) for layer in t.module_layers(module).values()
               for op in layer.forward.body.block.ops)


def frozen_passes(module: ModuleOp, format: str) -> list[ModulePass]:
    """The passes from a compiled program to its frozen storage: `pack{format}` when a weight is
    still ternary, none otherwise (the format is checked either way)."""
    from tdsl.passes.pack import PackPass
    from tdsl.runtime.packing import check_format

    if has_ternary_weights(module):
        return [PackPass(format=format)]
    check_format(format)
    return []


def kernel_passes(module: ModuleOp) -> list[ModulePass]:
    """The passes from a program to its kernel level: `inline` when the entry calls sub-layers,
    then `fuse`. Both leave an already lowered module unchanged."""
    from tdsl.passes.fuse import FusePass
    from tdsl.passes.inline import InlinePass

    passes: list[ModulePass] = [FusePass()]
    if any(isinstance(op, t.CallOp) for op in t.entry_layer(module).forward.body.block.ops):
        passes.insert(0, InlinePass())
    return passes


def kernel_level(module: ModuleOp) -> ModuleOp:
    """A copy of `module` lowered to the kernel level (`kernel_passes`)."""
    module = module.clone()
    run_passes(module, kernel_passes(module))
    return module


def _check(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise TdslError(f"{name} must be one of {', '.join(choices)}, got '{value}'")


def _quote(text: str) -> str:
    if '"' in text:
        raise TdslError(f"override must not contain a double quote: {text!r}")
    return f'"{text}"'


def threshold_options(threshold: str) -> str:
    """`twn` / `absmean` / `fixed=0.05` / `sparsity=0.5` -> ternarize pass options."""
    method, _, value = threshold.partition("=")
    method = method.strip()
    if method in ("twn", "absmean") and not value:
        return f"threshold={method}"
    if method in ("fixed", "sparsity"):
        try:
            number = float(value)
        except ValueError:
            raise TdslError(f"threshold '{method}' needs a number, e.g. '{method}=0.5', got {threshold!r}") from None
        return f"threshold={method} {'delta' if method == 'fixed' else 'sparsity'}={number!r}"
    raise TdslError(f"unknown threshold {threshold!r}; valid ones are {', '.join(THRESHOLDS)}")


def expand_override(override: str) -> str:
    """Overrides match weight paths (`layer1.0.conv1.weight`); a layer path selects its
    weights too: `conv1=fp16` becomes `conv1=fp16 conv1.*=fp16` (first match still wins)."""
    out = []
    for entry in override.split():
        glob, sep, prec = entry.rpartition("=")
        out.append(entry)
        if sep and glob and not glob.endswith("*"):
            out.append(f"{glob}.*={prec}")
    return " ".join(out)


def pipeline_for(precision: str = "ternary", *, policy: str = "default", override: str = "",
                 threshold: str = "twn", per_channel: bool = True) -> str:
    """The pass pipeline that gives the QAT program for these choices (docs/TERNARY.md)."""
    _check("precision", precision, PRECISIONS)
    _check("policy", policy, POLICIES)
    override = expand_override(override)
    wants_ternary = precision in ("ternary", "mixed") or any(
        e.rpartition("=")[2] == "ternary" for e in override.split())
    if not wants_ternary:
        opts = f"default={precision}" + (f" override={_quote(override)}" if override else "")
        return f"shape-infer,precision{{{opts}}}"
    opts = [threshold_options(threshold), f"per-channel={'true' if per_channel else 'false'}"]
    if precision == "mixed":
        opts += ["policy=default", "keep=int8"]
    elif precision == "ternary" and policy == "b158":  # the recipe fixes the threshold rule
        opts = ["policy=b158"]
    elif precision == "ternary":
        opts.append(f"policy={policy}")
    else:
        # A float precision for everything, ternary where an override says so.
        opts += ["policy=none"]
        override = (override + f" *={precision}").strip()
    if override:
        opts.append(f"override={_quote(override)}")
    return f"shape-infer,ternarize{{{' '.join(opts)}}}"
