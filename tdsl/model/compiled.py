"""`compile(...)` and the `CompiledModel` it returns (`tdsl.compile`, `tdsl.api`).

A compiled model keeps the IR after every pass (so a user can read what each pass did)
and produces backends on demand; torch is imported only when the torch backend is asked
for.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from io import StringIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xdsl.dialects.builtin import ModuleOp, UnitAttr
from xdsl.printer import Printer

from tdsl.dialects.storage import Program
from tdsl.errors import TdslError, did_you_mean

if TYPE_CHECKING:
    import torch


def print_ir(module: ModuleOp, generic: bool = False, debuginfo: bool = False) -> str:
    """The module as MLIR text (custom or generic form, optionally with locations)."""
    out = StringIO()
    Printer(stream=out, print_generic_format=generic, print_debuginfo=debuginfo).print_op(module)
    return out.getvalue() + "\n"


def resolve_source(source_or_path: str | Path) -> tuple[str, str]:
    """(text, file name) for a zoo model name, a `.tdsl`/`.tri` path, or DSL text."""
    from tdsl.models import is_zoo_name, zoo_path

    if not isinstance(source_or_path, str | Path):
        raise TdslError(f"expected DSL text, a .tdsl/.tri path or a zoo model name, got a "
                        f"{type(source_or_path).__name__} (a torch module's weights go in weights=...)")
    s = str(source_or_path)
    if isinstance(source_or_path, str) and not s.strip():
        return s, "<input>"  # an empty program (Path("") would name the working directory)
    if isinstance(source_or_path, Path) or (("\n" not in s) and s.endswith((".tdsl", ".tri"))):
        path = Path(s)
        if _kind(s) != "file":
            raise TdslError(f"no such file: {s}")
        return _read_source(path), str(path)
    if "\n" not in s and is_zoo_name(s):
        path = zoo_path(s)
        return _read_source(path), str(path)
    if "\n" not in s and s.isidentifier():
        zoo_path(s)  # raises a TdslError naming the zoo models
    if "\n" not in s and not any(c.isspace() for c in s) and ("/" in s or "\\" in s or _kind(s)):
        what = {"dir": "a folder", None: "no such file"}.get(_kind(s), "not a .tdsl/.tri file")
        raise TdslError(f"{s}: {what}; give a zoo model name, a .tdsl or .tri file, or DSL text")
    return s, "<input>"


def _kind(s: str) -> str | None:
    """"file", "dir", "other" or None for what the path `s` names (a name too long for the file
    system, or one holding NUL, names nothing rather than raising)."""
    try:
        path = Path(s)
        return "file" if path.is_file() else "dir" if path.is_dir() else "other" if path.exists() else None
    except (OSError, ValueError):
        return None


def _read_source(path: Path) -> str:
    """A source file's text; one too large to be a program is refused before it is read."""
    from tdsl.errors import SourceLoc
    from tdsl.frontend.limits import MAX_SOURCE_CHARS, LimitError
    from tdsl.frontend.parser import decode_source

    size = path.stat().st_size
    if size > 4 * MAX_SOURCE_CHARS:  # a UTF-8 character is at most 4 bytes
        raise LimitError(f"the file has {size} bytes, more than a source may ({MAX_SOURCE_CHARS} "
                         "characters)", SourceLoc(str(path), 1, 1))
    return decode_source(path.read_bytes(), str(path))


class CompiledModel(Program):
    """A program compiled through a pass pipeline, with its IR after every pass."""

    def __init__(self, module: ModuleOp, stages: list[tuple[str, str]], filename: str,
                 entry: str, params: dict[str, Any], pipeline: str = ""):
        self.module = module
        self.pipeline = pipeline
        """The pass pipeline given to `compile` (freezing appends `pack` on its own)."""
        self.stages = stages
        self.filename = filename
        self.entry = entry
        self.params = params
        self.weights: Mapping[str, Any] | None = None
        """Weights keyed by frozen state-dict names, for `deploy` (`with_weights`)."""
        self._torch_source: str | None = None

    @property
    def passes(self) -> list[str]:
        """Names of the passes that ran, in order."""
        return [name for name, _ in self.stages[1:]]

    @property
    def ir(self) -> str:
        """The final IR, custom form."""
        return self.stages[-1][1]

    def ir_after(self, pass_name: str) -> str:
        """The IR right after `pass_name` ran ('irgen' gives the IR before any pass)."""
        for name, text in self.stages:
            if name == pass_name:
                return text
        names = [n for n, _ in self.stages]
        raise TdslError(f"no pass '{pass_name}' ran{did_you_mean(pass_name, names)}; "
                        f"stages: {', '.join(names)}")

    def generic_ir(self, debuginfo: bool = False) -> str:
        return print_ir(self.module, generic=True, debuginfo=debuginfo)

    @property
    def torch_source(self) -> str:
        """Python source of the nn.Module classes emitted from the final IR."""
        if self._torch_source is None:
            from tdsl.backends.torch.emit import emit_module

            self._torch_source = emit_module(self.module)
        return self._torch_source

    def to_torch(self) -> torch.nn.Module:
        """A fresh instance of the entry layer as a `torch.nn.Module`."""
        from tdsl.backends.torch.loader import instantiate

        return instantiate(self.module, self.torch_source)

    def freeze(self, trained_module: Any, *, format: str = "2bit", thresholds: dict[str, Any] | None = None):
        """The deployment form of a module trained from `to_torch()`: this program plus
        `pack{format}`, filled from the trained latent weights (a `FrozenModel`; see
        `tdsl.model.frozen`). `thresholds` gives Δ per ternary weight path."""
        from tdsl.model.frozen import freeze

        return freeze(self, trained_module, format=format, thresholds=thresholds)

    def with_weights(self, arrays: Mapping[str, Any]) -> CompiledModel:
        """This program carrying `arrays` (numpy arrays or tensors keyed by frozen state-dict
        names) as its weights, so that it can be deployed; `self` is unchanged."""
        if not isinstance(arrays, Mapping):
            raise TdslError(f"with_weights takes a mapping of names to arrays, got a {type(arrays).__name__}")
        other = copy.copy(self)
        other.weights = dict(arrays)
        return other

    def program_and_weights(self) -> tuple[ModuleOp, Mapping[str, Any]]:
        """(module, weights) for `deploy`; a program without weights cannot be deployed."""
        if self.weights is None:
            raise TdslError("this compiled program has no weights to deploy: give them with "
                            "`compiled.with_weights(state_dict).deploy()`, or deploy a FrozenModel "
                            "(tdsl.quantize, compiled.freeze) or a package (tdsl.load)")
        return self.module, self.weights

    def deploy(self, backend: str = "numba", *, device: str = "cpu", act_quant: str = "int8",
               path: str | None = None, profile: bool = False, calibrate: Any = None):
        """This program with its weights (`with_weights`) on a deployment backend; see `tdsl.deploy`."""
        from tdsl.model.deploy import deploy

        return deploy(self, backend, device=device, act_quant=act_quant, path=path, profile=profile,
                      calibrate=calibrate)


def compile(source_or_path: str | Path, *, entry: str | None = None,
            params: dict[str, Any] | None = None, pipeline: str | None = None,
            after_pass: Any = None) -> CompiledModel:
    """Parse, elaborate and run the pipeline; `after_pass(name, module)` sees each stage."""
    from tdsl.dialects.tdsl import entry_layer
    from tdsl.frontend.irgen import build_module
    from tdsl.passes.pipelines import DEFAULT_PIPELINE, parse_pipeline, run_passes

    text, filename = resolve_source(source_or_path)
    module = build_module(text, filename, entry=entry, params=params)
    _verify(module)
    stages = [("irgen", print_ir(module))]
    if after_pass is not None:
        after_pass("irgen", module)
    spec = DEFAULT_PIPELINE if pipeline is None else pipeline

    def record(name: str, module: ModuleOp) -> None:
        stages.append((name, print_ir(module)))
        if after_pass is not None:
            after_pass(name, module)

    if spec.strip():
        run_passes(module, parse_pipeline(spec).passes, record)
    layer = entry_layer(module)
    return CompiledModel(module, stages, filename, layer.layer.data, dict(params or {}), spec)


def _verify(module: ModuleOp) -> None:
    """Verify, turning a verifier failure into a located TdslError."""
    from tdsl.dialects.verify import verify_module

    verify_module(module)


def frozen_program(compiled: CompiledModel, format: str) -> CompiledModel:
    """A copy of `compiled` in frozen storage: marked `tdsl.frozen`, ternary weights packed in
    `format` (`frozen_passes`); its stages end with "pack" (or "freeze" when nothing was
    ternary). What `freeze`, `quantize` and a loaded package hold."""
    from tdsl.dialects.storage import FROZEN_ATTR
    from tdsl.passes.pipelines import frozen_passes, run_passes

    module = compiled.module.clone()
    stages = list(compiled.stages)
    module.attributes[FROZEN_ATTR] = UnitAttr()
    passes = frozen_passes(module, format)
    run_passes(module, passes)
    stages.append(("pack" if passes else "freeze", print_ir(module)))
    return CompiledModel(module, stages, compiled.filename, compiled.entry, dict(compiled.params),
                         compiled.pipeline)
