"""torch.export (.pt2) and TorchScript (.pt) files of emitted models: same outputs at other
batch sizes, packed weights stay packed (small files), plain state dicts load with
`weights_only=True`, and TorchScript warns that it is deprecated."""
from __future__ import annotations

import warnings

import pytest
import torch

import tdsl
from tdsl.backends.torch.export import (
    example_inputs,
    export_program,
    export_torchscript,
    load_program,
    load_torchscript,
    module_and_program,
)

CASES = [("lenet", "fp32"), ("lenet", "fp16"), ("lenet", "int8"), ("lenet", "ternary"), ("mlp", "int8")]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def frozen(request):
    model, precision = request.param
    torch.manual_seed(0)
    return tdsl.quantize(model, precision=precision)


def test_pt2_round_trip_with_dynamic_batch(frozen, tmp_path):
    path = export_program(frozen, tmp_path / "m.pt2")
    loaded = load_program(path)
    for batch in (1, 5):
        (x,) = example_inputs(frozen.compiled, batch=batch, seed=batch)
        with torch.no_grad():
            assert torch.equal(loaded(x), frozen.module(x))


def test_torchscript_round_trip_warns_deprecated(frozen, tmp_path):
    with pytest.warns(FutureWarning, match="TorchScript is deprecated"):
        path = export_torchscript(frozen, tmp_path / "m.pt")
    loaded = load_torchscript(path)
    for batch in (1, 5):
        (x,) = example_inputs(frozen.compiled, batch=batch, seed=batch)
        with torch.no_grad():
            assert torch.equal(loaded(x), frozen.module(x))


def test_ternary_weights_stay_packed_in_both_files(tmp_path):
    torch.manual_seed(0)
    frozen = tdsl.quantize("lenet", precision="ternary")
    program = torch.export.load(str(export_program(frozen, tmp_path / "m.pt2")))
    tensors = {**program.state_dict, **program.constants}
    packed = {k: v for k, v in tensors.items() if k.endswith("_packed")}
    assert set(packed) == {k for k in frozen.state_dict() if k.endswith("_packed")}
    assert all(v.dtype == torch.uint8 for v in packed.values())
    assert not any(v.is_floating_point() and v.shape == (120, 16 * 2 * 2) for v in tensors.values())
    with pytest.warns(FutureWarning):
        script = load_torchscript(export_torchscript(frozen, tmp_path / "m.pt"))
    assert script.state_dict()["fc1.weight_packed"].dtype == torch.uint8


def test_state_dict_loads_with_weights_only(frozen, tmp_path):
    torch.save(frozen.module.state_dict(), tmp_path / "sd.pt")
    state = torch.load(tmp_path / "sd.pt", weights_only=True)
    fresh = frozen.compiled.to_torch().eval()
    fresh.load_state_dict(state, strict=True)
    (x,) = example_inputs(frozen.compiled, batch=3)
    with torch.no_grad():
        assert torch.equal(fresh(x), frozen.module(x))


def test_exported_module_state_dict_loads_with_weights_only(tmp_path):
    torch.manual_seed(0)
    frozen = tdsl.quantize("mlp", precision="ternary")
    exported = load_program(export_program(frozen, tmp_path / "m.pt2"))
    torch.save(exported.state_dict(), tmp_path / "ep_sd.pt")
    state = torch.load(tmp_path / "ep_sd.pt", weights_only=True)
    assert set(state) == set(frozen.state_dict())
    assert state["fc2.weight_packed"].dtype == torch.uint8


def test_export_from_a_loaded_package(tmp_path):
    torch.manual_seed(0)
    frozen = tdsl.quantize("mlp", precision="ternary", format="base3")
    pkg = tdsl.load(tdsl.save(frozen, tmp_path / "pkg"))
    loaded = load_program(export_program(pkg, tmp_path / "m.pt2"))
    (x,) = example_inputs(pkg.compiled, batch=4)
    with torch.no_grad():
        assert torch.equal(loaded(x), frozen.module(x))


def test_export_rejects_other_objects(tmp_path):
    with pytest.raises(tdsl.TdslError, match="expected a FrozenModel"):
        export_program(torch.nn.Linear(2, 2), tmp_path / "m.pt2")
    assert list(tmp_path.iterdir()) == []


def test_the_kind_of_model_is_its_interface_not_its_attributes(frozen, tmp_path):
    """An object holding a FrozenModel's attributes without deriving from `FrozenProgram` is refused."""
    from types import SimpleNamespace

    lookalike = SimpleNamespace(compiled=frozen.compiled, module=frozen.module, to_torch=frozen.compiled.to_torch)
    with pytest.raises(tdsl.TdslError, match="expected a FrozenModel, a loaded package or a CompiledModel"):
        export_program(lookalike, tmp_path / "m.pt2")
    net, program = module_and_program(frozen)
    assert net is frozen.module and program is frozen.compiled and not net.training


@pytest.mark.slow
def test_ternary_resnet18_pt2_is_far_smaller_than_fp32(tmp_path):
    params = {"num_classes": 10, "cifar_stem": True, "image_size": 32}
    weights = tdsl.compile("resnet18", params=params, pipeline="shape-infer").to_torch().state_dict()
    sizes = {}
    for precision in ("fp32", "ternary"):
        frozen = tdsl.quantize("resnet18", precision=precision, params=params, weights=weights)
        sizes[precision] = export_program(frozen, tmp_path / f"{precision}.pt2").stat().st_size
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            sizes[precision + ".pt"] = export_torchscript(frozen, tmp_path / f"{precision}.pt").stat().st_size
    assert sizes["fp32"] / sizes["ternary"] > 10
    assert sizes["fp32.pt"] / sizes["ternary.pt"] > 10
