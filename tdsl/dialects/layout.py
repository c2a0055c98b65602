"""The tensors a frozen program's module stores, computed from the IR alone (no torch).

The package loader checks a weights file against this before anything is built: every
key present, none extra, shapes and dtypes exact. It walks the IR like
`tdsl.backends.torch.freeze.storage_layout` (which needs torch) but answers what is *stored*: packed trits as uint8 `[rows,
bytes_per_row]`, frozen fp16 weights as float16, int8 weights as int8 plus a float32
scale per output channel, everything else in its declared element type. A test checks it
against the state dict of the emitted torch module for every zoo model and precision.
"""
from __future__ import annotations

from dataclasses import dataclass

from xdsl.dialects.builtin import ModuleOp

from tdsl.dialects import tdsl as t
from tdsl.dialects import tern
from tdsl.dialects.storage import PACKED_SUFFIX, SCALE_SUFFIX, is_frozen
from tdsl.dialects.tdsl import element_type_of, entry_layer, module_layers
from tdsl.errors import TdslError
from tdsl.runtime.packing import packed_shape

NUMPY_DTYPES = {"f16": "float16", "f32": "float32", "f64": "float64", "i2": "int8", "i8": "int8",
                "i32": "int32", "i64": "int64", "i1": "bool"}
"""IR element type -> numpy dtype name of its stored tensor (trits `i2` are stored as int8)."""



@dataclass(frozen=True)
class TensorSpec:
    """A stored tensor: numpy dtype name and exact shape."""

    dtype: str
    shape: tuple[int, ...]


def dtype_name(element_type: object) -> str:
    """The numpy dtype name for an IR element type; others cannot be stored in a package."""
    name = str(element_type)
    if name not in NUMPY_DTYPES:
        raise TdslError(f"a package cannot store tensors of element type {name}")
    return NUMPY_DTYPES[name]


def expected_tensors(module: ModuleOp) -> dict[str, TensorSpec]:
    """State-dict key -> stored dtype and shape, for the module emitted from `module`.

    Keys are the dotted instance names from the entry plus the param name (`_packed` after
    a packed weight, `<weight>_scale` for an int8 weight's scale): the torch backend keeps
    DSL names as state-dict keys whenever they are plain identifiers (`names.py_ident`).
    Saving checks that the emitted module agrees, so a package never holds keys this walk
    would not find.
    """
    frozen = is_frozen(module)
    layers = module_layers(module)
    out: dict[str, TensorSpec] = {}

    def visit(spec: t.LayerOp, prefix: str) -> None:
        for op in spec.body.block.ops:
            if isinstance(op, t.InstanceOp):
                callee = layers.get(op.callee.root_reference.data)
                if callee is None:
                    raise TdslError(f"instance '{op.sym_name.data}' refers to unknown layer "
                                    f"@{op.callee.root_reference.data}")
                visit(callee, f"{prefix}{op.sym_name.data}.")
            elif isinstance(op, tern.PackedParamOp):
                out[f"{prefix}{op.sym_name.data}{PACKED_SUFFIX}"] = TensorSpec(
                    "uint8", packed_shape(op.type.get_shape(), op.type.format.data))
            elif isinstance(op, t.ParamOp):
                key = prefix + op.sym_name.data
                shape = tuple(op.type.get_shape())
                precision = op.precision.data if op.precision is not None else None
                if frozen and precision == "fp16":
                    out[key] = TensorSpec("float16", shape)
                elif frozen and precision == "int8":
                    out[key] = TensorSpec("int8", shape)
                    out[key + SCALE_SUFFIX] = TensorSpec("float32", (shape[0] if shape else 1,))
                else:
                    out[key] = TensorSpec(dtype_name(element_type_of(op.type)), shape)

    visit(entry_layer(module), "")
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
