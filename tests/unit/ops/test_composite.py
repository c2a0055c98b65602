"""Every composite op (`tdsl.ops.composite`) on every backend against its numpy reference.

Each row needs a program here (`PROGRAMS`); the first test fails for a row without one.
A program applies its op to the forward's inputs and to weights (a linear may follow); the
reference evaluates the same IR with numpy: each composite by its row's `reference`, each
linear as x @ w^T + b.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import tdsl
from tdsl.dialects import tdsl as t
from tdsl.ops.composite import COMPOSITES, Composite
from tdsl.ops.elementwise import ACTIVATIONS, BINARY

Inputs = Callable[[np.random.Generator], list[np.ndarray]]


def _floats(*shape: int) -> Inputs:
    return lambda rng: [(3 * rng.standard_normal(shape) + 1).astype(np.float32)]


def _ids(vocab: int, *shape: int) -> Inputs:
    return lambda rng: [rng.integers(0, vocab, shape).astype(np.int32)]


def _qkv(n: int, t_len: int, q_features: int, kv_features: int) -> Inputs:
    return lambda rng: [rng.standard_normal((n, t_len, f)).astype(np.float32)
                        for f in (q_features, kv_features, kv_features)]


PROGRAMS: dict[type, tuple[str, Inputs]] = {
    t.LayerNormOp: ("""
layer Probe() {
    let ln = LayerNorm(8, eps=1e-3)
    let fc = Linear(8, 6)
    fn forward(x: Tensor[float32, N, 8]) -> Tensor[float32, N, 6] {
        return fc(ln(x))
    }
}
""", _floats(5, 8)),
    t.RmsNormOp: ("""
layer Probe() {
    let norm = RMSNorm(8, eps=1e-3)
    fn forward(x: Tensor[float32, N, T, 8]) -> Tensor[float32, N, T, 8] {
        return norm(x)
    }
}
""", _floats(2, 5, 8)),
    t.EmbeddingOp: ("""
layer Probe() {
    let emb = Embedding(11, 6)
    fn forward(ids: Tensor[int32, N, T]) -> Tensor[float32, N, T, 6] {
        return emb(ids)
    }
}
""", _ids(11, 3, 7)),
    t.PositionsOp: ("""
layer Probe() {
    let pos: Tensor[float32, 9, 4] = randn()
    fn forward(ids: Tensor[int32, N, T]) -> Tensor[float32, N, T, 4] {
        return embedding(positions(ids), pos)
    }
}
""", _ids(50, 2, 9)),
    t.PermuteOp: ("""
layer Probe() {
    fn forward(x: Tensor[float32, N, 3, 4, 5]) -> Tensor[float32, N, 5, 3, 4] {
        return permute(x, [0, 3, 1, 2])
    }
}
""", _floats(2, 3, 4, 5)),
    t.Pad2dOp: ("""
layer Probe() {
    fn forward(x: Tensor[float32, N, 3, 4, 5]) -> Tensor[float32, N, 3, 7, 6] {
        return pad2d(x, [0, 1, 2, 1])
    }
}
""", _floats(2, 3, 4, 5)),
    t.TransposeOp: ("""
layer Probe() {
    fn forward(x: Tensor[float32, N, 3, 4]) -> Tensor[float32, N, 4, 3] {
        return transpose(x, -1, 1)
    }
}
""", _floats(2, 3, 4)),
    t.SliceOp: ("""
layer Probe() {
    fn forward(x: Tensor[float32, N, 10]) -> Tensor[float32, N, 4] {
        return slice(x, -1, 2, -4)
    }
}
""", _floats(3, 10)),
    t.ConcatOp: ("""
layer Probe() {
    let w: Tensor[float32, 3, 2] = randn()
    fn forward(x: Tensor[float32, N, 2, 2]) -> Tensor[float32, N, 2, 3] {
        return concat(x, slice(x, 2, 0, 1), dim=2)
    }
}
""", _floats(4, 2, 2)),
    t.RotaryOp: ("""
layer Probe() {
    fn forward(x: Tensor[float32, N, T, 12]) -> Tensor[float32, N, T, 12] {
        return rope(x, 2, base=500.0)
    }
}
""", _floats(2, 6, 12)),
    t.AttentionOp: ("""
layer Probe() {
    fn forward(q: Tensor[float32, N, T, 16], k: Tensor[float32, N, T, 8],
               v: Tensor[float32, N, T, 8]) -> Tensor[float32, N, T, 16] {
        return attention(q, k, v, 4, kv_heads=2)
    }
}
""", _qkv(2, 5, 16, 8)),
}
ROWS = list(COMPOSITES.values())


def test_every_composite_has_a_program() -> None:
    assert set(PROGRAMS) == set(COMPOSITES)


def _setup(row: Composite):
    source, make_inputs = PROGRAMS[row.op]
    compiled = tdsl.compile(source)
    torch.manual_seed(0)
    net = compiled.to_torch().eval()
    with torch.no_grad():  # non-trivial affine parameters, so that they are checked
        for name, p in net.named_parameters():
            if not name.startswith("fc."):
                p.copy_(torch.rand_like(p) + 0.5 if name.endswith("weight") else torch.randn_like(p))
    state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    return compiled, net, state, make_inputs(np.random.default_rng(0))


def _evaluate(module, state: dict, inputs: list[np.ndarray], prefix: str = "") -> list[np.ndarray]:
    """The entry forward (after `inline`, one flat body) evaluated op by op in numpy."""
    layer = t.entry_layer(module)
    env = dict(zip(layer.forward.args, inputs))
    for op in layer.forward.body.block.ops:
        if isinstance(op, t.ReturnOp):
            return [env[v] for v in op.values]
        args = [env[v] for v in op.operands]
        if isinstance(op, t.GetParamOp):
            value = state[prefix + op.param.root_reference.data]
        elif isinstance(op, t.LinearOp):
            value = args[0] @ args[1].astype(np.float64).T + (args[2] if len(args) == 3 else 0.0)
        elif type(op) in BINARY:
            value = BINARY[type(op)].ufunc(*args)
        elif type(op) in ACTIVATIONS:
            value = ACTIVATIONS[type(op)].reference(args[0])
        else:
            value = COMPOSITES[type(op)].reference(op, *args)
        env[op.results[0]] = value
    raise AssertionError("no tdsl.return")


def _reference(compiled, state: dict, inputs: list[np.ndarray]) -> np.ndarray:
    from tdsl.passes.inline import InlinePass
    from xdsl.context import Context

    module = compiled.module.clone()
    InlinePass().apply(Context(allow_unregistered=True), module)
    (y,) = _evaluate(module, state, inputs)
    return np.asarray(y, np.float64)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.op.name)
def test_torch_matches_reference(row: Composite) -> None:
    compiled, net, state, inputs = _setup(row)
    with torch.no_grad():
        y = net(*(torch.from_numpy(x) for x in inputs)).numpy()
    np.testing.assert_allclose(y, _reference(compiled, state, inputs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.op.name)
def test_numba_cpu_matches_reference(row: Composite) -> None:
    compiled, _, state, inputs = _setup(row)
    run = compiled.with_weights(state).deploy(act_quant="float")
    assert any(s.kind == "reference" for s in run.plan.steps)
    np.testing.assert_allclose(run(*inputs), _reference(compiled, state, inputs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.op.name)
def test_onnxruntime_matches_reference(row: Composite, tmp_path: Path) -> None:
    import onnxruntime as ort

    from tdsl.backends.onnx import export_onnx

    compiled, net, state, inputs = _setup(row)
    export_onnx(compiled, tmp_path / "probe.onnx", weights=net)
    session = ort.InferenceSession(str(tmp_path / "probe.onnx"), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {i.name: x for i, x in zip(session.get_inputs(), inputs)})
    np.testing.assert_allclose(y, _reference(compiled, state, inputs), rtol=1e-4, atol=1e-4)


def test_layer_norm_shape_error_is_located() -> None:
    bad = """
layer P() {
    let w: Tensor[float32, 4] = ones()
    fn forward(x: Tensor[float32, N, 8]) -> Tensor[float32, N, 8] {
        return layer_norm(x, w, w)
    }
}
"""
    with pytest.raises(tdsl.TdslError, match="layer_norm: input has 8 features but weight has 4") as info:
        tdsl.compile(bad)
    assert info.value.loc is not None and info.value.loc.line == 5


def test_layer_norm_on_old_onnx_opsets_is_refused_with_a_reason(tmp_path: Path) -> None:
    from tdsl.backends.onnx import export_onnx

    compiled, net, _, _ = _setup(COMPOSITES[t.LayerNormOp])
    with pytest.raises(tdsl.TdslError, match="LayerNormalization needs opset >= 17"):
        export_onnx(compiled, tmp_path / "old.onnx", weights=net, int2=False, opset=13)
    assert not (tmp_path / "old.onnx").exists()


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.op.name)
def test_cuda_refuses_composites_at_deploy_time(row: Composite) -> None:
    compiled, _, state, _ = _setup(row)
    with pytest.raises(tdsl.TdslError, match="no CUDA kernel for step kind 'reference'.*numpy reference") as info:
        compiled.with_weights(state).deploy(device="cuda")
    assert info.value.loc is not None
