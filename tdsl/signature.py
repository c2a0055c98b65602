"""Runtime inputs checked against the entry `forward`'s declared signature, on every backend.

Without this check a wrong input reaches a kernel and fails there (a torch `RuntimeError`
about `mat1 and mat2`, a Numba index error) or, worse, runs on garbage. Each backend calls
`check_inputs` once at its entry, with the `ForwardSignature` read from the IR, and gets an
`InputMismatch` that names the forward argument, where the DSL declares it, what it expects
and what it got.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from xdsl.dialects.builtin import ModuleOp, TensorType

from tdsl.errors import SourceLoc, TdslError, source_line

DYNAMIC = -(2**63)
_FLOAT_KINDS = frozenset("fiu")
"""A float input also takes integer arrays (uint8 images); bool, complex and objects are refused."""
_INT_KINDS = frozenset("iu")
_DSL_DTYPES = {"f32": "float32", "f16": "float16", "i8": "int8", "i32": "int32", "i2": "trit", "i64": "int64"}


class InputMismatch(TdslError):
    """An input that does not fit the entry forward's declared type (count, rank, shape, dtype)."""


@dataclass(frozen=True)
class InputSpec:
    """One declared forward argument: dims are None for an unranked one, a dim None if dynamic."""

    name: str
    element: str
    dims: tuple[int | None, ...] | None
    loc: SourceLoc | None

    def show(self) -> str:
        if self.dims is None:
            return f"a {self.element} tensor of any shape"
        return f"{self.element}[{', '.join('?' if d is None else str(d) for d in self.dims)}]"


@dataclass(frozen=True)
class ForwardSignature:
    """The entry layer's forward inputs, in order."""

    entry: str
    inputs: tuple[InputSpec, ...]
    loc: SourceLoc | None


def forward_signature(module: ModuleOp) -> ForwardSignature:
    """The signature of the module's entry forward (its types, argument names and location)."""
    from tdsl.dialects.locations import loc_of
    from tdsl.dialects.tdsl import entry_layer

    layer = entry_layer(module)
    fwd = layer.forward
    floc = loc_of(fwd)
    names = [n.data for n in fwd.arg_names.data] if fwd.arg_names is not None else []
    specs = []
    for i, ty in enumerate(fwd.function_type.inputs.data):
        name = names[i] if i < len(names) else f"#{i}"
        element = str(ty.get_element_type()) if hasattr(ty, "get_element_type") else "f32"
        element = _DSL_DTYPES.get(element, element)
        dims = None
        if isinstance(ty, TensorType):
            dims = tuple(None if d == DYNAMIC or d < 0 else int(d) for d in ty.get_shape())
        specs.append(InputSpec(name, element, dims, _arg_loc(floc, name)))
    return ForwardSignature(layer.layer.data, tuple(specs), floc)


def check_inputs(sig: ForwardSignature | None, inputs: Sequence[Any]) -> None:
    """Raise `InputMismatch` for the first input that does not fit `sig` (None: nothing known)."""
    if sig is None:
        return
    if len(inputs) != len(sig.inputs):
        names = ", ".join(s.name for s in sig.inputs)
        raise InputMismatch(f"forward of '{sig.entry}' takes {len(sig.inputs)} input(s) ({names}), "
                            f"got {len(inputs)}", sig.loc)
    for spec, x in zip(sig.inputs, inputs):
        shape, kind, dtype = _shape_and_kind(x)
        got = f"{dtype}{list(shape)}"
        where = f"input '{spec.name}' of forward of '{sig.entry}'"
        allowed = _FLOAT_KINDS if spec.element.startswith(("float", "bf", "f")) else _INT_KINDS
        if kind not in allowed:
            raise InputMismatch(f"{where} expects {spec.show()}, got an array of {dtype}", spec.loc)
        if spec.dims is None:
            continue
        if len(shape) != len(spec.dims):
            raise InputMismatch(f"{where} expects rank {len(spec.dims)} ({spec.show()}), got rank "
                                f"{len(shape)} ({got})", spec.loc)
        for axis, (want, have) in enumerate(zip(spec.dims, shape)):
            if want is not None and want != have:
                raise InputMismatch(f"{where} expects {spec.show()}, got {got}: dim {axis} is "
                                    f"{have}, not {want}", spec.loc)
            if have < 1:
                raise InputMismatch(f"{where} expects {spec.show()}, got {got}: dim {axis} is empty",
                                    spec.loc)


def torch_pre_hook(sig: ForwardSignature) -> Any:
    """A `register_forward_pre_hook` hook checking eager calls; under torch.export, dynamo or
    jit tracing the shapes are symbolic (reading them would pin the dynamic batch), so it
    leaves those calls alone."""
    def hook(_module: Any, args: tuple) -> None:
        import torch

        compiler = getattr(torch, "compiler", None)
        if torch.jit.is_tracing() or (compiler is not None and compiler.is_compiling()):
            return
        if any(not isinstance(d, int) for a in args if isinstance(a, torch.Tensor) for d in a.shape):
            return
        check_inputs(sig, args)

    return hook


def _shape_and_kind(x: Any) -> tuple[tuple[int, ...], str, str]:
    """(shape, numpy dtype kind, dtype name) of a numpy array, torch tensor or array-like."""
    if type(x).__module__.startswith("torch") and hasattr(x, "dtype") and hasattr(x, "shape"):
        dt = x.dtype
        kind = ("b" if str(dt) == "torch.bool" else "c" if dt.is_complex else
                "f" if dt.is_floating_point else "i")
        return tuple(int(d) for d in x.shape), kind, str(dt).removeprefix("torch.")
    import numpy as np

    try:
        a = x if isinstance(x, np.ndarray) else np.asarray(x)
    except (ValueError, TypeError) as e:  # ragged nested lists
        raise InputMismatch(f"an input is not an array: {e}") from None
    return tuple(a.shape), a.dtype.kind, str(a.dtype)


def _arg_loc(floc: SourceLoc | None, name: str) -> SourceLoc | None:
    """Where `name` is declared in the forward's parameter list, if the source is at hand."""
    if floc is None:
        return None
    pattern = re.compile(rf"\b{re.escape(name)}\s*(:|,|\))")
    for line_no in range(floc.line, floc.line + 8):
        text = source_line(SourceLoc(floc.file, line_no, 1))
        if text is None:
            break
        start = floc.col - 1 if line_no == floc.line else 0
        m = pattern.search(text, start)
        if m:
            return SourceLoc(floc.file, line_no, m.start() + 1)
    return floc
