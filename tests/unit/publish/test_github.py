"""GitHub Releases over real HTTP: round trips, re-runs, verification, failures, secrecy."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tdsl.errors import TdslError
from tdsl.publish.github import fetch_github, publish_github

from fake_github import TOKEN  # loaded by conftest.py


def test_round_trip_is_byte_for_byte(package: Path, onnx_file: Path, github: Any, gh_api: str, fast: Any,
                                     tmp_path: Path, tree: Any) -> None:
    result = publish_github(package, "acme/models", "v1", notes="First cut.", token=TOKEN,
                            extra_files=[onnx_file], base_url=gh_api, policy=fast)
    assert sorted(result.uploaded) == ["SHA256SUMS", "lenet-ternary.tar.gz", "model.onnx"]
    rel = next(iter(github.state.releases.values()))
    assert rel["draft"] is False
    assert "First cut." in rel["body"] and result.sums["lenet-ternary.tar.gz"] in rel["body"]
    got = fetch_github("acme/models", "v1", tmp_path / "out", base_url=gh_api, policy=fast)
    assert got == tmp_path / "out" / "lenet-ternary"
    expected = tree(package)
    expected["model.onnx"] = onnx_file.read_bytes()
    assert tree(got) == expected
    assert github.unhandled == []


def _publish(package: Path, gh_api: str, fast: Any, **kw: Any) -> Any:
    return publish_github(package, "acme/models", "v1", token=TOKEN, base_url=gh_api, policy=fast, **kw)


def test_tarball_is_deterministic_and_rerun_skips_everything(package: Path, github: Any, gh_api: str,
                                                              fast: Any) -> None:
    first = _publish(package, gh_api, fast)
    (package / "config.json").touch()  # a new mtime must not change the archive
    writes_before = len(github.requests("POST")) + len(github.requests("DELETE"))
    again = _publish(package, gh_api, fast)
    assert again.sums == first.sums
    assert sorted(again.skipped) == ["SHA256SUMS", "lenet-ternary.tar.gz"] and again.uploaded == []
    assert len(github.requests("POST")) + len(github.requests("DELETE")) == writes_before
    assert len(github.state.assets) == 2


def test_changed_package_replaces_assets_and_sums(package: Path, github: Any, gh_api: str, fast: Any,
                                                  tmp_path: Path, tree: Any) -> None:
    first = _publish(package, gh_api, fast)
    (package / "config.json").write_text('{"version": 2}')
    second = _publish(package, gh_api, fast)
    assert sorted(second.replaced) == ["SHA256SUMS", "lenet-ternary.tar.gz"]
    assert second.sums["lenet-ternary.tar.gz"] != first.sums["lenet-ternary.tar.gz"]
    assert sorted(a["name"] for a in github.state.assets.values()) == ["SHA256SUMS", "lenet-ternary.tar.gz"]
    rel = next(iter(github.state.releases.values()))
    assert rel["draft"] is False and second.sums["lenet-ternary.tar.gz"] in rel["body"]
    got = fetch_github("acme/models", "v1", tmp_path / "out", base_url=gh_api, policy=fast)
    assert tree(got) == tree(package)


def test_draft_release_is_found_and_reused(package: Path, github: Any, gh_api: str, fast: Any) -> None:
    assert _publish(package, gh_api, fast, draft=True).draft
    _publish(package, gh_api, fast, draft=False)
    (rel,) = github.state.releases.values()
    assert rel["draft"] is False and len(github.state.assets) == 2


def test_failed_upload_deletes_the_new_release(package: Path, github: Any, gh_api: str, fast: Any) -> None:
    github.fault("POST", "/api/uploads/.*/assets", status=500, times=99)
    with pytest.raises(TdslError, match=r"uploading lenet-ternary.tar.gz: the server answered 500") as e:
        _publish(package, gh_api, fast)
    assert "created by this run was deleted" in e.value.render()
    assert github.state.releases == {} and github.state.assets == {}
    assert len(github.requests("POST", "/api/uploads/")) == fast.attempts


def test_failed_replacement_leaves_a_draft_never_wrong_sums(package: Path, github: Any, gh_api: str,
                                                             fast: Any) -> None:
    _publish(package, gh_api, fast)
    (package / "config.json").write_text('{"version": 2}')
    github.fault("POST", "/api/uploads/.*/assets", status=503, times=99)
    with pytest.raises(TdslError) as e:
        _publish(package, gh_api, fast)
    assert "left as a draft" in e.value.render()
    (rel,) = github.state.releases.values()
    assert rel["draft"] is True
    github.faults.clear()
    result = _publish(package, gh_api, fast)  # the re-run finishes the job
    assert not next(iter(github.state.releases.values()))["draft"] and "SHA256SUMS" in result.uploaded + result.replaced


def test_transient_upload_failure_is_retried(package: Path, github: Any, gh_api: str, fast: Any) -> None:
    """The server stored the asset but the answer was cut: the client sees it arrived, no duplicate."""
    github.fault("POST", "/api/uploads/.*/assets", drop=True, times=1)
    _publish(package, gh_api, fast)
    assert sorted(a["name"] for a in github.state.assets.values()) == ["SHA256SUMS", "lenet-ternary.tar.gz"]
    assert len(github.requests("POST", "/api/uploads/")) == 2


def test_create_release_is_not_blindly_retried(package: Path, github: Any, gh_api: str, fast: Any) -> None:
    github.fault("POST", r"/releases$", status=502, times=1)
    with pytest.raises(TdslError, match="creating release v1: the server answered 502"):
        _publish(package, gh_api, fast)
    assert len(github.requests("POST", r"/releases$")) == 1


@pytest.mark.parametrize("token, message", [(None, "needs a token"), ("wrong-token", r"refused the credentials \(401\)")])
def test_auth_failures(package: Path, github: Any, gh_api: str, fast: Any, monkeypatch: pytest.MonkeyPatch,
                       token: str | None, message: str) -> None:
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    with pytest.raises(TdslError, match=message):
        publish_github(package, "acme/models", "v1", token=token, base_url=gh_api, policy=fast)


def test_missing_repo_and_release_are_404s(package: Path, github: Any, gh_api: str, fast: Any, tmp_path: Path) -> None:
    with pytest.raises(TdslError, match=r"repository acme/nope: not found \(404\)"):
        fetch_github("acme/nope", "v1", tmp_path / "out", base_url=gh_api, policy=fast)
    with pytest.raises(TdslError, match="acme/models: no release with tag 'v9'"):
        fetch_github("acme/models", "v9", tmp_path / "out", base_url=gh_api, policy=fast)
    assert list((tmp_path / "out").iterdir()) == []


def _corrupt(github: Any, name: str, data: bytes) -> None:
    aid = next(a["id"] for a in github.state.assets.values() if a["name"] == name)
    github.state.blobs[aid] = data


def test_checksum_mismatch_is_refused_and_leaves_nothing(package: Path, github: Any, gh_api: str, fast: Any,
                                                         tmp_path: Path) -> None:
    _publish(package, gh_api, fast)
    _corrupt(github, "lenet-ternary.tar.gz", b"evil bytes")
    out = tmp_path / "out"
    with pytest.raises(TdslError, match=r"lenet-ternary.tar.gz: checksum mismatch"):
        fetch_github("acme/models", "v1", out, base_url=gh_api, policy=fast)
    assert list(out.iterdir()) == []


def test_release_without_sums_is_refused(package: Path, github: Any, gh_api: str, fast: Any, tmp_path: Path) -> None:
    _publish(package, gh_api, fast)
    aid = next(a["id"] for a in github.state.assets.values() if a["name"] == "SHA256SUMS")
    del github.state.assets[aid]
    with pytest.raises(TdslError, match="has no SHA256SUMS asset"):
        fetch_github("acme/models", "v1", tmp_path / "out", base_url=gh_api, policy=fast)


def test_dropped_download_is_retried(package: Path, github: Any, gh_api: str, fast: Any, tmp_path: Path,
                                     tree: Any) -> None:
    _publish(package, gh_api, fast)
    github.fault("GET", "/api/v3/downloads/.*tar.gz", drop=True, times=1)
    got = fetch_github("acme/models", "v1", tmp_path / "out", base_url=gh_api, policy=fast)
    assert tree(got) == tree(package)
    assert len(github.requests("GET", "/api/v3/downloads/.*tar.gz")) == 2


def test_download_that_keeps_failing_leaves_no_files(package: Path, github: Any, gh_api: str, fast: Any,
                                                     tmp_path: Path) -> None:
    _publish(package, gh_api, fast)
    github.fault("GET", "/api/v3/downloads/.*tar.gz", drop=True, times=99)
    out = tmp_path / "out"
    with pytest.raises(TdslError, match=r"lenet-ternary.tar.gz: downloading: the connection failed"):
        fetch_github("acme/models", "v1", out, base_url=gh_api, policy=fast)
    assert list(out.iterdir()) == []


def test_timeout_is_a_clear_error(package: Path, github: Any, gh_api: str, tmp_path: Path) -> None:
    from tdsl.publish.retry import NetPolicy

    policy = NetPolicy(timeout=1, attempts=2, backoff=0.01, github_write_interval=0)
    github.fault("GET", r"/repos/acme/models$", sleep=1.6, times=2)
    with pytest.raises(TdslError, match=r"repository acme/models: no answer within 1s"):
        fetch_github("acme/models", "v1", tmp_path / "out", base_url=gh_api, policy=policy)
    assert len(github.requests("GET", r"/repos/acme/models$")) == 2


def test_upload_url_on_another_host_is_refused(package: Path, github: Any, gh_api: str, fast: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    handler = github.RequestHandlerClass
    original = handler.release_json
    monkeypatch.setattr(handler, "release_json", lambda self, rel: {
        **original(self, rel), "upload_url": "http://uploads.evil.example/assets{?name,label}"})
    with pytest.raises(TdslError, match="upload_url host 'uploads.evil.example'"):
        _publish(package, gh_api, fast)
    assert github.state.releases == {}


def test_token_never_appears_in_output_logs_or_errors(package: Path, github: Any, gh_api: str, fast: Any,
                                                      tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                                      caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    _publish(package, gh_api, fast)
    github.fault("GET", "/api/v3/downloads/", status=500, times=99)
    with pytest.raises(TdslError) as e:
        fetch_github("acme/models", "v1", tmp_path / "out", base_url=gh_api, policy=fast)
    out, err = capfd.readouterr()
    assert caplog.records, "debug logging should have recorded the requests"
    for text in (out, err, caplog.text, e.value.render()):
        assert TOKEN not in text
    assert any(h.get("Authorization") == f"token {TOKEN}" for _, _, h in github.log)
