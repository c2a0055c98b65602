"""Import a PyTorch model (a `torch.export` program, or a module exported here) as a tdsl package.

    tdsl import model.pt2 -o out/model        # torch.export.save(torch.export.export(m, args), "model.pt2")
    pkg = tdsl.import_torch(model, (x,), "out/model")

The program is written by `program_writer` (one layer per module class, weights named by
their state-dict keys), compiled, filled with the model's fp32 weights and run on the example
inputs next to the exported graph: a difference above `TOLERANCE` (relative to the output's
largest magnitude) is an error and nothing is written. Then the package (fp32, like every
package; `tdsl quantize` / `tdsl export --precision ternary` make it ternary) is saved at
OUT and the program beside it as OUT.tdsl, which the user can edit and compile on its own.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tdsl.errors import TdslError

if TYPE_CHECKING:
    import torch

TOLERANCE = 1e-3
"""Largest |tdsl - torch| / max |torch| accepted on the example inputs."""


@dataclass
class Imported:
    """The program, its weights and how they compare with the torch model."""

    source: str
    weights: dict[str, Any]
    frozen: Any
    difference: float
    parameters: int
    torch_parameters: int
    not_stored: list[str]
    constants: list[str]


def _as_stored(value: torch.Tensor) -> torch.Tensor:
    """float32 for floating weights, int32 for integer ones: the dtypes tdsl declares."""
    import torch

    return value.detach().to(torch.float32 if value.is_floating_point() else torch.int32).contiguous()


def convert(program: Any, example_inputs: tuple[Any, ...], origin: str) -> Imported:
    """The tdsl program of an `ExportedProgram`, checked against it on `example_inputs`."""
    import torch

    from tdsl.model.precision import quantize
    from tdsl.importers.program_writer import ProgramWriter
    from tdsl.importers.torch_graph import read_graph

    graph = read_graph(program, example_inputs)
    writer = ProgramWriter(graph, origin)
    source = writer.write()
    weights = {key: _as_stored(graph.state[torch_key]) for key, torch_key in writer.weights.items()}
    weights.update({key: _as_stored(v) for key, v in writer.constants.items()})
    try:
        frozen = quantize(source, precision="fp32", weights=weights)
    except TdslError as e:
        raise TdslError(f"the program written for {origin} does not compile ({e}); please report this with the "
                        "model") from None
    expected = graph.values[graph.output]
    with torch.no_grad():
        got = frozen(*[x.to(torch.int32) if not x.is_floating_point() else x for x in example_inputs])
    got = got[0] if isinstance(got, (tuple, list)) else got
    if tuple(got.shape) != tuple(expected.shape):
        raise TdslError(f"the imported program returns shape {tuple(got.shape)}, torch {tuple(expected.shape)}")
    scale = float(expected.abs().max()) or 1.0
    difference = float((got.float() - expected.float()).abs().max()) / scale
    if not difference <= TOLERANCE:
        raise TdslError(f"the imported program differs from the torch model by {difference:.3g} (relative to the "
                        f"output's largest magnitude; at most {TOLERANCE} is accepted); nothing was written")
    params = {spec.target for spec in program.graph_signature.input_specs if spec.kind.name == "PARAMETER"}
    torch_parameters = sum(int(program.state_dict[k].numel()) for k in params)
    parameters = sum(int(weights[k].numel()) for k, torch_key in writer.weights.items() if torch_key in params)
    return Imported(source, weights, frozen, difference, parameters, torch_parameters, graph.unused,
                    sorted(writer.constants))


def _write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def program_path(output: str | os.PathLike[str]) -> Path:
    """Where the editable program goes: beside the package folder, as OUT.tdsl."""
    out = Path(output)
    return out.with_name(out.name + ".tdsl")


def save_import(imported: Imported, output: str | os.PathLike[str], *, overwrite: bool = False,
                name: str | None = None) -> Path:
    """Write the package at `output` and the program beside it."""
    from tdsl.package import save

    program = program_path(output)
    if program.exists() and not overwrite:
        raise TdslError(f"{program}: already exists; pass overwrite=True (--force) to replace it")
    dest = save(imported.frozen, output, source=imported.source, overwrite=overwrite, name=name)
    _write_text(program, imported.source)
    return dest


def import_torch(model: Any, example_inputs: Any, output: str | os.PathLike[str] | None = None, *,
                 overwrite: bool = False, name: str | None = None):
    """Import `model` (an `nn.Module`, exported here with a symbolic batch dim, or an
    `ExportedProgram`) run on `example_inputs` (a tensor or a tuple of them) as a package.

    Returns the loaded package (`tdsl.load`): its config holds the generated program, and
    `tdsl.quantize`, `tdsl.save` and `.deploy()` take it. The package is written at `output`
    (a fresh temporary folder when None) and the program beside it as `<output>.tdsl`."""
    import torch

    from tdsl.package import load
    from tdsl.importers.torch_graph import export_module

    inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if not all(isinstance(x, torch.Tensor) for x in inputs):
        raise TdslError("example_inputs must be tensors (a tensor or a tuple of tensors)")
    if isinstance(model, torch.export.ExportedProgram):
        program, origin = model, "an ExportedProgram"
    elif isinstance(model, torch.nn.Module):
        program, origin = export_module(model, inputs), f"a {type(model).__name__}"
    else:
        raise TdslError(f"import_torch takes an nn.Module or a torch.export ExportedProgram, got a "
                        f"{type(model).__name__}")
    imported = convert(program, inputs, origin)
    if output is None:
        output = Path(tempfile.mkdtemp(prefix="tdsl-import-")) / "model"
    save_import(imported, output, overwrite=overwrite, name=name)
    return load(output)


def _example_inputs(program: Any, source: str) -> tuple[Any, ...]:
    """The example inputs saved with the program (torch.export keeps them)."""
    saved = getattr(program, "example_inputs", None)
    if saved is not None:
        args, kwargs = saved
        if kwargs:
            raise TdslError(f"{source}: the program takes keyword inputs ({', '.join(kwargs)}); export it with "
                            "positional inputs only")
        return tuple(args)
    raise TdslError(f"{source}: the program holds no example inputs; save it with a torch that keeps them "
                    "(torch.export.save of torch.export.export(model, args))")


def import_pt2(source: str, output: str, *, overwrite: bool = False) -> str:
    """`tdsl import MODEL.pt2 -o OUT`: the package and OUT.tdsl; returns a one-paragraph summary."""
    import torch

    try:
        program = torch.export.load(source)
    except Exception as e:  # noqa: BLE001 - any failure to read is the file's fault, said with torch's words
        raise TdslError(f"{source}: not a torch.export program ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else 'unreadable'})") from None
    inputs = _example_inputs(program, source)
    imported = convert(program, inputs, Path(source).name)
    dest = save_import(imported, output, overwrite=overwrite, name=Path(source).stem)
    return summary(imported, source, dest)


def summary(imported: Imported, source: str, dest: Path) -> str:
    layers = imported.source.count("\nlayer ")
    renamed = [line for line in imported.source.splitlines() if line.startswith("# Renamed")]
    renames = f" ({renamed[0][2:].rstrip('.')})" if renamed else ""
    lines = imported.source.count("\n")
    text = (f"Imported {source}: a program of {layers} layers ({lines} lines) at {program_path(dest)} and an fp32 "
            f"package at {dest}; {imported.parameters:,} parameters ({imported.torch_parameters:,} in the torch "
            f"model), every weight under its state_dict key{renames}; largest difference from the torch model on the "
            f"example inputs {imported.difference:.2g} (relative).")
    if imported.not_stored:
        text += f" Not stored (forward never reads them): {', '.join(imported.not_stored[:6])}" + (
            " ..." if len(imported.not_stored) > 6 else "") + "."
    if imported.constants:
        text += f" Constants computed from buffers, stored as buffers: {', '.join(imported.constants)}."
    text += f" Next: tdsl export {program_path(dest)} --weights {dest}/model.safetensors --precision ternary " \
            "--format package -o OUT."
    return text
