"""save -> load gives the same outputs, bit for bit, on the torch backend, for every zoo
model at every precision; the package holds what config.json and the card promise."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import tdsl
from tdsl.package.layout import expected_tensors

from .conftest import INPUT_SHAPES, ZOO_CASES

PRECISIONS = [("fp32", "2bit"), ("fp16", "2bit"), ("int8", "2bit"), ("ternary", "2bit"), ("ternary", "base3")]
SLOW = {"resnet18", "mobilenetv2"}


def _cases():
    for model in ZOO_CASES:
        for precision, fmt in PRECISIONS:
            marks = [pytest.mark.slow] if model in SLOW else []
            yield pytest.param(model, precision, fmt, marks=marks, id=f"{model}-{precision}-{fmt}")


@pytest.mark.parametrize("model,precision,fmt", list(_cases()))
def test_outputs_bitwise_equal_after_save_and_load(model, precision, fmt, tmp_path):
    torch.manual_seed(0)
    frozen = tdsl.quantize(model, precision=precision, format=fmt, params=ZOO_CASES[model])
    x = torch.randn(*INPUT_SHAPES[model])
    with torch.no_grad():
        before = frozen.module(x)
    pkg = tdsl.load(tdsl.save(frozen, tmp_path / "pkg"))
    net = pkg.to_torch()
    with torch.no_grad():
        after = net(x)
    assert torch.equal(before, after)
    # The stored weights are the frozen state dict itself: packed trits stay uint8.
    sd = frozen.state_dict()
    assert set(pkg.arrays) == set(sd)
    for key, value in sd.items():
        assert np.array_equal(pkg.arrays[key], value.numpy()), key
        assert pkg.arrays[key].dtype == value.numpy().dtype, key
    if precision == "ternary":
        packed = [k for k in sd if k.endswith("_packed")]
        assert packed and all(pkg.arrays[k].dtype == np.uint8 for k in packed)
        assert pkg.config["packed_format"] == {"name": fmt, "version": 1}


@pytest.mark.parametrize("model", ["mlp", "lenet", pytest.param("resnet18", marks=pytest.mark.slow),
                                   pytest.param("mobilenetv2", marks=pytest.mark.slow)])
@pytest.mark.parametrize("precision", ["fp32", "int8", "ternary"])
def test_torch_free_layout_matches_the_emitted_state_dict(model, precision):
    torch.manual_seed(0)
    frozen = tdsl.quantize(model, precision=precision, params=ZOO_CASES[model])
    expected = {k: (s.dtype, s.shape) for k, s in expected_tensors(frozen.compiled.module).items()}
    actual = {k: (str(v.dtype).removeprefix("torch."), tuple(v.shape)) for k, v in frozen.state_dict().items()}
    assert expected == actual


def test_config_schema_and_card(lenet_ternary, lenet_package):
    config = json.loads((lenet_package / "config.json").read_text())
    assert sorted(p.name for p in lenet_package.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert config["format"] == "tdsl-package" and config["format_version"] == 1
    assert config["tdsl_version"] == tdsl.__version__
    assert config["model"]["zoo_name"] == "lenet" and config["model"]["entry"] == "LeNet"
    assert "layer LeNet" in config["model"]["source"]
    assert config["pipeline"] == "shape-infer,ternarize{threshold=twn per-channel=true policy=default}"
    assert config["precision"]["weights"] == {"conv1.weight": "fp16", "conv2.weight": "ternary",
                                              "fc1.weight": "ternary", "fc2.weight": "ternary",
                                              "fc3.weight": "fp16"}
    assert config["inputs"] == [{"name": "x", "shape": [None, 1, 8, 8], "dtype": "float32"}]
    assert config["outputs"][0]["shape"] == [None, 10]
    import hashlib

    data = (lenet_package / "model.safetensors").read_bytes()
    assert config["weights"] == {"file": "model.safetensors", "sha256": hashlib.sha256(data).hexdigest(),
                                 "bytes": len(data)}
    card = (lenet_package / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: tdsl")
    assert f"**{lenet_ternary.memory_report().total:,}**" in card
    assert "tdsl.load(" in card and "shape-infer,ternarize" in card


def test_weights_file_is_the_memory_report_plus_a_header(lenet_ternary, lenet_package):
    size = (lenet_package / "model.safetensors").stat().st_size
    total = lenet_ternary.memory_report().total
    assert total < size < total + 8 * 1024


def test_save_compiled_model_with_module_and_text_source(tmp_path):
    source = (tdsl.models.zoo_path("mlp").read_text())
    compiled = tdsl.compile(source, params={"hidden": 16})
    torch.manual_seed(1)
    net = compiled.to_torch().eval()
    with pytest.raises(tdsl.TdslError, match="pass source="):
        tdsl.save(compiled, tmp_path / "a", module=net)
    with pytest.raises(tdsl.TdslError, match="module="):
        tdsl.save(compiled, tmp_path / "a")
    pkg = tdsl.load(tdsl.save(compiled, tmp_path / "a", module=net, source=source))
    x = torch.randn(4, 64)
    with torch.no_grad():
        assert torch.equal(pkg.to_torch()(x), net(x))
    assert pkg.config["pipeline"] == "shape-infer,canonicalize"
    assert pkg.config["model"]["zoo_name"] is None and pkg.config["model"]["params"] == {"hidden": 16}


def test_the_pipeline_with_its_options_is_recorded_and_checked(tmp_path):
    from tdsl.precision import pipeline_for

    frozen = tdsl.quantize("mlp", precision="ternary", threshold="absmean", policy="all")
    spec = pipeline_for("ternary", threshold="absmean", policy="all")
    assert frozen.compiled.pipeline == spec
    with pytest.raises(tdsl.TdslError, match="does not give the model's program"):
        tdsl.save(frozen, tmp_path / "p", pipeline=pipeline_for("ternary"))
    assert not (tmp_path / "p").exists()
    pkg = tdsl.load(tdsl.save(frozen, tmp_path / "p"))
    assert pkg.config["pipeline"] == spec
    x = torch.randn(3, 64)
    with torch.no_grad():
        assert torch.equal(pkg.to_torch()(x), frozen.module.eval()(x))


def test_overwrite_only_replaces_a_package(lenet_ternary, tmp_path):
    target = tmp_path / "pkg"
    tdsl.save(lenet_ternary, target)
    with pytest.raises(tdsl.TdslError, match="already exists"):
        tdsl.save(lenet_ternary, target)
    tdsl.save(lenet_ternary, target, overwrite=True)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(tdsl.TdslError, match="not a tdsl package"):
        tdsl.save(lenet_ternary, other, overwrite=True)
    assert (other / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "pkg"]


def test_failed_save_leaves_no_temporary_folder(lenet_ternary, tmp_path, monkeypatch):
    import tdsl.package.writer as writer

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer, "_write_card", boom)
    with pytest.raises(OSError):
        tdsl.save(lenet_ternary, tmp_path / "pkg")
    assert list(tmp_path.iterdir()) == []


def test_loading_never_unpickles(lenet_package, monkeypatch):
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling during load")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    net = tdsl.load(lenet_package).to_torch()
    assert isinstance(net, torch.nn.Module)


def test_deploy_on_numba_or_a_clear_error(lenet_package):
    import importlib.util

    pkg = tdsl.load(lenet_package)
    with pytest.raises(tdsl.TdslError, match="unknown deployment backend"):
        pkg.deploy("tensorrt")
    if importlib.util.find_spec("tdsl.backends.numba") is None:
        with pytest.raises(tdsl.TdslError, match="Numba backend is not available"):
            pkg.deploy("numba")
        return
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    y = np.asarray(pkg.deploy("numba")(x))
    with torch.no_grad():
        ref = pkg.to_torch()(torch.from_numpy(x)).numpy()
    assert y.shape == ref.shape
    assert np.abs(y - ref).max() < 0.05 * np.abs(ref).max()  # int8 activations in the Numba runtime


def test_a_loaded_package_saves_again_unchanged(lenet_package, tmp_path):
    first = tdsl.load(lenet_package)
    tdsl.save(first, tmp_path / "again")
    second = tdsl.load(tmp_path / "again")
    assert second.config["model"] == first.config["model"] and second.config["pipeline"] == first.config["pipeline"]
    assert set(second.arrays) == set(first.arrays)
    assert all(np.array_equal(second.arrays[k], first.arrays[k]) for k in first.arrays)
