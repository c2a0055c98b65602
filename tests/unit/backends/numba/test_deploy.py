"""Deployment without torch, and the CUDA executor in the simulator; each in a fresh
subprocess (an import-boundary check in-process proves nothing once torch is loaded, and
the simulator must be switched on before numba.cuda is first imported)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import tdsl

ROOT = Path(__file__).resolve().parents[4]

TORCH_FREE = """
    import sys
    import numpy as np
    import tdsl
    data = dict(np.load(sys.argv[1]))
    x, want = data.pop("__x__"), data.pop("__y__")
    compiled = tdsl.compile("lenet", pipeline="shape-infer,ternarize,pack{format=2bit}")
    y = compiled.with_weights(data).deploy(act_quant="float")(x)
    assert np.abs(y - want).max() <= 1e-4 * np.abs(want).max(), np.abs(y - want).max()
    assert "torch" not in sys.modules, "deployment imported torch"
    print("ok")
"""


def _run(script: str, *args: str, env: dict[str, str] | None = None, timeout: int = 300) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_deploy_from_arrays_imports_no_torch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    frozen = tdsl.quantize("lenet", precision="ternary")
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        y = frozen(x).numpy()
    arrays = {k: v.numpy() for k, v in frozen.state_dict().items()}
    np.savez(tmp_path / "w.npz", __x__=x.numpy(), __y__=y, **arrays)
    assert _run(TORCH_FREE, str(tmp_path / "w.npz")).strip() == "ok"


CUDA_SIM = """
    import json
    import sys
    import numpy as np
    import tdsl
    data = dict(np.load(sys.argv[1]))
    x = data.pop("__x__")
    compiled = tdsl.compile(sys.argv[2], params=json.loads(sys.argv[3]),
                            pipeline="shape-infer,ternarize,pack{format=2bit}")
    for aq in ("float", "int8"):
        cpu = compiled.with_weights(data).deploy(act_quant=aq, path="portable")(x)
        gpu = compiled.with_weights(data).deploy(device="cuda", act_quant=aq)(x)
        err = np.abs(gpu - cpu).max() / np.abs(cpu).max()
        assert err <= 1e-5, (aq, err)
    print("ok")
"""


SMALL_RESNET = {"cifar_stem": True, "image_size": 8, "num_classes": 10}
SMALL_MOBILENET = {"width_mult": 0.5, "image_size": 8, "num_classes": 10}


@pytest.mark.parametrize("model, shape, params", [
    ("mlp", (2, 64), {}),
    ("mnist1d_mlp", (2, 40), {}),
    pytest.param("lenet", (2, 1, 8, 8), {}, marks=pytest.mark.slow),
    pytest.param("mnist1d_cnn", (2, 1, 40), {}, marks=pytest.mark.slow),
    pytest.param("resnet18", (1, 3, 8, 8), SMALL_RESNET, marks=pytest.mark.slow),
    pytest.param("mobilenetv2", (1, 3, 8, 8), SMALL_MOBILENET, marks=pytest.mark.slow),
])
def test_cuda_simulator_matches_cpu(tmp_path: Path, model: str, shape: tuple[int, ...], params: dict) -> None:
    """The same plan on device arrays. int8: the CUDA kernels form the CPU's int32 sums (same
    float32 quantisation), so only the float epilogue may differ (an FMA on a real GPU);
    float: summation order, ~sqrt(K)·2^-24 relative. Asserted 1e-5 relative (measured ≤ 5e-7)."""
    torch.manual_seed(0)
    frozen = tdsl.quantize(model, precision="ternary", params=params)
    arrays = {k: v.numpy() for k, v in frozen.state_dict().items()}
    np.savez(tmp_path / "w.npz", __x__=np.random.default_rng(0).standard_normal(shape).astype(np.float32), **arrays)
    out = _run(CUDA_SIM, str(tmp_path / "w.npz"), model, json.dumps(params), env={"NUMBA_ENABLE_CUDASIM": "1"},
               timeout=1800)
    assert out.strip() == "ok"
