"""Every activation of the op registry, on every backend, against its numpy reference.

The program applies the activation alone (an elementwise step) and after a linear (fused
into the `kern.linear` epilogue when the row is fusable): torch emission, the Numba CPU
runtime, onnxruntime on the exported graph and the CUDA simulator must all compute
`reference`. A new row in `tdsl.ops.elementwise` is tested here without a new test.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import tdsl
from tdsl.dialects import kern
from tdsl.lowering import kernel_level
from tdsl.ops.elementwise import ACTIVATIONS, Activation

ROOT = Path(__file__).resolve().parents[3]
ROWS = list(ACTIVATIONS.values())
TOL = dict(rtol=2e-5, atol=2e-6)

PROGRAM = """
layer Probe() {{
    let fc = Linear(8, 6)
    fn forward(x: Tensor[float32, N, 8]) -> Tensor[float32, N, 6] {{
        let h = {act}(x)
        return {act}(fc(h))
    }}
}}
"""


def _compiled(row: Activation) -> tdsl.api.CompiledModel:
    return tdsl.compile(PROGRAM.format(act=row.name))


def _weights_and_input(row: Activation):
    compiled = _compiled(row)
    torch.manual_seed(0)
    net = compiled.to_torch().eval()
    x = (4 * torch.randn(5, 8)).numpy()  # a wide range: every branch of relu6/hardswish/...
    state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    return compiled, net, state, x


def _reference(row: Activation, state: dict, x: np.ndarray) -> np.ndarray:
    h = row.reference(x)
    return row.reference(h @ state["fc.weight"].astype(np.float64).T + state["fc.bias"])


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_dsl_builtin_emits_the_registered_op(row: Activation) -> None:
    ops = [type(op) for op in _compiled(row).module.walk()]
    assert ops.count(row.op) == 2


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_fuse_absorbs_exactly_the_fusable_ones(row: Activation) -> None:
    module = kernel_level(_compiled(row).module)
    linear = next(op for op in module.walk() if isinstance(op, kern.LinearOp))
    left = [op for op in module.walk() if isinstance(op, row.op)]
    if row.fusable:
        assert linear.activation.data == row.name and len(left) == 1
    else:
        assert linear.activation.data == "none" and len(left) == 2


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_torch_backend_matches_reference(row: Activation) -> None:
    compiled, net, state, x = _weights_and_input(row)
    with torch.no_grad():
        y = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, _reference(row, state, x), **TOL)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_numba_cpu_matches_reference(row: Activation) -> None:
    compiled, _, state, x = _weights_and_input(row)
    y = compiled.with_weights(state).deploy(act_quant="float")(x)
    np.testing.assert_allclose(y, _reference(row, state, x), **TOL)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_onnxruntime_matches_reference(row: Activation, tmp_path: Path) -> None:
    import onnxruntime as ort

    from tdsl.backends.onnx import export_onnx

    compiled, net, state, x = _weights_and_input(row)
    export_onnx(compiled, tmp_path / "probe.onnx", weights=net)
    session = ort.InferenceSession(str(tmp_path / "probe.onnx"), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {session.get_inputs()[0].name: x})
    np.testing.assert_allclose(y, _reference(row, state, x), rtol=1e-4, atol=1e-5)


CUDA_SIM = """
    import sys
    import numpy as np
    import tdsl
    data = dict(np.load(sys.argv[1]))
    x = data.pop("__x__")
    for name in sys.argv[2:]:
        program = open(sys.argv[1] + "." + name).read()
        compiled = tdsl.compile(program).with_weights({k[len(name) + 1:]: v for k, v in data.items()
                                                       if k.startswith(name + ".")})
        cpu = compiled.deploy(act_quant="float")(x)
        gpu = compiled.deploy(device="cuda", act_quant="float")(x)
        err = float(np.abs(cpu - gpu).max())
        assert err <= 1e-5 * max(1.0, float(np.abs(cpu).max())), (name, err)
    print("ok")
"""


def test_cuda_simulator_matches_cpu_for_every_activation(tmp_path: Path) -> None:
    """All rows in one subprocess: the simulator must be on before numba.cuda is imported."""
    arrays = {}
    for row in ROWS:
        _, _, state, x = _weights_and_input(row)
        (tmp_path / f"w.npz.{row.name}").write_text(PROGRAM.format(act=row.name))
        arrays.update({f"{row.name}.{k}": v for k, v in state.items()})
    np.savez(tmp_path / "w.npz", __x__=x, **arrays)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(CUDA_SIM), str(tmp_path / "w.npz"),
                           *(row.name for row in ROWS)], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


@pytest.mark.parametrize("name", ["sigmoid", "silu"])
def test_the_sigmoids_exp_is_within_a_few_ulp_everywhere(name: str) -> None:
    """SiLU and sigmoid take exp(-v) from a polynomial (vectorisable, `activations.apply`), not
    libm: within 4 float32 ulp of the float64 formula on [-80, 80] (the whole exact range of
    exp); beyond it exp(-v) stays at exp(+-87..88), off by less than 2e-38 |v|; NaN stays NaN."""
    from numba import njit

    from tdsl.runtime import activations as A

    code = A.NAMES.index(name)
    act = njit(A.apply)

    @njit
    def run(x, out):
        for i in range(x.size):
            out[i] = act(x[i], code)

    x = np.concatenate([np.linspace(-80, 80, 400_001, dtype=np.float32),
                        np.random.default_rng(0).standard_normal(100_000).astype(np.float32)])
    got = np.empty_like(x)
    run(x, got)
    want = A.apply_array(x, code)
    ulp = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - want) / ulp) <= 4.0
    far = np.array([-1e4, -200.0, -90.0, 90.0, 200.0, 1e4, np.nan], np.float32)
    out = np.empty_like(far)
    run(far, out)
    ref = A.apply_array(far[:6], code)
    assert np.all(np.abs(out[:6] - ref) <= 2e-38 * np.abs(far[:6]) + 1e-7 * np.abs(ref)) and np.isnan(out[6])
    inf = np.array([np.inf], np.float32)
    run(inf, out[:1])
    assert out[0] == (np.inf if name == "silu" else 1.0)
