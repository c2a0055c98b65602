"""`tdsl publish` / `tdsl fetch` in-process: round trips through both fakes, errors exit 1 without tracebacks."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import fake_github  # loaded by conftest.py
import fake_hub
from tdsl.publish import retry
from tdsl.tools.tdsl_cli import main


@pytest.fixture(autouse=True)
def fast_default(monkeypatch: pytest.MonkeyPatch, fast: Any) -> None:
    monkeypatch.setattr(retry, "DEFAULT_POLICY", fast)


def test_github_publish_then_fetch(lenet_package: Any, onnx_file: Path, github: Any, gh_api: str, tmp_path: Path,
                                   tree: Any, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    package = lenet_package.path
    monkeypatch.setenv("GITHUB_TOKEN", fake_github.TOKEN)
    assert main(["publish", "github", "acme/models", str(package), "--tag", "v1", "--notes", "hello",
                 "--onnx", str(onnx_file), "--base-url", gh_api]) == 0
    assert main(["fetch", "github", "acme/models", "--tag", "v1", "-o", str(tmp_path / "out"),
                 "--base-url", gh_api]) == 0
    out, err = capsys.readouterr()
    assert "lenet-ternary.tar.gz  (uploaded)" in out and "verified against SHA256SUMS" in err
    assert "loaded lenet: entry LeNet(image_size=8)" in err and "also model.onnx" in err
    assert fake_github.TOKEN not in out + err
    assert out.splitlines()[-1] == str(tmp_path / "out" / "lenet-ternary")
    assert tree(tmp_path / "out" / "lenet-ternary") == {**tree(package), "model.onnx": onnx_file.read_bytes()}


def test_hf_publish_then_fetch(lenet_package: Any, hub: Any, tmp_path: Path, tree: Any,
                               capsys: pytest.CaptureFixture[str]) -> None:
    package = lenet_package.path
    assert main(["publish", "hf", "me/lenet", str(package), "--token", fake_hub.TOKEN, "--endpoint", hub.url,
                 "--message", "v1"]) == 0
    assert main(["fetch", "hf", "me/lenet", "-o", str(tmp_path / "out"), "--endpoint", hub.url]) == 0
    out, err = capsys.readouterr()
    assert out.strip().endswith(str(tmp_path / "out" / "lenet"))
    assert "precision ternary" in err
    assert fake_hub.TOKEN not in out + err
    assert tree(tmp_path / "out" / "lenet")["config.json"] == (package / "config.json").read_bytes()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["lenet"]



def test_fetch_into_an_existing_package_needs_force(lenet_package: Any, hub: Any, tmp_path: Path, tree: Any,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["publish", "hf", "me/lenet", str(lenet_package.path), "--token", fake_hub.TOKEN,
                 "--endpoint", hub.url]) == 0
    fetch = ["fetch", "hf", "me/lenet", "-o", str(tmp_path / "out"), "--endpoint", hub.url]
    assert main(fetch) == 0
    target = tmp_path / "out" / "lenet"
    (target / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(fetch) == 1
    err = capsys.readouterr().err
    assert f"{target} already exists; pass --force to replace it" in err and "Traceback" not in err
    assert (target / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["lenet"]  # no staging folder left
    assert main([*fetch, "--force"]) == 0
    assert not (target / "notes.txt").exists()

@pytest.mark.parametrize("argv, message", [
    (["publish", "github", "acme/models", "{missing}", "--tag", "v1"], "not a folder"),
    (["publish", "github", "not-a-repo", "{package}", "--tag", "v1", "--token", "t"], "not a GitHub repository name"),
    (["publish", "hf", "me/x", "{package}", "--onnx", "{missing}"], "no such file"),
])
def test_user_errors_exit_1_with_one_diagnostic(package: Path, tmp_path: Path, argv: list[str], message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a.format(package=package, missing=tmp_path / "missing") for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
