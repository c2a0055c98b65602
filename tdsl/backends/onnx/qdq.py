"""Static activation quantisation of an emitted graph: the QDQ form onnxruntime fuses into
`QLinearConv` / `QGemm` / `QLinearAdd` (form `qdq` of `export_onnx`).

The emitter (form `qdq`) already gives every conv/linear weight as INT8 → `DequantizeLinear`.
This module adds what onnxruntime's own `quantize_static` adds around the activations, in
the same places (studied on its output for the zoo CNNs; onnxruntime 1.32):

- a `QuantizeLinear` → `DequantizeLinear` pair (uint8, per tensor, static scale and zero
  point) on the graph's float inputs and on the output of every `Conv`, `Gemm`, `Add`,
  `Relu`, `Clip`, pool, `Reshape` and `Flatten` (and on any other tensor a `Conv`/`Gemm`
  reads), every consumer reading the `DequantizeLinear`; float32 tensors only, as ONNX
  shape inference types them (shape arithmetic stays integer);
- not on a `Conv`/`Gemm`/`Add` output whose one consumer is a `Relu` or `Clip`: the
  activation's output is quantised instead (zero point 0, range inside the clip), and
  onnxruntime's optimiser drops the activation and fuses the rest;
- `MaxPool`, `Reshape`, `Flatten`, `Squeeze`, `Unsqueeze` keep their input's scale and zero
  point (onnxruntime then runs them on uint8 or drops their pair);
- a float bias of a `Conv`/`Gemm` becomes INT32 with scale s_x·s_w[c] → `DequantizeLinear`
  (zero point omitted: 0); the scale is a `Mul` of the two scale initializers, folded at
  load, so the file does not store it a second time.

Scales come from calibration as onnxruntime's MinMax calibrator makes them: the min and max
of each tensor over all batches (the float graph run in onnxruntime, the tensors added as
outputs), widened to contain 0, scale = (max − min) / 255, zero point round(−min / scale).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tdsl.errors import TdslError

QUANTISED_OUTPUTS = {"Conv", "Gemm", "Add", "Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool",
                     "Reshape", "Flatten", "Squeeze", "Unsqueeze"}
SAME_SCALE = {"MaxPool", "Reshape", "Flatten", "Squeeze", "Unsqueeze"}
"""Ops whose output keeps the input's quantisation (onnxruntime requires it to drop their pair)."""
ACTIVATIONS = {"Relu", "Clip"}
PRODUCTS = {"Conv", "Gemm"}
UINT8_MAX = 255


@dataclass(frozen=True)
class QdqParams:
    """The static quantisation of one activation tensor."""

    scale: float
    zero_point: int


def minmax_params(low: float, high: float) -> QdqParams:
    """uint8 parameters of a calibrated float32 range, as onnxruntime's `compute_scale_zp`
    (1.32) computes them: the scale and zero point in float64, the scale stored as float32."""
    if not (np.isfinite(low) and np.isfinite(high)):
        raise TdslError(f"calibration met non-finite activations (range {low}..{high}); check the batches")
    lo, hi = float(min(np.float32(low), 0.0)), float(max(np.float32(high), 0.0))
    scale = (hi - lo) / UINT8_MAX
    if scale < np.finfo(np.float32).tiny:
        return QdqParams(1.0, 0)
    return QdqParams(float(np.float32(scale)), int(np.clip(np.round(0.0 - lo / scale), 0, UINT8_MAX)))


def _constant_tensors(graph: onnx.GraphProto) -> set[str]:
    """Initializers and everything computed from them alone (the weight-unpacking subgraphs)."""
    const = {t.name for t in graph.initializer}
    for node in graph.node:
        if node.input and all(i in const for i in node.input if i):
            const.update(node.output)
    return const


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    """Tensors that ONNX shape inference types as float32 (integer shape arithmetic is not quantised)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    infos = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    return {v.name for v in infos if v.type.tensor_type.elem_type == TensorProto.FLOAT}


def plan(model: onnx.ModelProto) -> tuple[list[str], dict[str, str]]:
    """(tensors calibrated for their own range, tensor -> tensor whose parameters it shares)."""
    graph = model.graph
    const = _constant_tensors(graph)
    floats = _float_tensors(model) - const
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    own: list[str] = []
    shared: dict[str, str] = {}
    chosen: set[str] = set()

    def wants(name: str) -> bool:
        users = consumers.get(name, [])
        return name in floats and bool(users) and not (len(users) == 1 and users[0].op_type in ACTIVATIONS)

    for name in (v.name for v in graph.input):
        if wants(name):
            own.append(name)
            chosen.add(name)
    for node in graph.node:
        if not node.output or node.output[0] in const or node.op_type == "DequantizeLinear":
            continue
        out = node.output[0]
        if node.op_type in SAME_SCALE and node.input[0] in chosen and wants(out):
            shared[out] = shared.get(node.input[0], node.input[0])
            chosen.add(out)
        elif node.op_type in QUANTISED_OUTPUTS and wants(out):
            own.append(out)
            chosen.add(out)
    for node in graph.node:  # any other tensor a Conv or Gemm reads as its data input
        if node.op_type in PRODUCTS and node.input[0] not in chosen and node.input[0] in floats:
            own.append(node.input[0])
            chosen.add(node.input[0])
    return own, shared


def calibrate(model: onnx.ModelProto, tensors: Sequence[str], batches: Iterable[object]) -> dict[str, tuple[float, float]]:
    """(min, max) of each tensor over `batches`, from the float graph in onnxruntime."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None)
                              for t in tensors if t not in outputs)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    ranges: dict[str, tuple[float, float]] = {}
    count = 0
    for index, batch in enumerate(batches):
        feed = _feed(batch, names, index)
        try:
            values = session.run(list(tensors), feed)
        except Exception as e:  # onnxruntime raises its own exception types for bad shapes
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            shapes = {k: v.shape for k, v in feed.items()}
            raise TdslError(f"calibration batch {index} {shapes} does not fit the model: {first}") from None
        for name, value in zip(tensors, values):
            low, high = (float(value.min()), float(value.max())) if value.size else (0.0, 0.0)
            if name in ranges:
                low, high = min(low, ranges[name][0]), max(high, ranges[name][1])
            ranges[name] = (low, high)
        count += 1
    if not count:
        raise TdslError("calibration needs at least one input batch")
    return ranges


def _feed(batch: object, names: Sequence[str], index: int) -> dict[str, np.ndarray]:
    """One batch as onnxruntime's feed: an array (one input), a tuple/list (one per input) or a dict."""
    if isinstance(batch, Mapping):
        items = dict(batch)
        missing = [n for n in names if n not in items]
        if missing:
            raise TdslError(f"calibration batch {index} lacks input(s) {', '.join(missing)}")
    else:
        values = list(batch) if isinstance(batch, (tuple, list)) else [batch]
        if len(values) != len(names):
            raise TdslError(f"calibration batch {index} holds {len(values)} array(s); the model takes "
                            f"{len(names)} input(s) ({', '.join(names)})")
        items = dict(zip(names, values))
    feed = {}
    for name in names:
        value = items[name]
        if hasattr(value, "detach"):  # a torch tensor
            value = value.detach().cpu().numpy()
        if not isinstance(value, np.ndarray):
            raise TdslError(f"calibration batch {index}: input '{name}' must be a numpy array or torch tensor, "
                            f"got {type(value).__name__}")
        if value.dtype.kind == "f":
            value = value.astype(np.float32, copy=False)
            if not np.isfinite(value).all():
                raise TdslError(f"calibration batch {index}: input '{name}' holds NaN or infinite values")
        feed[name] = np.ascontiguousarray(value)
    return feed


def _initializer_arrays(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in graph.initializer}


def insert_qdq(model: onnx.ModelProto, params: Mapping[str, QdqParams]) -> onnx.ModelProto:
    """`model` with a uint8 QuantizeLinear → DequantizeLinear pair on each tensor of `params`
    (consumers rewired to the DequantizeLinear) and INT32 biases on quantised Conv/Gemm."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = _initializer_arrays(graph)
    producers = {o: n for n in graph.node for o in n.output}
    new_inits: list[onnx.TensorProto] = []
    renamed = {name: f"{name}.act_dq" for name in params}
    source_of = {v: k for k, v in renamed.items()}
    pairs: dict[str, list[onnx.NodeProto]] = {}
    for name, p in params.items():
        scale, zero = f"{name}.act_scale", f"{name}.act_zero_point"
        new_inits += [numpy_helper.from_array(np.array(p.scale, np.float32), scale),
                      numpy_helper.from_array(np.array(p.zero_point, np.uint8), zero)]
        pairs[name] = [helper.make_node("QuantizeLinear", [name, scale, zero], [f"{name}.act_q"], name=f"{name}.quantize"),
                       helper.make_node("DequantizeLinear", [f"{name}.act_q", scale, zero], [renamed[name]],
                                        name=f"{name}.dequantize")]
    nodes: list[onnx.NodeProto] = []
    for name in (v.name for v in graph.input):
        nodes += pairs.get(name, [])
    for node in graph.node:
        for k, i in enumerate(node.input):
            if i in renamed:
                node.input[k] = renamed[i]
        if node.op_type in PRODUCTS and len(node.input) == 3 and node.input[2] in inits:
            bias = _int32_bias(node, source_of.get(node.input[0]), params, inits, producers)
            if bias is not None:
                new_inits += bias[1]
                nodes += bias[0]
                node.input[2] = bias[0][-1].output[0]
        nodes.append(node)
        for o in node.output:
            nodes += pairs.get(o, [])
    used = {i for n in nodes for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + [t for t in new_inits if t.name in used])
    return out


def _int32_bias(node: onnx.NodeProto, x: str | None, params: Mapping[str, QdqParams],
                inits: Mapping[str, onnx.TensorProto],
                producers: Mapping[str, onnx.NodeProto]) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]] | None:
    """The bias of a Conv/Gemm reading the quantised `x` as INT32 with scale s_x·s_w[c]
    (onnxruntime's QDQ form); None when the input or the weight is not quantised."""
    weight_dq = producers.get(node.input[1])
    if x is None or weight_dq is None or weight_dq.op_type != "DequantizeLinear":
        return None
    w_scale = numpy_helper.to_array(inits[weight_dq.input[1]])
    bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
    if w_scale.shape not in ((), bias.shape) or not np.all(w_scale > 0):
        return None
    # s_x·s_w in float32, as the `Mul` below computes it when the session folds it at load
    scale = np.broadcast_to(np.float32(params[x].scale) * w_scale.astype(np.float32), bias.shape)
    limit = np.iinfo(np.int32).max
    q = np.clip(np.round(bias / scale.astype(np.float64)), -limit, limit).astype(np.int32)
    base = node.input[2]
    tensors = [numpy_helper.from_array(q, f"{base}.int32")]
    bias_scale = helper.make_node("Mul", [f"{x}.act_scale", weight_dq.input[1]], [f"{base}.int32_scale"],
                                  name=f"{base}.scale")
    dq = helper.make_node("DequantizeLinear", [tensors[0].name, bias_scale.output[0]], [f"{base}.dq"],
                          name=f"{base}.dequantize", axis=0)
    return [bias_scale, dq], tensors


def quantize_activations(model: onnx.ModelProto, batches: Iterable[object]) -> tuple[onnx.ModelProto, dict[str, QdqParams]]:
    """The QDQ model of an emitted `qdq`-form graph, calibrated on `batches`, and its parameters."""
    own, shared = plan(model)
    ranges = calibrate(model, own, batches)
    params = {name: minmax_params(*ranges[name]) for name in own}
    for name, source in shared.items():
        params[name] = params[source]
    return insert_qdq(model, params), params
