"""Hugging Face Hub over real HTTP: one-commit upload, cached download, failures, secrecy."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tdsl.errors import TdslError
from tdsl.publish.hf import fetch_hf, from_pretrained_path, publish_hf

from fake_hub import TOKEN  # loaded by conftest.py


def test_round_trip_in_one_commit(package: Path, onnx_file: Path, hub: Any, fast: Any, tmp_path: Path,
                                  tree: Any) -> None:
    from huggingface_hub import get_session

    session = get_session()
    timeout, hooks = session.timeout, list(session.event_hooks["request"])
    commit = publish_hf(package, "me/lenet", token=TOKEN, extra_files=[onnx_file], endpoint=hub.url,
                        message="first upload", policy=fast)
    assert [c["summary"] for c in hub.state.commit_log] == ["first upload"]
    assert commit.oid == hub.state.repos["me/lenet"]["branches"]["main"]
    assert hub.state.lfs, "the safetensors file should travel by LFS"
    assert get_session() is session, "the library's shared client (and its factory) stay the user's"
    assert (session.timeout, session.event_hooks["request"]) == (timeout, hooks), "the client's settings are restored"
    got = from_pretrained_path("me/lenet", token=TOKEN, endpoint=hub.url, cache_dir=tmp_path / "c", policy=fast)
    expected = tree(package)
    expected["model.onnx"] = onnx_file.read_bytes()
    got_files = {k: v for k, v in tree(got).items() if not k.startswith(".cache/")}  # the library's metadata
    got_files.pop(".gitattributes")
    assert got_files == expected
    assert not any(p.is_symlink() for p in got.rglob("*")), "a download is plain files (local_dir), loadable as is"
    assert hub.unhandled == []
    head = hub.state.repos["me/lenet"]["branches"]["main"]
    assert hub.requests("GET", rf"/api/models/me/lenet/(revision|tree)/{head}") and hub.requests("GET", "/resolve/")
    assert got == tmp_path / "c" / "me--lenet" / head  # one folder per commit



def test_republish_to_branch_and_private_repo(package: Path, hub: Any, fast: Any, tmp_path: Path) -> None:
    publish_hf(package, "me/lenet", token=TOKEN, endpoint=hub.url, private=True, policy=fast)
    (package / "config.json").write_text('{"version": 2}')
    publish_hf(package, "me/lenet", token=TOKEN, endpoint=hub.url, revision="v2", policy=fast)
    repo = hub.state.repos["me/lenet"]
    assert repo["private"] and set(repo["branches"]) == {"main", "v2"}
    old = from_pretrained_path("me/lenet", token=TOKEN, endpoint=hub.url, cache_dir=tmp_path / "c", policy=fast)
    new = from_pretrained_path("me/lenet", revision="v2", token=TOKEN, endpoint=hub.url, cache_dir=tmp_path / "c",
                               policy=fast)
    assert (new / "config.json").read_text() == '{"version": 2}' != (old / "config.json").read_text()


def test_download_is_cached(package: Path, hub: Any, fast: Any, tmp_path: Path) -> None:
    publish_hf(package, "me/lenet", token=TOKEN, endpoint=hub.url, policy=fast)
    kw = dict(token=TOKEN, endpoint=hub.url, cache_dir=tmp_path / "c", policy=fast)
    first = from_pretrained_path("me/lenet", **kw)
    n = len(hub.requests("GET", "/resolve/"))
    assert from_pretrained_path("me/lenet", **kw) == first
    assert len(hub.requests("GET", "/resolve/")) == n


def test_local_folder_is_returned_as_is(package: Path) -> None:
    assert from_pretrained_path(package) == package
    with pytest.raises(TdslError, match="no such package folder"):
        from_pretrained_path(str(package) + "-missing")


def test_fetch_hf_copies_into_dest(package: Path, hub: Any, fast: Any, tmp_path: Path, tree: Any) -> None:
    publish_hf(package, "me/lenet", token=TOKEN, endpoint=hub.url, policy=fast)
    got = fetch_hf("me/lenet", tmp_path / "out", token=TOKEN, endpoint=hub.url, cache_dir=tmp_path / "c",
                   policy=fast)
    assert got == tmp_path / "out" / "lenet" and not any(p.is_symlink() for p in got.rglob("*"))
    files = tree(got)
    files.pop(".gitattributes")
    assert files == tree(package)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["lenet"]


@pytest.mark.parametrize("token, message", [
    ("hf_wrong", r"creating the repository: the server refused the credentials \(401\)"),
    (None, r"creating the repository: the server refused the credentials \(401\)"),
])
def test_auth_failures(package: Path, hub: Any, fast: Any, token: str | None, message: str) -> None:
    with pytest.raises(TdslError, match=message):
        publish_hf(package, "me/lenet", token=token, endpoint=hub.url, policy=fast)
    assert hub.state.repos == {}


def test_missing_repo_and_revision(package: Path, hub: Any, fast: Any, tmp_path: Path) -> None:
    with pytest.raises(TdslError, match=r"me/none: downloading: repository not found \(404\)"):
        from_pretrained_path("me/none", endpoint=hub.url, cache_dir=tmp_path / "c", policy=fast)
    publish_hf(package, "me/lenet", token=TOKEN, endpoint=hub.url, policy=fast)
    with pytest.raises(TdslError, match=r"downloading revision nope: no such revision"):
        from_pretrained_path("me/lenet", revision="nope", endpoint=hub.url, cache_dir=tmp_path / "c", policy=fast)


def test_5xx_on_create_is_retried_then_reported(package: Path, hub: Any, fast: Any) -> None:
    hub.fault("POST", "/api/repos/create", status=503, times=1)
    publish_hf(package, "me/lenet", token=TOKEN, endpoint=hub.url, policy=fast)
    assert len(hub.requests("POST", "/api/repos/create")) == 2
    hub.fault("POST", "/api/repos/create", status=500, times=99)
    with pytest.raises(TdslError, match=r"creating the repository: the server answered 500 \(after 3 attempts\)"):
        publish_hf(package, "me/other", token=TOKEN, endpoint=hub.url, policy=fast)


def test_dropped_commit_answer_is_retried_to_the_same_tree(package: Path, hub: Any, fast: Any) -> None:
    hub.fault("POST", "/commit/main", drop=True, times=1)
    publish_hf(package, "me/lenet", token=TOKEN, endpoint=hub.url, policy=fast)
    oids = [c["oid"] for c in hub.state.commit_log]
    assert len(oids) == 2 and hub.state.commits[oids[0]] == hub.state.commits[oids[1]]


def test_dropped_download_is_resumed(package: Path, hub: Any, fast: Any, tmp_path: Path, tree: Any) -> None:
    """huggingface_hub resumes a cut download with a Range request; the bytes still match."""
    publish_hf(package, "me/lenet", token=TOKEN, endpoint=hub.url, policy=fast)
    hub.fault("GET", "/resolve/[0-9a-f]+/model.safetensors", drop=True, times=1)
    got = from_pretrained_path("me/lenet", endpoint=hub.url, cache_dir=tmp_path / "c", policy=fast)
    assert (got / "model.safetensors").read_bytes() == (package / "model.safetensors").read_bytes()
    assert len(hub.requests("GET", "/resolve/[0-9a-f]+/model.safetensors")) == 2


def test_failed_download_leaves_no_files_and_timeout_is_named(package: Path, hub: Any, fast: Any,
                                                               tmp_path: Path) -> None:
    from tdsl.publish.retry import NetPolicy

    publish_hf(package, "me/lenet", token=TOKEN, endpoint=hub.url, policy=fast)
    hub.fault("GET", "/resolve/[0-9a-f]+/config.json", status=502, times=99)
    out = tmp_path / "out"
    with pytest.raises(TdslError, match=r"me/lenet: downloading: the server answered 502"):
        fetch_hf("me/lenet", out, endpoint=hub.url, cache_dir=tmp_path / "c", policy=fast)
    assert not out.exists() or list(out.iterdir()) == []
    hub.faults.clear()
    hub.fault("GET", "/api/models/me/lenet", sleep=1.5, times=99)
    with pytest.raises(TdslError, match=r"no answer within 0.5s"):
        from_pretrained_path("me/lenet", endpoint=hub.url, cache_dir=tmp_path / "c2",
                             policy=NetPolicy(timeout=0.5, attempts=2, backoff=0.01))


def test_token_never_appears(package: Path, hub: Any, fast: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    publish_hf(package, "me/lenet", endpoint=hub.url, policy=fast)  # token from HF_TOKEN
    hub.fault("GET", "/api/models/", status=500, times=99)
    with pytest.raises(TdslError) as e:
        from_pretrained_path("me/lenet", endpoint=hub.url, cache_dir=tmp_path / "c", policy=fast)
    out, err = capfd.readouterr()
    for text in (out, err, caplog.text, e.value.render()):
        assert TOKEN not in text
    assert caplog.records and any(h.get("authorization") == f"Bearer {TOKEN}" for _, _, h in hub.log)
