"""Runtime inputs are checked against the entry forward's declared signature on every backend:
the Numba deployment, the emitted torch module, a loaded package and `tdsl run`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tdsl
from tdsl.signature import InputMismatch, check_inputs, forward_signature
from tdsl.tools.tdsl_cli import main as tdsl_main

MLP = "tdsl/models/mlp.tdsl"
TWO_INPUTS = """\
layer Add2 {
    fn forward(a: Tensor[float32, N, 4],
               b: Tensor[float32, N, 4]) -> Tensor[float32, N, 4] {
        return a + b
    }
}
"""

BAD = [
    # (input shape, dtype, message fragment)
    ((2, 785), np.float32, "expects float32[?, 64], got float32[2, 785]: dim 1 is 785, not 64"),
    ((64,), np.float32, "expects rank 2 (float32[?, 64]), got rank 1 (float32[64])"),
    ((2, 64, 1), np.float32, "got rank 3"),
    ((2, 64), np.bool_, "got an array of bool"),
    ((2, 64), np.complex64, "got an array of complex64"),
    ((0, 64), np.float32, "dim 0 is empty"),
]


@pytest.fixture(scope="module")
def mlp() -> tdsl.CompiledModel:
    return tdsl.compile(MLP)


def _deployed(model: tdsl.CompiledModel):
    import torch

    from tdsl.backends.torch.freeze import freeze

    torch.manual_seed(0)
    return freeze(model, model.to_torch()).deploy("numba")


def test_signature_names_the_argument_and_where_it_is_declared(mlp: tdsl.CompiledModel) -> None:
    sig = forward_signature(mlp.module)
    (spec,) = sig.inputs
    assert (spec.name, spec.element, spec.dims) == ("x", "float32", (None, 64))
    line = Path(MLP).read_text().splitlines()[spec.loc.line - 1]
    assert line[spec.loc.col - 1:].startswith("x: Tensor")


@pytest.mark.parametrize(("shape", "dtype", "fragment"), BAD)
def test_numba_deployment_refuses_a_wrong_input(mlp: tdsl.CompiledModel, shape: tuple, dtype: type,
                                               fragment: str) -> None:
    deployed = _deployed(mlp)
    with pytest.raises(InputMismatch, match="input 'x' of forward of 'MLP'") as info:
        deployed(np.zeros(shape, dtype))
    assert fragment in info.value.message
    assert info.value.loc is not None and info.value.loc.file.endswith("mlp.tdsl")
    assert deployed(np.zeros((3, 64), np.float32)).shape == (3, 10)  # a right one still runs


@pytest.mark.parametrize(("shape", "dtype", "fragment"), BAD[:4])
def test_torch_module_refuses_a_wrong_input(mlp: tdsl.CompiledModel, shape: tuple, dtype: type,
                                            fragment: str) -> None:
    import torch

    module = mlp.to_torch()
    with pytest.raises(InputMismatch) as info:
        module(torch.from_numpy(np.zeros(shape, dtype)))
    assert fragment in info.value.message
    assert tuple(module(torch.zeros(3, 64)).shape) == (3, 10)


def test_a_loaded_package_refuses_a_wrong_input(mlp: tdsl.CompiledModel, tmp_path: Path) -> None:
    import torch

    torch.manual_seed(0)
    frozen = mlp.freeze(mlp.to_torch())
    loaded = tdsl.load(tdsl.save(frozen, tmp_path / "mlp"))
    deployed = loaded.deploy("numba")
    with pytest.raises(InputMismatch, match="dim 1 is 63, not 64"):
        deployed(np.zeros((2, 63), np.float32))
    assert deployed(np.ones((2, 64), np.float32)).shape == (2, 10)


def test_input_count_and_every_argument_are_checked() -> None:
    sig = forward_signature(tdsl.compile(TWO_INPUTS).module)
    with pytest.raises(InputMismatch, match=r"takes 2 input\(s\) \(a, b\), got 1"):
        check_inputs(sig, [np.zeros((1, 4), np.float32)])
    with pytest.raises(InputMismatch, match="input 'b'") as info:
        check_inputs(sig, [np.zeros((1, 4), np.float32), np.zeros((1, 5), np.float32)])
    assert (info.value.loc.line, info.value.loc.col) == (3, 16)  # b on the continuation line
    check_inputs(sig, [np.zeros((7, 4), np.float64), np.zeros((7, 4), np.uint8)])


def test_ragged_input_is_an_input_mismatch(mlp: tdsl.CompiledModel) -> None:
    with pytest.raises(InputMismatch, match="not an array"):
        check_inputs(forward_signature(mlp.module), [[[1.0, 2.0], [3.0]]])


def test_tdsl_run_with_a_wrong_shape_prints_the_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert tdsl_main(["run", "mlp", "--input-shape", "2,785"]) == 1
    err = capsys.readouterr().err
    assert "mlp.tdsl:17:16: error: input 'x' of forward of 'MLP' expects float32[?, 64]" in err
    assert "Traceback" not in err
