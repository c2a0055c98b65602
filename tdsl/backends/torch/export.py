"""Export an emitted (usually frozen) model to files other stacks load without tdsl.

- `.pt2` through `torch.export` (the primary format): the graph of the emitted module with
  a dynamic batch axis, saved and loaded with `torch.export.save` / `torch.export.load`.
- `.pt` TorchScript through `torch.jit.trace`, for deployment stacks that still need it.
  TorchScript is deprecated in torch 2.13 (torch warns on every `torch.jit.trace`); this
  export warns too (`FutureWarning`) and keeps working while torch ships TorchScript.

A frozen ternary model keeps its weights packed in both files: the uint8 `*_packed`
buffers are stored as they are and unpacked in the graph by tensor ops
(`tdsl.backends.torch.packing.unpack_tensor`: shifts, masks, compares), so a ternary
ResNet-18 `.pt2` is about 12x smaller than the fp32 one. Inputs follow the entry layer's
declared shapes and dtypes, with the batch (every dynamic leading dim) set to `batch`.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tdsl.dialects.storage import FrozenProgram, Program
from tdsl.errors import TdslError

_TORCH_DTYPES = {"float16": torch.float16, "float32": torch.float32, "float64": torch.float64,
                 "int8": torch.int8, "int32": torch.int32, "int64": torch.int64, "bool": torch.bool}

TORCHSCRIPT_DEPRECATION = ("TorchScript is deprecated in torch 2.13 and may be removed from a later torch; "
                           "prefer the torch.export format (.pt2, `tdsl export --format torch-export`)")


def module_and_program(model: Any, module: nn.Module | None = None) -> tuple[nn.Module, Program]:
    """(eval-mode nn.Module, its program) from a frozen program (a FrozenModel: its module; a
    loaded package: `to_torch()`) or a compiled program (`module`, else `to_torch()`), told
    apart by the interfaces they derive from (`tdsl.dialects.storage`): a backend imports
    neither `tdsl.model` nor `tdsl.package`."""
    if isinstance(model, FrozenProgram):
        return model.to_torch().eval(), model.compiled
    if isinstance(model, Program):
        return (module if module is not None else model.to_torch()).eval(), model
    raise TdslError(f"export: expected a FrozenModel, a loaded package or a CompiledModel, got {type(model).__name__}")


def example_inputs(compiled: Any, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs of the entry layer's declared shapes (a `dynamic(example)` dim at its
    example) and dtypes, other dynamic dims = `batch`."""
    from tdsl.dialects.layout import example_shapes, io_spec

    gen = torch.Generator().manual_seed(seed)
    out = []
    for spec, example in zip(io_spec(compiled.module)["inputs"], example_shapes(compiled.module)):
        if example is None:
            raise TdslError(f"export: the rank of input '{spec['name']}' is not known; give example inputs")
        shape = [batch if d is None else int(d) for d in example]
        dtype = _TORCH_DTYPES[str(spec["dtype"])]
        x = torch.randn(shape, generator=gen) if dtype.is_floating_point else torch.randint(-4, 5, shape, generator=gen)
        out.append(x.to(dtype))
    return tuple(out)


def _dynamic_shapes(compiled: Any) -> tuple[dict[int, Any] | None, ...]:
    from tdsl.dialects.layout import io_spec

    batch = torch.export.Dim("batch", min=1)
    return tuple({0: batch} if spec["shape"] and spec["shape"][0] is None else None
                 for spec in io_spec(compiled.module)["inputs"])


def export_program(model: Any, path: str | os.PathLike[str], *, module: nn.Module | None = None,
                   inputs: tuple[torch.Tensor, ...] | None = None, dynamic_batch: bool = True) -> Path:
    """Write the model as a `torch.export` program (`.pt2`) with a dynamic batch axis."""
    net, compiled = module_and_program(model, module)
    args = inputs if inputs is not None else example_inputs(compiled)
    dynamic = _dynamic_shapes(compiled) if dynamic_batch else None
    try:
        program = torch.export.export(net, args, dynamic_shapes=dynamic)
    except Exception as e:  # torch raises many kinds (UserError, GuardOnDataDependentSymNode, ...)
        raise TdslError(f"export: torch.export could not capture {compiled.entry}: {type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}") from e
    return _write(path, lambda tmp: torch.export.save(program, tmp))


def load_program(path: str | os.PathLike[str]) -> nn.Module:
    """The callable module of a `.pt2` written by `export_program`."""
    return torch.export.load(str(path)).module()


def export_torchscript(model: Any, path: str | os.PathLike[str], *, module: nn.Module | None = None,
                       inputs: tuple[torch.Tensor, ...] | None = None) -> Path:
    """Write the model as TorchScript (`.pt`, traced). Deprecated with TorchScript itself."""
    warnings.warn(TORCHSCRIPT_DEPRECATION, FutureWarning, stacklevel=2)
    net, compiled = module_and_program(model, module)
    args = inputs if inputs is not None else example_inputs(compiled)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace.*deprecated", category=Warning)
        # int8 activation scales branch on `x.numel()`: the trace keeps the non-empty branch.
        warnings.filterwarnings("ignore", message="Converting a tensor to a Python boolean",
                                category=torch.jit.TracerWarning)
        with torch.no_grad():
            traced = torch.jit.trace(net, args, check_trace=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.save.*deprecated", category=Warning)
        return _write(path, lambda tmp: torch.jit.save(traced, tmp))


def load_torchscript(path: str | os.PathLike[str]) -> nn.Module:
    """The module of a `.pt` written by `export_torchscript`."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=Warning)
        return torch.jit.load(str(path))


def _write(path: str | os.PathLike[str], writer: Any) -> Path:
    """Write through a temporary file beside `path`, renamed into place on success."""
    from tdsl.support.files import write_with

    return write_with(path, writer)
