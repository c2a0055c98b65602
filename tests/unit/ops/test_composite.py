"""Every composite op (`tdsl.ops.composite`) on every backend against its numpy reference.

Each row needs a program here (`PROGRAMS`); the first test fails for a row without one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import tdsl
from tdsl.dialects import tdsl as t
from tdsl.ops.composite import COMPOSITES, Composite

PROGRAMS: dict[type, tuple[str, tuple[int, ...]]] = {
    t.LayerNormOp: ("""
layer Probe() {
    let ln = LayerNorm(8, eps=1e-3)
    let fc = Linear(8, 6)
    fn forward(x: Tensor[float32, N, 8]) -> Tensor[float32, N, 6] {
        return fc(ln(x))
    }
}
""", (5, 8)),
}
ROWS = list(COMPOSITES.values())


def test_every_composite_has_a_program() -> None:
    assert set(PROGRAMS) == set(COMPOSITES)


def _setup(row: Composite):
    source, shape = PROGRAMS[row.op]
    compiled = tdsl.compile(source)
    torch.manual_seed(0)
    net = compiled.to_torch().eval()
    with torch.no_grad():  # non-trivial affine parameters, so that they are checked
        for name, p in net.named_parameters():
            if not name.startswith("fc."):
                p.copy_(torch.rand_like(p) + 0.5 if name.endswith("weight") else torch.randn_like(p))
    state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    x = (3 * torch.randn(*shape) + 1).numpy()
    return compiled, net, state, x


def _reference(row: Composite, compiled, state: dict, x: np.ndarray) -> np.ndarray:
    op = next(o for o in compiled.module.walk() if isinstance(o, row.op))
    h = row.reference(op, x, state["ln.weight"], state["ln.bias"])
    return h @ state["fc.weight"].astype(np.float64).T + state["fc.bias"]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.op.name)
def test_torch_matches_reference(row: Composite) -> None:
    compiled, net, state, x = _setup(row)
    with torch.no_grad():
        y = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, _reference(row, compiled, state, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.op.name)
def test_numba_cpu_matches_reference(row: Composite) -> None:
    compiled, _, state, x = _setup(row)
    run = compiled.with_weights(state).deploy(act_quant="float")
    assert any(s.kind == "reference" for s in run.plan.steps)
    np.testing.assert_allclose(run(x), _reference(row, compiled, state, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.op.name)
def test_onnxruntime_matches_reference(row: Composite, tmp_path: Path) -> None:
    import onnxruntime as ort

    from tdsl.backends.onnx import export_onnx

    compiled, net, state, x = _setup(row)
    export_onnx(compiled, tmp_path / "probe.onnx", weights=net)
    session = ort.InferenceSession(str(tmp_path / "probe.onnx"), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {session.get_inputs()[0].name: x})
    np.testing.assert_allclose(y, _reference(row, compiled, state, x), rtol=1e-4, atol=1e-4)


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
