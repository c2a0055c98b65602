"""A damaged or hostile package is a TdslError naming the file and the problem, and
nothing is built: file-level problems stop before the source is compiled."""
from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import tdsl
import tdsl.package.reader as reader


@pytest.fixture
def pkg(lenet_package, tmp_path):
    copy = tmp_path / "pkg"
    shutil.copytree(lenet_package, copy)
    return copy


@pytest.fixture
def no_compile(monkeypatch):
    """Fail the test if loading gets as far as compiling the stored source."""
    def refuse(*args, **kwargs):
        raise AssertionError("the package was compiled despite a file-level problem")

    monkeypatch.setattr(reader, "build_frozen_program", refuse)


def _config(pkg):
    return json.loads((pkg / "config.json").read_text())


def _write_config(pkg, config):
    (pkg / "config.json").write_text(json.dumps(config))


def _rehash(pkg):
    config = _config(pkg)
    config["weights"]["sha256"] = hashlib.sha256((pkg / "model.safetensors").read_bytes()).hexdigest()
    _write_config(pkg, config)


def _rewrite_weights(pkg, change):
    arrays = load_file(str(pkg / "model.safetensors"))
    change(arrays)
    save_file(arrays, str(pkg / "model.safetensors"))
    _rehash(pkg)


def _fails(pkg, *fragments):
    with pytest.raises(tdsl.TdslError) as info:
        tdsl.load(pkg)
    text = str(info.value)
    for fragment in fragments:
        assert fragment in text, text
    return text


def test_the_untouched_copy_loads(pkg):
    assert tdsl.load(pkg).compiled.entry == "LeNet"


def test_hash_mismatch(pkg, no_compile):
    data = bytearray((pkg / "model.safetensors").read_bytes())
    data[-1] ^= 0x01
    (pkg / "model.safetensors").write_bytes(bytes(data))
    _fails(pkg, "model.safetensors", "SHA-256 mismatch")


def test_truncated_weights(pkg, no_compile):
    data = (pkg / "model.safetensors").read_bytes()
    (pkg / "model.safetensors").write_bytes(data[: len(data) // 2])
    _rehash(pkg)
    _fails(pkg, "model.safetensors", "not a valid safetensors file")


@pytest.mark.parametrize("data", [b"", b"\x00" * 4, (2**40).to_bytes(8, "little") + b"{}",
                                  (7).to_bytes(8, "little") + b"{oops!}", b"PK\x03\x04 a pickle zip"])
def test_corrupt_weights(pkg, no_compile, data):
    (pkg / "model.safetensors").write_bytes(data)
    _rehash(pkg)
    _fails(pkg, "model.safetensors", "not a valid safetensors file")


def test_missing_tensor(pkg):
    _rewrite_weights(pkg, lambda a: a.pop("fc2.weight_packed"))
    _fails(pkg, "model.safetensors", "missing tensor fc2.weight_packed")


def test_extra_tensor(pkg):
    _rewrite_weights(pkg, lambda a: a.update({"backdoor.weight": np.zeros(3, np.float32)}))
    _fails(pkg, "model.safetensors", "unexpected tensor backdoor.weight")


def test_wrong_shape(pkg):
    _rewrite_weights(pkg, lambda a: a.update({"fc1.bias": np.zeros(121, np.float32)}))
    _fails(pkg, "model.safetensors", "'fc1.bias' is float32 (121,)", "float32 (120,)")


def test_wrong_dtype(pkg):
    _rewrite_weights(pkg, lambda a: a.update({"conv1.weight": a["conv1.weight"].astype(np.float32)}))
    _fails(pkg, "model.safetensors", "'conv1.weight' is float32", "float16")


def test_packed_weights_as_float_are_refused(pkg):
    _rewrite_weights(pkg, lambda a: a.update({"fc2.weight_packed": a["fc2.weight_packed"].astype(np.float32)}))
    _fails(pkg, "'fc2.weight_packed' is float32", "uint8")


def test_newer_format_version(pkg, no_compile):
    config = _config(pkg)
    config["format_version"] = 2
    _write_config(pkg, config)
    _fails(pkg, "config.json", "format version 2 is newer", "upgrade tdsl")


def test_malformed_json(pkg, no_compile):
    (pkg / "config.json").write_text('{"format": "tdsl-package", "format_version": 1,')
    _fails(pkg, "config.json", "malformed JSON at line 1")


@pytest.mark.parametrize("field,value,message", [
    ("format", "pickle", "not a tdsl package config"),
    ("pipeline", 3, "field 'pipeline' must be str"),
    ("format_version", True, "field 'format_version' must be int"),
    ("weights", {"file": "model.safetensors"}, "missing field 'weights.sha256'"),
])
def test_bad_config_fields(pkg, no_compile, field, value, message):
    config = _config(pkg)
    config[field] = value
    _write_config(pkg, config)
    _fails(pkg, "config.json", message)


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "sub/model.safetensors", "..", "a\\b"])
def test_weights_path_that_escapes(pkg, no_compile, name):
    config = _config(pkg)
    config["weights"]["file"] = name
    _write_config(pkg, config)
    _fails(pkg, "config.json", repr(name), "not a plain file name")


def test_symlinked_weights(pkg, tmp_path, no_compile):
    outside = tmp_path / "outside.safetensors"
    shutil.move(pkg / "model.safetensors", outside)
    os.symlink(outside, pkg / "model.safetensors")
    _fails(pkg, "model.safetensors", "symbolic link")


def test_symlinked_config(pkg, tmp_path, no_compile):
    outside = tmp_path / "config.json"
    shutil.move(pkg / "config.json", outside)
    os.symlink(outside, pkg / "config.json")
    _fails(pkg, "config.json", "symbolic link")


def test_missing_files(pkg, no_compile):
    (pkg / "model.safetensors").unlink()
    _fails(pkg, "model.safetensors", "missing")
    (pkg / "config.json").unlink()
    _fails(pkg, "config.json", "missing")
    _fails(pkg / "nowhere", "no such package folder")


def test_source_that_does_not_compile(pkg):
    config = _config(pkg)
    config["model"]["source"] = "layer LeNet( {\n"
    _write_config(pkg, config)
    _fails(pkg, "config.json", "the stored model does not compile")


def test_different_model_in_the_source(pkg):
    config = _config(pkg)
    config["model"]["params"] = {"num_classes": 12}
    _write_config(pkg, config)
    _fails(pkg, "model.safetensors", "'fc3.weight' is float16 (10, 84)", "(12, 84)")


# ---- issue 22: every read bounded, values and metadata checked ----------------------------------


def test_a_deeply_nested_config_is_refused_without_recursing(pkg, no_compile):
    (pkg / "config.json").write_text("[" * 200_000 + "]" * 200_000)
    _fails(pkg, "config.json", "JSON nested 200000 levels deep")


def test_an_integer_of_thousands_of_digits_is_refused(pkg, no_compile):
    config = (pkg / "config.json").read_text()
    (pkg / "config.json").write_text(config.replace('"format_version": 1', '"format_version": ' + "9" * 5000))
    _fails(pkg, "config.json", "an integer of 5000 digits")


def test_nan_in_the_config_is_refused(pkg, no_compile):
    config = (pkg / "config.json").read_text()
    (pkg / "config.json").write_text(config.replace('"format_version": 1', '"format_version": NaN'))
    _fails(pkg, "NaN is not a JSON number")


def test_a_file_name_too_long_for_the_file_system_is_refused(pkg, no_compile):
    config = _config(pkg)
    config["weights"]["file"] = "w" * 5000
    _write_config(pkg, config)
    _fails(pkg, "the weights file has a name of 5000 bytes")
    with pytest.raises(tdsl.TdslError, match="the package path has a name of 5000 bytes"):
        tdsl.load(pkg / ("p" * 5000))


def test_a_dtype_numpy_lacks_in_the_header_is_refused(pkg, no_compile):
    data = (pkg / "model.safetensors").read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    key = next(k for k in header if k != "__metadata__")
    header[key]["dtype"] = "F8_E4M3"
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    (pkg / "model.safetensors").write_bytes(len(text).to_bytes(8, "little") + text + data[8 + size:])
    _rehash(pkg)
    _fails(pkg, "model.safetensors", f"tensor '{key}' has dtype 'F8_E4M3'")


def test_non_finite_weights_are_refused(pkg):
    def poison(arrays):
        key = next(k for k, a in arrays.items() if a.dtype == np.float32 and a.size > 1)
        arrays[key] = arrays[key].copy()
        arrays[key].flat[1] = np.nan

    _rewrite_weights(pkg, poison)
    _fails(pkg, "model.safetensors", "holds nan at index", "must be finite")


def test_a_negative_batch_norm_variance_is_refused(lenet_ternary, tmp_path):
    import torch

    torch.manual_seed(0)
    frozen = tdsl.quantize("resnet18", precision="ternary", params={"num_classes": 10, "cifar_stem": True,
                                                                     "image_size": 32})
    pkg = tdsl.save(frozen, tmp_path / "resnet")

    def negative(arrays):
        key = next(k for k in arrays if k.endswith("running_var"))
        arrays[key] = -np.abs(arrays[key]) - 1

    _rewrite_weights(pkg, negative)
    _fails(pkg, "running_var' (a batch-norm variance) is negative")


@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("precision", "fp32", "says 'fp32', but the stored program holds 3 ternary, 2 fp16"),
    ("precision", "fp7", "says 'fp7'"),
    ("packed", False, "'precision.packed' says False"),
    ("weights", {"conv1.weight": "int8"}, "lists 0 ternary weight(s), but the stored program holds 3 ternary"),
])
def test_metadata_is_checked_against_the_stored_program(pkg, field, value, fragment):
    config = _config(pkg)
    config["precision"][field] = value
    _write_config(pkg, config)
    _fails(pkg, "config.json", fragment)


def test_saving_non_finite_weights_is_refused(lenet_ternary, tmp_path):
    import torch

    state = lenet_ternary.module.state_dict()
    key = next(k for k, v in state.items() if v.dtype == torch.float32 and v.numel() > 1)
    with torch.no_grad():
        saved = state[key].clone()
        dict(lenet_ternary.module.named_buffers(), **dict(lenet_ternary.module.named_parameters()))[key].view(-1)[0] = \
            float("inf")
    try:
        with pytest.raises(tdsl.TdslError, match="must be finite"):
            tdsl.save(lenet_ternary, tmp_path / "bad")
        assert not (tmp_path / "bad").exists()
    finally:
        with torch.no_grad():
            dict(lenet_ternary.module.named_buffers(), **dict(lenet_ternary.module.named_parameters()))[key].copy_(saved)
