"""Runtime inputs checked against the entry `forward`'s declared signature, on every backend.

Without this check a wrong input reaches a kernel and fails there (a torch `RuntimeError`
about `mat1 and mat2`, a Numba index error) or, worse, runs on garbage. Each backend calls
`check_inputs` once at its entry, with the `ForwardSignature` read from the IR, and gets an
`InputMismatch` that names the forward argument, where the DSL declares it, what it expects
and what it got.

The same rules hold on every backend: an input of another numeric dtype (float64, float16,
int, uint8) or a nested list is converted to the declared element type (the torch module's
hook hands torch the converted tensor; the Numba deployment copies into its float32 buffers),
and a float input holding NaN or Inf, or a value the declared type cannot hold, is refused by
name (an int8-quantised deployment would otherwise turn it into a finite number while torch
returns NaN). `check_memory` refuses a call whose memory would exceed what the machine has,
before anything is allocated, with the number in the message.
"""
from __future__ import annotations

import math
import os
import re
import time
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
    expansion: float = 1.0
    """`activation_expansion` of the program, for the memory check."""


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
    return ForwardSignature(layer.layer.data, tuple(specs), floc, activation_expansion(module))


def check_inputs(sig: ForwardSignature | None, inputs: Sequence[Any], finite: bool = True) -> None:
    """Raise `InputMismatch` for the first input that does not fit `sig` (None: nothing known),
    whose call would need more memory than is available (`sig.expansion` times the inputs), or
    (finite=True) that holds a non-finite value. finite=False: the caller's first pass over
    the inputs counts those values (`finite_limit`) and calls this again with finite=True to
    raise where it found one (the NHWC int8 runtime's input quantiser)."""
    if sig is None:
        return
    _check_count(sig, len(inputs))
    for spec, x in zip(sig.inputs, inputs):
        shape, kind, dtype = _shape_and_kind(x)
        allowed = _FLOAT_KINDS if spec.element.startswith(("float", "bf", "f")) else _INT_KINDS
        if kind not in allowed:
            raise InputMismatch(f"{_where(sig, spec)} expects {spec.show()}, got an array of {dtype}", spec.loc)
        _check_shape(sig, spec, shape, dtype)
    shapes = [_shape_and_kind(x)[0] for x in inputs]
    check_memory(sum(math.prod(s) for s in shapes) * 4 * sig.expansion,
                 f"forward of '{sig.entry}' on inputs {', '.join(str(list(s)) for s in shapes)} (an estimate "
                 "from its largest activation)", sig.loc)
    if finite:
        for spec, x in zip(sig.inputs, inputs):
            _check_finite(spec, x, _where(sig, spec))


def finite_limit(spec: InputSpec) -> float | None:
    """The largest magnitude a value of this input may have (its float type's), None for an
    input whose values `check_inputs` does not bound (integers)."""
    return _FLOAT_LIMITS.get(spec.element)


def check_shapes(sig: ForwardSignature, shapes: Sequence[Sequence[int]], dtype: str) -> None:
    """Count, rank and declared dims of inputs of these shapes: what can be refused before the
    inputs exist (`tdsl run` would otherwise fill a random input of any size first)."""
    _check_count(sig, len(shapes))
    for spec, shape in zip(sig.inputs, shapes):
        _check_shape(sig, spec, tuple(shape), dtype)


def _where(sig: ForwardSignature, spec: InputSpec) -> str:
    return f"input '{spec.name}' of forward of '{sig.entry}'"


def _check_count(sig: ForwardSignature, count: int) -> None:
    if count != len(sig.inputs):
        names = ", ".join(s.name for s in sig.inputs)
        raise InputMismatch(f"forward of '{sig.entry}' takes {len(sig.inputs)} input(s) ({names}), "
                            f"got {count}", sig.loc)


def _check_shape(sig: ForwardSignature, spec: InputSpec, shape: tuple[int, ...], dtype: str) -> None:
    if spec.dims is None:
        return
    got, where = f"{dtype}{list(shape)}", _where(sig, spec)
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


_FLOAT_LIMITS = {"float32": 3.4028234663852886e38, "float16": 65504.0}


def _check_finite(spec: InputSpec, x: Any, where: str) -> None:
    """Refuse NaN, Inf and values beyond the declared float type (one pass over the input)."""
    limit = _FLOAT_LIMITS.get(spec.element)
    if limit is None:
        return
    torch_tensor = type(x).__module__.startswith("torch")
    if torch_tensor:
        if not x.dtype.is_floating_point:
            return
        import torch

        magnitude = float(torch.max(torch.abs(x.detach()))) if x.numel() else 0.0
        bad = None if magnitude == magnitude and magnitude <= limit else torch.nonzero(
            ~torch.isfinite(x.detach()) | (torch.abs(x.detach()) > limit))[0].tolist()
    else:
        import numpy as np

        a = np.asarray(x)
        if a.dtype.kind != "f":
            return
        with np.errstate(invalid="ignore", over="ignore"):  # min and max: NaN propagates, no |a| copy
            magnitude = max(-float(a.min()), float(a.max())) if a.size else 0.0
            bad = None if magnitude == magnitude and magnitude <= limit else [
                int(i) for i in np.argwhere(~np.isfinite(a) | (np.abs(a) > limit))[0]]
    if bad is not None:
        value = x[tuple(bad)].item() if torch_tensor else np.asarray(x)[tuple(bad)].item()
        what = "NaN" if value != value else "Inf" if abs(value) == float("inf") else \
            f"{value!r}, beyond {spec.element}'s range"
        raise InputMismatch(f"{where} holds {what} at index {bad}; tdsl refuses non-finite inputs "
                            "(on every backend)", spec.loc)


def convert_torch_inputs(sig: ForwardSignature, inputs: Sequence[Any]) -> tuple[Any, ...]:
    """The inputs as torch tensors of their declared dtypes (after `check_inputs`): a float64,
    float16, int or uint8 tensor, a numpy array or a nested list becomes what the forward
    declares, so torch never sees a dtype its kernels refuse."""
    import numpy as np
    import torch

    out = []
    for spec, x in zip(sig.inputs, inputs):
        dtype = getattr(torch, spec.element, None) if spec.element != "trit" else torch.int8
        if not isinstance(x, torch.Tensor):
            x = torch.from_numpy(np.array(x))
        if isinstance(dtype, torch.dtype) and x.dtype != dtype:
            x = x.to(dtype)
        out.append(x)
    return tuple(out)


_MEMORY_READ: list[float | int | None] = [-1.0, None]
"""(monotonic time, bytes) of the last read of /proc/meminfo (`available_memory`)."""
MEMORY_READ_SECONDS = 0.25
"""How long `available_memory` reuses a reading: each call of a deployment checks its inputs,
and reading /proc/meminfo costs ~20-100 us (a few per cent of a 5 ms call)."""


def available_memory() -> int | None:
    """Bytes of memory this process can still get (MemAvailable, else free pages; None: unknown),
    as read at most MEMORY_READ_SECONDS ago."""
    now = time.monotonic()
    if now - _MEMORY_READ[0] < MEMORY_READ_SECONDS:
        return _MEMORY_READ[1]
    _MEMORY_READ[:] = [now, _read_available_memory()]
    return _MEMORY_READ[1]


def _read_available_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def show_bytes(n: float) -> str:
    """A byte count for a message: 1.5 GiB, 12.0 MiB, 100 bytes."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


MEMORY_CHECK_FLOOR = 64 * 2**20
"""Calls estimated below this many bytes skip the check: reading /proc/meminfo costs ~40 us,
a few per cent of a small model's call, and such a call cannot be what exhausts memory."""


def check_memory(nbytes: float, what: str, loc: SourceLoc | None = None) -> None:
    """Refuse, before allocating, `what` needing `nbytes` when the machine has less available."""
    if nbytes < MEMORY_CHECK_FLOOR:
        return
    free = available_memory()
    if free is not None and nbytes > free:
        raise InputMismatch(f"{what} needs {int(nbytes):,} bytes ({show_bytes(nbytes)}) but only "
                            f"{show_bytes(free)} of memory is available; use a smaller batch or input", loc)


def torch_pre_hook(sig: ForwardSignature) -> Any:
    """A `register_forward_pre_hook` hook checking eager calls and converting their inputs to
    the declared dtypes (`convert_torch_inputs`); under torch.export, dynamo or
    jit tracing the shapes are symbolic (reading them would pin the dynamic batch), so it
    leaves those calls alone."""
    def hook(_module: Any, args: tuple) -> None:
        import torch

        compiler = getattr(torch, "compiler", None)
        if torch.jit.is_tracing() or (compiler is not None and compiler.is_compiling()):
            return
        if any(not isinstance(d, int) for a in args if isinstance(a, torch.Tensor) for d in a.shape):
            return None
        check_inputs(sig, args)
        return convert_torch_inputs(sig, args)

    return hook


def activation_expansion(module: ModuleOp) -> float:
    """How many times the inputs' element count the program's largest tensor holds, counting
    each dynamic dim as 1 on both sides (a lower bound for the memory check: a stride only
    shrinks the spatial dims the count leaves out)."""
    from tdsl.dialects.tdsl import entry_layer

    def elements(ty: Any) -> int:
        return int(math.prod(d for d in ty.get_shape() if d > 0)) if isinstance(ty, TensorType) else 1

    def activation(ty: Any) -> bool:  # a weight has no dynamic dim
        return isinstance(ty, TensorType) and any(d < 0 for d in ty.get_shape())

    inputs = sum(elements(ty) for ty in entry_layer(module).forward.function_type.inputs.data) or 1
    largest = max((elements(r.type) for op in module.walk() for r in op.results if activation(r.type)), default=1)
    return max(1.0, largest / inputs)


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
