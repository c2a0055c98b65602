"""Hugging Face Hub: upload a model package in one commit, download it (cached) by repo id.

Client: `huggingface_hub` (`HfApi.create_repo`, `create_branch`, `create_commit`,
`snapshot_download(local_dir=...)`, which keeps plain files and its own metadata, so a
download is both cached and loadable as it is: `tdsl.load` refuses the symbolic links of
the library's blob cache). The token comes from the argument, else whatever the library finds
(`HF_TOKEN`, then `hf auth login`'s stored token); it is never printed, and every message
built from a library error has it scrubbed.

Retries: the library already retries some steps itself (preupload, LFS transfers, file
downloads); `retry.py` retries whole idempotent steps on top: creating the repo and branch
(`exist_ok`), the download, and the commit. Repeating the commit is safe in content: it adds
the same files, so the repo ends up with the same tree (at worst one extra, empty commit).
The library's shared HTTP client (`huggingface_hub.get_session()`, made by whatever factory
`set_client_factory` installed) has no timeout of its own; `_timeouts` gives it the policy's
for the duration of a call and puts the previous settings back after.
"""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

from tdsl.errors import TdslError
from tdsl.publish.archive import check_package, fresh_dir_beside, package_files, replace_dir
from tdsl.publish import retry
from tdsl.publish.retry import NetPolicy, retry_call

T = TypeVar("T")


@dataclass
class HfCommit:
    """The commit `publish_hf` made: its URL, revision id and the files it holds."""

    url: str
    oid: str
    files: list[str]


def publish_hf(package_dir: str | os.PathLike[str], repo_id: str, *, private: bool = False,
               revision: str | None = None, message: str | None = None, token: str | None = None,
               extra_files: Sequence[str | os.PathLike[str]] = (), endpoint: str | None = None,
               policy: NetPolicy | None = None) -> HfCommit:
    """Upload the package folder (and extra files, e.g. an ONNX export) to `repo_id` in one commit.

    Creates the model repo (private if asked) and the branch `revision` when missing.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    policy = policy or retry.DEFAULT_POLICY
    root = check_package(package_dir)
    files = {rel: root / rel for rel in package_files(root)}
    for f in extra_files:
        p = Path(f)
        if not p.is_file():
            raise TdslError(f"{p}: no such file (given as an extra file to publish)")
        if p.name in files:
            raise TdslError(f"{p}: the package already has a file named '{p.name}'")
        files[p.name] = p
    token = _token(token)
    api = HfApi(endpoint=endpoint, token=token)
    where = f"{api.endpoint}/{repo_id}"
    with _timeouts(policy):
        _call(lambda: api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model"),
              f"{where}: creating the repository", token, policy)
        if revision and revision != "main":
            _call(lambda: api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model"),
                  f"{where}: creating branch {revision}", token, policy)
        operations = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(path))
                      for rel, path in sorted(files.items())]
        info = _call(lambda: api.create_commit(repo_id, operations, repo_type="model", revision=revision,
                                               commit_message=message or f"Upload {root.name} with tdsl"),
                     f"{where}: committing {len(operations)} files", token, policy)
    return HfCommit(url=str(info.commit_url), oid=str(info.oid), files=sorted(files))


def from_pretrained_path(repo_id_or_path: str | os.PathLike[str], revision: str | None = None,
                         token: str | None = None, endpoint: str | None = None,
                         cache_dir: str | os.PathLike[str] | None = None,
                         policy: NetPolicy | None = None) -> Path:
    """The local package folder for a Hub repo id (downloaded into the cache) or a local path."""
    local = Path(repo_id_or_path)
    if local.is_dir():
        return check_package(local)
    text = str(repo_id_or_path)
    if text.startswith((".", "/", "~")) or local.is_absolute() or local.exists():
        raise TdslError(f"{text}: no such package folder")
    from huggingface_hub import HfApi, snapshot_download

    token = _token(token)
    policy = policy or retry.DEFAULT_POLICY
    where = f"{endpoint or _default_endpoint()}/{text}"
    what = f"{where}: downloading" + (f" revision {revision}" if revision else "")
    with _timeouts(policy):
        # the commit a branch or tag names now: one folder per commit, as the library's snapshots
        info = _call(lambda: HfApi(endpoint=endpoint, token=token).model_info(text, revision=revision),
                     what, token, policy)
        local_dir = download_dir(text, str(info.sha), cache_dir)
        path = _call(lambda: snapshot_download(text, repo_type="model", revision=info.sha, token=token,
                                               endpoint=endpoint, local_dir=local_dir,
                                               etag_timeout=policy.timeout), what, token, policy)
    try:
        return check_package(path)
    except TdslError as e:
        raise TdslError(f"{where}: the repository is not a tdsl model package ({e.message})") from None


def download_dir(repo_id: str, commit: str, cache_dir: str | os.PathLike[str] | None) -> Path:
    """Where a download of `repo_id` at `commit` keeps its plain files: one folder per repo and
    commit under `cache_dir` (default `$HF_HOME/tdsl/packages`), reused by the next call."""
    from huggingface_hub import constants

    root = Path(cache_dir) if cache_dir is not None else Path(constants.HF_HOME) / "tdsl" / "packages"
    return root / repo_id.replace("/", "--") / commit


def fetch_hf(repo_id: str, dest_dir: str | os.PathLike[str], *, revision: str | None = None,
             token: str | None = None, endpoint: str | None = None, cache_dir: str | os.PathLike[str] | None = None,
             policy: NetPolicy | None = None) -> Path:
    """Download `repo_id` and copy the package into `dest_dir/NAME` (NAME: the repo's name).

    The copy is made beside the target and renamed into place, so a failure leaves no half folder.
    """
    src = from_pretrained_path(repo_id, revision=revision, token=token, endpoint=endpoint,
                               cache_dir=cache_dir, policy=policy)
    target = Path(dest_dir) / repo_id.rstrip("/").split("/")[-1]
    try:
        work = fresh_dir_beside(target)
    except OSError as e:
        raise TdslError(f"{dest_dir}: cannot create the output folder ({e.strerror})") from None
    try:
        for rel in package_files(src):
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, work / rel)
        replace_dir(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _token(token: str | None) -> str | None:
    """The explicit token, or the one the library would use, so messages can be scrubbed of it."""
    if token:
        return token
    from huggingface_hub import get_token

    return get_token()


def _default_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


@contextmanager
def _timeouts(policy: NetPolicy) -> Iterator[None]:
    """Give the library's shared client (`get_session()`) and its file downloads
    (`HF_HUB_DOWNLOAD_TIMEOUT`) the policy's timeout while the block runs; whichever client
    factory the user set stays in place."""
    from huggingface_hub import constants, get_session

    client = get_session()
    previous_timeout, previous_hooks = client.timeout, list(client.event_hooks["request"])
    previous_download = constants.HF_HUB_DOWNLOAD_TIMEOUT

    def bound(request: Any) -> None:
        # Calls such as `repo_info` pass `timeout=None` per request, which overrides a client
        # default; fill in only the limits that are still unbounded.
        limits = request.extensions.get("timeout") or {}
        request.extensions["timeout"] = {k: (policy.timeout if limits.get(k) is None else limits[k])
                                         for k in ("connect", "read", "write", "pool")}

    client.timeout = policy.timeout
    client.event_hooks = {**client.event_hooks, "request": [*previous_hooks, bound]}
    constants.HF_HUB_DOWNLOAD_TIMEOUT = policy.timeout  # type: ignore[assignment]
    try:
        yield
    finally:
        constants.HF_HUB_DOWNLOAD_TIMEOUT = previous_download
        client.timeout = previous_timeout
        client.event_hooks = {**client.event_hooks, "request": previous_hooks}


def _call(fn: Callable[[], T], what: str, token: str | None, policy: NetPolicy) -> T:
    try:
        return retry_call(fn, policy, _is_transient)
    except TdslError:
        raise
    except Exception as e:
        text = f"{what}: {_describe(e, policy)}"
        raise TdslError(text.replace(token, "***") if token else text) from None


def _causes(e: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _status(e: BaseException) -> int | None:
    for c in _causes(e):
        response = getattr(c, "response", None)
        code = getattr(response, "status_code", None)
        if isinstance(code, int):
            return code
    return None


def _is_transient(e: BaseException) -> bool:
    import httpx2

    status = _status(e)
    if status is not None:
        return status in (408, 429, 500, 502, 503, 504)
    return any(isinstance(c, (httpx2.TransportError, ConnectionError, TimeoutError)) for c in _causes(e))


def _describe(e: BaseException, policy: NetPolicy) -> str:
    """One line for the user: what the server said, or what went wrong with the connection."""
    import httpx2
    from huggingface_hub.errors import (GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError)

    status = _status(e)
    if isinstance(e, RevisionNotFoundError):
        return "no such revision (404)"
    if isinstance(e, GatedRepoError):
        return "the repository is gated: request access on its page first"
    if isinstance(e, RepositoryNotFoundError) or status == 404:
        return "repository not found (404), or the token cannot see it"
    if status == 401:
        return "the server refused the credentials (401): check the token (HF_TOKEN or `hf auth login`)"
    if status == 403:
        return "forbidden (403): the token lacks write access to this repository"
    if status is not None:
        return f"the server answered {status} (after {policy.attempts} attempts)" if status >= 500 \
            else f"the server answered {status}"
    for c in _causes(e):
        if isinstance(c, httpx2.TimeoutException):
            return f"no answer within {policy.timeout:g}s (timed out, {policy.attempts} attempts)"
        if isinstance(c, httpx2.TransportError):
            return f"the connection failed ({type(c).__name__}: {c})"
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
