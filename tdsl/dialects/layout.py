"""A program's stored tensors and inputs/outputs, computed from the IR alone (no torch).

The package loader checks a weights file against `expected_tensors` before anything is built:
every key present, none extra, shapes and dtypes exact (packed trits as uint8 `[rows,
bytes_per_row]`, frozen fp16 weights as float16, int8 weights as int8 plus a float32 scale per
output channel, everything else in its declared element type). It reads them off the one
storage layout, `tdsl.dialects.storage.storage_layout`, which the torch backend's freeze walks
too; a test checks them against the state dict of the emitted torch module.
"""
from __future__ import annotations

from dataclasses import dataclass

from xdsl.dialects.builtin import ModuleOp

from tdsl.dialects import tdsl as t
from tdsl.dialects.storage import NUMPY_DTYPES, dtype_name, storage_layout
from tdsl.dialects.tdsl import element_type_of, entry_layer
from tdsl.errors import TdslError

__all__ = ["NUMPY_DTYPES", "TensorSpec", "dtype_name", "example_shapes", "expected_tensors", "io_names", "io_spec"]


@dataclass(frozen=True)
class TensorSpec:
    """A stored tensor: numpy dtype name and exact shape."""

    dtype: str
    shape: tuple[int, ...]


def expected_tensors(module: ModuleOp) -> dict[str, TensorSpec]:
    """Store key -> stored dtype and shape, for the module emitted from `module`: the storage
    layout (`tdsl.dialects.storage.storage_layout`) under the IR's own names. The torch backend
    keeps DSL names as state-dict keys whenever they are plain identifiers (`names.py_ident`);
    saving checks that the emitted module agrees, so a package never holds keys this walk would
    not find."""
    out: dict[str, TensorSpec] = {}
    for key, stored in storage_layout(module).items():
        if stored.dtype not in NUMPY_DTYPES.values() and stored.role != "packed":
            raise TdslError(f"a package cannot store tensors of element type {stored.dtype}")
        out[key] = TensorSpec(stored.dtype, stored.stored_shape)
    return out


def io_names(forward: t.ForwardOp) -> tuple[list[str], list[str]]:
    """The names of the entry's inputs and outputs, the same in config.json, ONNX and
    torch.export: the DSL's argument names (else `input_<i>`), the return's names (else
    `output`, or `output_<i>` for several). Packages before this rule said `output0`."""
    n_in, n_out = len(forward.function_type.inputs.data), len(forward.function_type.outputs.data)
    args = [a.data for a in forward.arg_names.data] if forward.arg_names is not None else []
    inputs = [args[i] if i < len(args) else f"input_{i}" for i in range(n_in)]
    ret = forward.return_op.names
    if ret is not None and len(ret.data) == n_out:
        return inputs, [n.data for n in ret.data]
    return inputs, ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]


def io_spec(module: ModuleOp) -> dict[str, list[dict[str, object]]]:
    """Names (`io_names`), shapes (null for a dynamic dim) and dtypes of the entry forward's inputs/outputs."""
    from tdsl.dialects.tdsl import dims_of

    forward = entry_layer(module).forward
    fn_type = forward.function_type
    in_names, out_names = io_names(forward)

    def describe(types: list, names: list[str]) -> list[dict[str, object]]:
        return [{"name": name, "shape": dims_of(ty), "dtype": dtype_name(element_type_of(ty))}
                for name, ty in zip(names, types)]

    return {"inputs": describe(list(fn_type.inputs.data), in_names),
            "outputs": describe(list(fn_type.outputs.data), out_names)}


def example_shapes(module: ModuleOp) -> list[list[int | None] | None]:
    """Per entry input, the shape example inputs take: its static dims, the example of each dim
    declared `dynamic(example)` (the zoo CNNs take any H x W and give `image_size` as the example),
    None for a dim with neither (the batch); None for an input of unknown rank."""
    from tdsl.dialects.tdsl import dims_of
    from tdsl.dialects.storage import EXAMPLE_SHAPE

    forward = entry_layer(module).forward
    recorded = forward.attributes.get(EXAMPLE_SHAPE)
    out: list[list[int | None] | None] = []
    for i, ty in enumerate(forward.function_type.inputs.data):
        dims = dims_of(ty)
        if dims is not None and recorded is not None and i < len(recorded.data):
            examples = [e.value.data for e in recorded.data[i].data]  # IntegerAttr: upstream MLIR parses it
            dims = [d if d is not None or j >= len(examples) or examples[j] < 0 else examples[j]
                    for j, d in enumerate(dims)]
        out.append(None if dims is None else list(dims))
    return out
