"""Runtime inputs are checked against the entry forward's declared signature on every backend:
the Numba deployment, the emitted torch module, a loaded package and `tdsl run`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tdsl
from tdsl.signature import InputMismatch, check_inputs, check_shapes, forward_signature
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

    from tdsl.model.frozen import freeze

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


def test_shapes_are_checked_without_an_input(mlp: tdsl.CompiledModel) -> None:
    """`check_shapes` refuses what `check_inputs` would, from the shapes alone (nothing allocated)."""
    sig = forward_signature(mlp.module)
    for shape, message in [((4294967296,), r"expects rank 2 \(float32\[\?, 64\]\), got rank 1 \(float32\[4294967296\]\)"),
                           ((2, 785), "dim 1 is 785, not 64"), ((0, 64), "dim 0 is empty")]:
        with pytest.raises(InputMismatch, match=message):
            check_shapes(sig, [shape], "float32")
    with pytest.raises(InputMismatch, match=r"takes 1 input\(s\) \(x\), got 2"):
        check_shapes(sig, [(2, 64), (2, 64)], "float32")
    check_shapes(sig, [(10**9, 64)], "float32")  # dynamic batch: any size fits the signature


def test_tdsl_run_with_a_wrong_shape_prints_the_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert tdsl_main(["run", "mlp", "--input-shape", "2,785"]) == 1
    err = capsys.readouterr().err
    assert "mlp.tdsl:17:16: error: input 'x' of forward of 'MLP' expects float32[?, 64]" in err
    assert "Traceback" not in err


def _as_torch_dtype(x: np.ndarray, kind: str):
    import torch

    a = torch.from_numpy(x)
    return {"float64": a.double(), "float16": a.half(), "int32": a.round().int(), "uint8": a.round().clamp(0, 9).byte(),
            "list": a.round().tolist(), "numpy64": a.double().numpy()}[kind]


@pytest.mark.parametrize("kind", ["float64", "float16", "int32", "uint8", "list", "numpy64"])
def test_other_dtypes_are_converted_the_same_on_every_backend(mlp: tdsl.CompiledModel, kind: str) -> None:
    """Issue 22: a float64/float16/int/uint8 tensor or a list reached torch's kernels and failed
    there (`mat1 and mat2 must have the same dtype`, a list an AttributeError); the signature
    check converts it to the declared float32 on the torch module and the Numba deployment alike."""
    import torch

    torch.manual_seed(0)
    module = mlp.to_torch().eval()
    frozen = mlp.freeze(module)
    x = _as_torch_dtype(np.random.default_rng(0).normal(0, 3, (3, 64)).astype(np.float32), kind)
    as_f32 = torch.as_tensor(np.asarray(x.numpy() if isinstance(x, torch.Tensor) else x), dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(module(x), module(as_f32))
    deployed = frozen.deploy("numba", act_quant="float")
    np.testing.assert_allclose(np.asarray(deployed(x)), np.asarray(deployed(as_f32)), rtol=0, atol=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("backend", ["torch", "numba-int8", "numba-float"])
def test_non_finite_inputs_are_refused_by_name_on_every_backend(mlp: tdsl.CompiledModel, bad: float,
                                                                  backend: str) -> None:
    """Issue 22: NaN/Inf into a Numba deployment with int8 activations came back finite (torch
    returned NaN); every backend now refuses it, naming the argument and the first index."""
    import torch

    torch.manual_seed(0)
    module = mlp.to_torch().eval()
    run = module if backend == "torch" else mlp.freeze(module).deploy("numba", act_quant=backend.split("-")[1])
    x = np.zeros((2, 64), np.float32)
    x[1, 5] = bad
    with pytest.raises(InputMismatch, match=r"input 'x' of forward of 'MLP' holds (NaN|Inf) at index \[1, 5\]"):
        run(torch.from_numpy(x) if backend == "torch" else x)
    big = np.full((2, 64), 1e300)  # finite in float64, Inf once in float32
    with pytest.raises(InputMismatch, match="beyond float32's range"):
        run(torch.from_numpy(big) if backend == "torch" else big)


def test_a_call_too_big_for_memory_is_refused_with_the_number(mlp: tdsl.CompiledModel) -> None:
    """Issue 22: a huge batch ended in `DefaultCPUAllocator: can't allocate memory`; the check
    says how many bytes the call would need before torch allocates any."""
    import torch

    torch.manual_seed(0)
    module = mlp.to_torch().eval()
    huge = torch.zeros(1, 64).expand(10**12, 64)  # no memory behind it
    for run, x in ((module, huge), (mlp.freeze(module).deploy("numba"), np.broadcast_to(np.zeros((1, 64)), (10**12, 64)))):
        with pytest.raises(InputMismatch, match=r"needs [\d,]+ bytes \([\d.]+ TiB\) but only .* available"):
            run(x)
