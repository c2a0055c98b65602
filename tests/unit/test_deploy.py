"""`tdsl.deploy(...)` answers in the caller's array type: numpy in, numpy out; torch in, torch out."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest

import tdsl


@pytest.fixture(scope="module")
def frozen() -> Any:
    import torch

    torch.manual_seed(0)
    return tdsl.quantize("mlp", precision="ternary")


def test_torch_in_torch_out_numpy_in_numpy_out(frozen: Any) -> None:
    import torch

    run = frozen.deploy("numba", act_quant="float")
    x = torch.randn(3, 64)
    y = run(x)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32 and tuple(y.shape) == (3, 10)
    z = run(x.numpy())
    assert isinstance(z, np.ndarray)
    assert np.array_equal(y.numpy(), z)
    with torch.no_grad():  # the numbers are the runtime's, in whichever type
        ref = frozen.module(x)
    assert torch.allclose(y, ref, rtol=1e-3, atol=1e-4)
    assert run.plan is run.model.plan  # the backend model's attributes stay reachable


def test_a_numpy_call_imports_no_torch(tmp_path: Any, frozen: Any) -> None:
    pkg = tdsl.save(frozen, tmp_path / "mlp")
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import tdsl
        run = tdsl.load({str(pkg)!r}).deploy("numba")
        y = run(np.zeros((2, 64), np.float32))
        assert isinstance(y, np.ndarray) and y.shape == (2, 10)
        print("torch" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
