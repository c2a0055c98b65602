"""Publish a real saved package, fetch it back over real HTTP (the loopback fakes), load it and
get the same outputs; and the failures: tampered assets, altered weights, refused or failing
uploads, none of which may leave a half-published release or a half-fetched folder.

The package is a ternary LeNet on 8x8 inputs (`lenet_package` in conftest.py, built once).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import fake_github  # loaded by conftest.py
import fake_hub
import tdsl
from tdsl.errors import TdslError
from tdsl.publish import retry
from tdsl.publish.github import fetch_github, publish_github
from tdsl.publish.hf import publish_hf
from tdsl.tools.tdsl_cli import main

NUMBA = importlib.util.find_spec("numba") is not None and importlib.util.find_spec("tdsl.backends.numba") is not None


@pytest.fixture(autouse=True)
def fast_default(monkeypatch: pytest.MonkeyPatch, fast: Any) -> None:
    monkeypatch.setattr(retry, "DEFAULT_POLICY", fast)  # the CLI and tdsl.from_pretrained use the default


def assert_same_model(pkg: Any, real: Any, *, numba: bool = False) -> None:
    """Same weights, bit-identical torch outputs; the Numba deploy within its int8-activation error."""
    ref_state = real.frozen.state_dict()
    assert sorted(pkg.arrays) == sorted(ref_state)
    for key, tensor in ref_state.items():
        assert np.array_equal(pkg.arrays[key], tensor.numpy()), key
    with torch.no_grad():
        y = pkg.to_torch()(torch.from_numpy(real.x))
    assert torch.equal(y, real.y)
    if numba and NUMBA:
        got = np.asarray(pkg.deploy("numba")(real.x))
        ref = real.y.numpy()
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()  # int8 activations in the Numba runtime


def tampered_copy(real: Any, dest: Path) -> Path:
    """The package with one byte of its weights flipped; config.json still records the old hash."""
    root = dest / real.path.name
    shutil.copytree(real.path, root)
    data = bytearray((root / "model.safetensors").read_bytes())
    data[-1] ^= 0x01
    (root / "model.safetensors").write_bytes(bytes(data))
    return root


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# -- round trips ---------------------------------------------------------------------------


def test_hub_round_trip_from_pretrained(lenet_package: Any, hub: Any, fast: Any, tmp_path: Path) -> None:
    real = lenet_package
    commit = publish_hf(real.path, "me/lenet-ternary", token=fake_hub.TOKEN, extra_files=[real.onnx],
                        endpoint=hub.url, policy=fast)
    assert commit.files == ["README.md", "config.json", "model.onnx", "model.safetensors"]
    assert len(hub.state.commit_log) == 1
    kw = {"endpoint": hub.url, "cache_dir": tmp_path / "cache", "policy": fast}
    pkg = tdsl.from_pretrained("me/lenet-ternary", **kw)
    assert pkg.config == json.loads((real.path / "config.json").read_text())
    assert (pkg.path / "model.onnx").read_bytes() == real.onnx.read_bytes()
    assert_same_model(pkg, real, numba=True)
    downloads = len(hub.requests("GET", "/resolve/"))
    again = tdsl.from_pretrained("me/lenet-ternary", commit.oid, **kw)  # by commit id, from the cache
    assert again.path == pkg.path and len(hub.requests("GET", "/resolve/")) == downloads
    assert hub.unhandled == []


def test_github_round_trip_fetch_and_load(lenet_package: Any, github: Any, gh_api: str, fast: Any,
                                          tmp_path: Path, tree: Any) -> None:
    real = lenet_package
    result = publish_github(real.path, "acme/models", "v1", token=fake_github.TOKEN, extra_files=[real.onnx],
                            base_url=gh_api, policy=fast)
    assert sorted(result.uploaded) == ["SHA256SUMS", "lenet-ternary.tar.gz", "model.onnx"]
    got = fetch_github("acme/models", "v1", tmp_path / "out", base_url=gh_api, policy=fast)
    assert tree(got) == {**tree(real.path), "model.onnx": real.onnx.read_bytes()}
    assert_same_model(tdsl.load(got), real, numba=True)
    assert github.unhandled == []


@pytest.mark.parametrize("target", ["hf", "github"])
def test_cli_round_trip_with_onnx_export(lenet_package: Any, hub: Any, github: Any, gh_api: str, target: str,
                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """`tdsl publish ... --with-onnx` exports model.onnx on the fly; `tdsl fetch` verifies, loads, summarises."""
    import onnx

    real = lenet_package
    out = tmp_path / "out"
    if target == "hf":
        publish = ["publish", "hf", "me/lenet-ternary", str(real.path), "--endpoint", hub.url,
                   "--token", fake_hub.TOKEN]
        fetch = ["fetch", "hf", "me/lenet-ternary", "-o", str(out), "--endpoint", hub.url]
    else:
        monkeypatch.setenv("GITHUB_TOKEN", fake_github.TOKEN)
        publish = ["publish", "github", "acme/models", str(real.path), "--tag", "v1", "--base-url", gh_api]
        fetch = ["fetch", "github", "acme/models", "--tag", "v1", "-o", str(out), "--base-url", gh_api]
    assert main([*publish, "--with-onnx"]) == 0
    assert main(fetch) == 0
    stdout, err = capsys.readouterr()
    path = Path(stdout.splitlines()[-1])
    assert path == out / "lenet-ternary" and listing(out) == ["lenet-ternary"]
    assert "exported model.onnx: opset" in err
    for line in ("loaded lenet: entry LeNet(image_size=8)", "precision ternary, packed format 2bit",
                 f"weights model.safetensors: {(real.path / 'model.safetensors').stat().st_size} bytes",
                 "inputs x: float32[batch, 1, 8, 8]", "also model.onnx"):
        assert line in err
    model = onnx.load(str(path / "model.onnx"))
    assert {p.key: p.value for p in model.metadata_props}["tdsl.entry"] == "LeNet"
    assert_same_model(tdsl.load(path), real)


def test_from_pretrained_and_numba_deploy_import_no_torch(lenet_package: Any, hub: Any, fast: Any,
                                                           tmp_path: Path) -> None:
    real = lenet_package
    publish_hf(real.path, "me/lenet-ternary", token=fake_hub.TOKEN, endpoint=hub.url, policy=fast)
    np.save(tmp_path / "x.npy", real.x)
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import tdsl
        pkg = tdsl.from_pretrained("me/lenet-ternary", endpoint={hub.url!r}, cache_dir={str(tmp_path / "c")!r})
        assert "torch" not in sys.modules, "from_pretrained imported torch"
        if {NUMBA!r}:
            y = np.asarray(pkg.deploy("numba")(np.load({str(tmp_path / "x.npy")!r})))
            np.save({str(tmp_path / "y.npy")!r}, y)
        assert "torch" not in sys.modules, "the Numba deploy imported torch"
        print("ok", pkg.name)
    """)
    env = {"HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_OFFLINE": "0"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env}, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ok", "lenet"]
    if NUMBA:
        ref = real.y.numpy()
        assert np.abs(np.load(tmp_path / "y.npy") - ref).max() < 0.05 * np.abs(ref).max()


# -- failures ------------------------------------------------------------------------------


def test_tampered_github_asset_is_refused_and_a_good_copy_kept(lenet_package: Any, github: Any, gh_api: str,
                                                               tmp_path: Path, tree: Any,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", fake_github.TOKEN)
    out = tmp_path / "out"
    argv = ["fetch", "github", "acme/models", "--tag", "v1", "-o", str(out), "--base-url", gh_api]
    assert main(["publish", "github", "acme/models", str(lenet_package.path), "--tag", "v1",
                 "--base-url", gh_api]) == 0
    assert main(argv) == 0
    before = tree(out)
    aid = next(a["id"] for a in github.state.assets.values() if a["name"] == "lenet-ternary.tar.gz")
    github.state.blobs[aid] = github.state.blobs[aid][:-1] + bytes([github.state.blobs[aid][-1] ^ 1])
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "lenet-ternary.tar.gz: checksum mismatch" in err and "Traceback" not in err
    assert listing(out) == ["lenet-ternary"] and tree(out) == before  # no staging folder, old copy intact
    shutil.rmtree(out)
    assert main(argv) == 1 and listing(out) == []


def test_release_whose_package_does_not_load_is_not_kept(lenet_package: Any, github: Any, gh_api: str,
                                                         fast: Any, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Checksums match (the sums were made from the bad package): loading is what refuses it."""
    bad = tampered_copy(lenet_package, tmp_path / "bad")
    publish_github(bad, "acme/models", "v1", token=fake_github.TOKEN, base_url=gh_api, policy=fast)
    out = tmp_path / "out"
    assert main(["fetch", "github", "acme/models", "--tag", "v1", "-o", str(out), "--base-url", gh_api]) == 1
    err = capsys.readouterr().err
    assert "the fetched package lenet-ternary does not load, so it was not kept" in err
    assert "lenet-ternary/model.safetensors: SHA-256 mismatch" in err and ".partial" not in err
    assert listing(out) == []


def test_hub_weights_altered_after_upload_are_refused(lenet_package: Any, hub: Any, fast: Any, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    publish_hf(lenet_package.path, "me/lenet-ternary", token=fake_hub.TOKEN, endpoint=hub.url, policy=fast)
    head = hub.state.repos["me/lenet-ternary"]["branches"]["main"]
    files = hub.state.commits[head]
    files["model.safetensors"] = files["model.safetensors"][:-1] + bytes([files["model.safetensors"][-1] ^ 1])
    with pytest.raises(TdslError, match=r"model.safetensors: SHA-256 mismatch: config.json records") as e:
        tdsl.from_pretrained("me/lenet-ternary", endpoint=hub.url, cache_dir=tmp_path / "c", policy=fast)
    assert e.value.message.startswith("me/lenet-ternary: the downloaded package does not load: ")
    assert f"{tmp_path / 'c'}/me--lenet-ternary/{head}/model.safetensors" in e.value.message  # the cached file
    out = tmp_path / "out"
    assert main(["fetch", "hf", "me/lenet-ternary", "-o", str(out), "--endpoint", hub.url]) == 1
    err = capsys.readouterr().err
    assert "does not load, so it was not kept" in err and "SHA-256 mismatch" in err
    assert listing(out) == []


@pytest.mark.parametrize("token, fault, message", [
    ("hf_wrong", None, r"creating the repository: the server refused the credentials \(401\)"),
    (fake_hub.TOKEN, {"status": 401}, r"committing 3 files: the server refused the credentials \(401\)"),
    (fake_hub.TOKEN, {"status": 503}, r"committing 3 files: the server answered 503 \(after 3 attempts\)"),
], ids=["wrong-token", "401-on-commit", "503-on-commit"])
def test_failed_hub_publish_leaves_no_package(lenet_package: Any, hub: Any, fast: Any, tmp_path: Path,
                                              token: str, fault: dict[str, Any] | None, message: str) -> None:
    if fault:
        hub.fault("POST", "/commit/main", times=99, **fault)
    with pytest.raises(TdslError, match=message):
        publish_hf(lenet_package.path, "me/lenet-ternary", token=token, endpoint=hub.url, policy=fast)
    repo = hub.state.repos.get("me/lenet-ternary")
    assert repo is None or list(hub.state.commits[repo["branches"]["main"]]) == [".gitattributes"]
    assert hub.state.commit_log == []
    with pytest.raises(TdslError, match="not found|not a tdsl model package"):
        tdsl.from_pretrained("me/lenet-ternary", endpoint=hub.url, cache_dir=tmp_path / "c", policy=fast)
    hub.faults.clear()
    publish_hf(lenet_package.path, "me/lenet-ternary", token=fake_hub.TOKEN, endpoint=hub.url, policy=fast)
    assert_same_model(tdsl.from_pretrained("me/lenet-ternary", endpoint=hub.url, cache_dir=tmp_path / "c2",
                                           policy=fast), lenet_package)


@pytest.mark.parametrize("token, fault, message", [
    ("wrong-token", None, r"refused the credentials \(401\)"),
    (fake_github.TOKEN, {"status": 401}, r"uploading lenet-ternary.tar.gz: the server refused the credentials"),
    (fake_github.TOKEN, {"status": 500}, r"uploading lenet-ternary.tar.gz: the server answered 500"),
], ids=["wrong-token", "401-on-upload", "500-on-upload"])
def test_failed_github_publish_leaves_no_release(lenet_package: Any, github: Any, gh_api: str, fast: Any,
                                                 tmp_path: Path, token: str, fault: dict[str, Any] | None,
                                                 message: str) -> None:
    if fault:
        github.fault("POST", "/api/uploads/.*/assets", times=99, **fault)
    with pytest.raises(TdslError, match=message):
        publish_github(lenet_package.path, "acme/models", "v1", token=token, extra_files=[lenet_package.onnx],
                       base_url=gh_api, policy=fast)
    assert github.state.releases == {} and github.state.assets == {}
    with pytest.raises(TdslError, match="no release with tag 'v1'"):
        fetch_github("acme/models", "v1", tmp_path / "out", base_url=gh_api, policy=fast)
    github.faults.clear()
    publish_github(lenet_package.path, "acme/models", "v1", token=fake_github.TOKEN,
                   extra_files=[lenet_package.onnx], base_url=gh_api, policy=fast)
    got = fetch_github("acme/models", "v1", tmp_path / "out", base_url=gh_api, policy=fast)
    assert (got / "model.onnx").is_file()
    assert_same_model(tdsl.load(got), lenet_package)
