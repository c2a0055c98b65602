"""`export_onnx`: a frozen model as an ONNX file, from its kernel-level IR.

The frozen program (`FrozenModel.compiled`, the trained program plus `pack`) is compiled one
step further with `inline,fuse` (docs/KERNEL_IR.md), and `emit._GraphEmitter` turns each op
into ONNX nodes, reading the numbers from the frozen state dict. The model is checked with
`onnx.checker.check_model(full_check=True)` before it is written, and written atomically
(a temporary file in the target's folder, renamed over it), so a failed export never leaves
a partial file.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from tdsl.backends.onnx.emit import ParamStore, _GraphEmitter
from tdsl.dialects.storage import FrozenProgram, Program
from tdsl.errors import TdslError
from tdsl.lowering import kernel_level
from tdsl.support.files import write_atomic


INT2_MIN_OPSET = 25
"""`DequantizeLinear` takes INT2 from opset 25 (ONNX IR 13) on."""
MIN_OPSET = 13
"""Per-axis `DequantizeLinear` and `Squeeze`/`Unsqueeze` with axes as an input."""
TERNARY_FORMS = {"packed": (18, 21), "int2": (INT2_MIN_OPSET, INT2_MIN_OPSET), "int8": (MIN_OPSET, MIN_OPSET),
                 "qdq": (18, 21)}
"""Graph form of ternary weights (`emit` docstring) -> (lowest opset, default opset). `packed`
and `qdq` need `BitwiseAnd` (opset 18); 21 is the default as onnxruntime 1.16 and later run it."""
STORAGE = {"packed": "UINT8 2bit codes", "int2": "INT2", "int8": "INT8",
           "qdq": "UINT8 2bit codes unpacked to INT8 at load; static uint8 activations (QDQ)"}


@dataclass(frozen=True)
class OnnxExport:
    """What `export_onnx` wrote."""

    path: Path
    opset: int
    ir_version: int
    nbytes: int
    """Size of the file."""
    weight_types: dict[str, str]
    """Weight path -> ONNX element type of its initializer (INT2, INT8, FLOAT16, FLOAT)."""
    op_types: dict[str, int]
    """ONNX op type -> number of nodes."""
    metadata: dict[str, str]


def _as_frozen(model: Any, weights: Any) -> FrozenProgram:
    """A frozen program (a FrozenModel, a loaded package) as it is; a compiled program frozen
    with its trained `weights` (its own `freeze`, so that freezing stays in `tdsl.model`).
    The kinds are told apart by the interfaces they derive from (`tdsl.dialects.storage`)."""
    if isinstance(model, tuple) and len(model) == 2:
        model, weights = model
    if isinstance(model, FrozenProgram):
        if weights is not None:
            raise TdslError("export_onnx: a FrozenModel carries its weights; do not pass `weights`")
        return model
    if isinstance(model, Program):
        if weights is None:
            raise TdslError("export_onnx: a CompiledModel needs its trained module or state dict as `weights`")
        return model.freeze(weights)
    raise TdslError(f"export_onnx: expected a FrozenModel or a CompiledModel, got {type(model).__name__}")


def _metadata(frozen: FrozenProgram, ternary_form: str) -> dict[str, str]:
    compiled = frozen.compiled
    policy = {s.weight: s.precision for s in frozen.layout.values() if s.role in ("packed", "weight")}
    return {
        "tdsl.precision": frozen.precision or "custom",
        "tdsl.precision_policy": json.dumps(policy),
        "tdsl.source": Path(compiled.filename).name,
        "tdsl.entry": compiled.entry,
        "tdsl.params": json.dumps(compiled.params, sort_keys=True, default=str),
        "tdsl.pipeline": ",".join(compiled.passes + ["inline", "fuse"]),
        "tdsl.ternary_storage": STORAGE[ternary_form],
    }


def build_model(frozen: FrozenProgram, *, opset: int = 21, ternary_form: str = "packed",
                batch_dim: str = "batch") -> tuple[onnx.ModelProto, _GraphEmitter]:
    """The ONNX model of `frozen` (not checked, not written) and the emitter that built it."""
    import torch

    from tdsl.support.version import __version__
    from tdsl.dialects.tdsl import entry_layer

    state = {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
             for k, v in frozen.state_dict().items()}
    module = kernel_level(frozen.compiled.module)
    emitter = _GraphEmitter(ParamStore(state, frozen.layout), opset=opset, ternary_form=ternary_form)
    layer = entry_layer(module)
    inputs, outputs = emitter.emit_forward(layer.forward, batch_dim)
    graph = helper.make_graph(emitter.nodes, frozen.compiled.entry, inputs, outputs, emitter.initializers,
                              doc_string=f"tdsl {frozen.compiled.entry} ({frozen.precision or 'custom'})")
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="tdsl", producer_version=__version__,
                              ir_version=helper.find_min_ir_version_for(opsets))
    helper.set_model_props(model, _metadata(frozen, ternary_form))
    return model, emitter


def export_onnx(model: Any, path: str | Path, *, opset: int | None = None, ternary_form: str | None = None,
                int2: bool | None = None, batch_dim: str = "batch", weights: Any = None,
                calibrate: Iterable[Any] | None = None) -> OnnxExport:
    """Write `model` (a `FrozenModel`, or a `CompiledModel` with its trained `weights`, or the
    pair) as ONNX to `path`; dim 0 of every input and output is the symbolic `batch_dim`.

    `ternary_form` (module `emit`): "packed" (the default: 2-bit codes that onnxruntime
    unpacks once at session load, then fp32 speed), "int2" (`DequantizeLinear` of INT2,
    opset 25), "int8" (`DequantizeLinear` of INT8, opset 13) or "qdq" (module `qdq`: the
    2-bit codes unpacked at load to INT8 weights and static uint8 activations, which
    onnxruntime runs as `QLinearConv`/`QGemm`, int8 speed; needs `calibrate`).
    `calibrate` (an iterable of input batches: numpy arrays or torch tensors, a tuple or
    dict per batch for several inputs) gives the activation ranges and implies "qdq".
    `int2=True/False` is the older spelling of "int2"/"int8"."""
    if int2 is not None:
        if ternary_form is not None:
            raise TdslError("export_onnx: pass ternary_form or int2, not both")
        ternary_form = "int2" if int2 else "int8"
    if ternary_form is None:
        ternary_form = "packed" if calibrate is None else "qdq"
    if ternary_form == "qdq" and calibrate is None:
        raise TdslError("export_onnx: ternary_form 'qdq' needs calibrate=batches (its activation scales are static, "
                        "measured on those batches)")
    if calibrate is not None and ternary_form != "qdq":
        raise TdslError(f"export_onnx: calibrate applies to ternary_form 'qdq', not {ternary_form!r}")
    if ternary_form not in TERNARY_FORMS:
        raise TdslError(f"export_onnx: ternary_form must be one of {', '.join(TERNARY_FORMS)}, got {ternary_form!r}")
    lowest, default = TERNARY_FORMS[ternary_form]
    opset = default if opset is None else int(opset)
    if opset < lowest:
        raise TdslError(f"export_onnx: ternary_form {ternary_form!r} needs opset >= {lowest}, got {opset} "
                        "(ternary_form='int8' runs from opset 13)")
    if opset < MIN_OPSET or opset > onnx.defs.onnx_opset_version():
        raise TdslError(f"export_onnx: opset must be between {MIN_OPSET} and {onnx.defs.onnx_opset_version()}, "
                        f"got {opset}")
    if not batch_dim.isidentifier():
        raise TdslError(f"export_onnx: batch_dim must be an identifier, got {batch_dim!r}")
    frozen = _as_frozen(model, weights)
    proto, emitter = build_model(frozen, opset=opset, ternary_form=ternary_form, batch_dim=batch_dim)
    if calibrate is not None:
        from tdsl.backends.onnx.qdq import quantize_activations

        proto, _ = quantize_activations(proto, calibrate)
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    target = write_atomic(path, data)
    return OnnxExport(target, opset, proto.ir_version, len(data), dict(emitter.weight_types),
                      dict(Counter(n.op_type for n in proto.graph.node)),
                      {p.key: p.value for p in proto.metadata_props})
