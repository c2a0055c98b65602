"""GitHub Releases: attach a model package to a release, and fetch it back verified.

Client: PyGithub (`Github(base_url=..., auth=Auth.Token(...))`). Uploads go to the release's
`upload_url`, which comes from the server; PyGithub asserts (with `assert`) that it is on the
API host or a GitHub domain and opens a second, timeout-less connection when the host
differs, so `_check_upload_url` refuses any other host with a TdslError first, and
GitHub Enterprise style `https://HOST/api/uploads/...` on the API host keeps the timeout.
PyGithub's own urllib3 retry is off (`retry=None`): `retry.py` retries the idempotent steps.

Assets of a release for package folder `NAME`: `NAME.tar.gz` (deterministic, see
`archive.py`), any extra files (an ONNX export), and `SHA256SUMS` covering all of them; the
release notes repeat the checksums.

Failure order (the invariant: a published release's assets always match its SHA256SUMS):
1. Everything is built and hashed locally before the first request.
2. A new release is created as a draft; an existing one that needs changes is turned back
   into a draft before its first asset is touched.
3. Assets are compared with the ones already there by the sha256 digest GitHub reports:
   same name and digest is skipped, same name and another digest (or no digest) is
   deleted and uploaded again, a missing one is uploaded. SHA256SUMS comes last.
4. The notes are written and the release is published (left a draft if `draft=True`).
On a failure a release this run created is deleted; a release that existed before is left
as a draft (hidden, never with mismatched sums) and the error says to run again, which
skips what is already up and finishes the rest.
"""
from __future__ import annotations

import http.client
import math
import os
import shutil
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

from tdsl.errors import TdslError
from tdsl.package.files import sha256_file
from tdsl.publish.archive import (SUMS_NAME, build_tarball, check_package, copy_verified, format_sums,
                                  fresh_dir_beside, parse_sums, replace_dir, safe_extract)
from tdsl.publish import retry
from tdsl.publish.retry import NetPolicy, retry_call

T = TypeVar("T")
DEFAULT_BASE_URL = "https://api.github.com"
_CHUNK = 1 << 20


@dataclass
class ReleaseResult:
    """What `publish_github` did: the release page and the fate of each asset."""

    url: str
    tag: str
    draft: bool
    sums: dict[str, str]
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)


def publish_github(package_dir: str | os.PathLike[str], owner_repo: str, tag: str, *,
                   notes: str | None = None, draft: bool = False, token: str | None = None,
                   extra_files: Sequence[str | os.PathLike[str]] = (), base_url: str | None = None,
                   policy: NetPolicy | None = None) -> ReleaseResult:
    """Create (or reuse) release `tag` of `owner_repo` and attach the package, extras and sums."""
    root = check_package(package_dir)
    token = _token(token)
    if not token:
        raise TdslError(f"publishing to GitHub repository {owner_repo} needs a token: "
                        "pass --token or set GITHUB_TOKEN")
    _check_owner_repo(owner_repo)
    if not tag.strip():
        raise TdslError("the release tag is empty")
    tarball_name = f"{root.name}.tar.gz"
    extras = _check_extras(extra_files, reserved={tarball_name, SUMS_NAME})
    with tempfile.TemporaryDirectory(prefix="tdsl-publish-") as tmp:
        files = {tarball_name: Path(tmp) / tarball_name}
        build_tarball(root, files[tarball_name])
        files.update((p.name, p) for p in extras)
        sums = {name: sha256_file(path) for name, path in files.items()}
        files[SUMS_NAME] = Path(tmp) / SUMS_NAME
        files[SUMS_NAME].write_text(format_sums(sums), encoding="utf-8")
        sums_all = dict(sums, **{SUMS_NAME: sha256_file(files[SUMS_NAME])})
        body = release_notes(notes, sums)
        session = _Session(token, base_url, policy)
        try:
            return session.publish(owner_repo, tag, files, sums_all, body, draft)
        finally:
            session.close()


def fetch_github(owner_repo: str, tag: str, dest_dir: str | os.PathLike[str], *, token: str | None = None,
                 base_url: str | None = None, policy: NetPolicy | None = None) -> Path:
    """Download release `tag`'s package into `dest_dir`, verified against SHA256SUMS.

    Returns `dest_dir/NAME`, the package folder (extra assets such as the ONNX file are put
    inside it). Only files SHA256SUMS lists are fetched; a previous `dest_dir/NAME` is replaced
    only once the new one is complete, and nothing half-written is left on any failure.
    """
    _check_owner_repo(owner_repo)
    session = _Session(_token(token), base_url, policy)
    dest = Path(dest_dir)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TdslError(f"{dest}: cannot create the output folder ({e.strerror})") from None
    work = fresh_dir_beside(dest / ".fetch")
    try:
        return session.fetch(owner_repo, tag, dest, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        session.close()


def release_notes(notes: str | None, sums: dict[str, str]) -> str:
    """The release body: the user's notes, then the checksums in sha256sum format."""
    head = f"{notes.rstrip()}\n\n" if notes and notes.strip() else ""
    return f"{head}### SHA256 checksums\n\n```\n{format_sums(sums)}```\n"


def _token(token: str | None) -> str | None:
    return token or os.environ.get("GITHUB_TOKEN") or None


def _check_owner_repo(owner_repo: str) -> None:
    parts = owner_repo.split("/")
    if len(parts) != 2 or not all(parts) or any(c.isspace() for c in owner_repo):
        raise TdslError(f"'{owner_repo}' is not a GitHub repository name of the form OWNER/REPO")


def _check_extras(extra_files: Iterable[str | os.PathLike[str]], reserved: set[str]) -> list[Path]:
    out: list[Path] = []
    for f in extra_files:
        p = Path(f)
        if not p.is_file():
            raise TdslError(f"{p}: no such file (given as an extra file to publish)")
        if p.name in reserved or p.name in {q.name for q in out}:
            raise TdslError(f"{p}: an asset named '{p.name}' is already part of the release")
        out.append(p)
    return out


class _Session:
    """One PyGithub client, the retry policy, and the translation of failures into TdslError."""

    def __init__(self, token: str | None, base_url: str | None, policy: NetPolicy | None):
        from github import Auth, Github

        self.token = token
        self.policy = policy = policy or retry.DEFAULT_POLICY
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.gh = Github(base_url=self.base_url, auth=Auth.Token(token) if token else None,
                         # PyGithub asserts an int timeout
                         timeout=max(1, math.ceil(policy.timeout)), retry=None, lazy=False,
                         seconds_between_requests=None,
                         seconds_between_writes=policy.github_write_interval or None)

    def close(self) -> None:
        self.gh.close()

    # -- failure handling -------------------------------------------------------------

    def call(self, fn: Callable[[], T], what: str, *, retry: bool = True) -> T:
        """Run one step; retry it when `retry` (idempotent steps only); errors become TdslError."""
        try:
            if retry:
                return retry_call(fn, self.policy, _is_transient)
            return fn()
        except TdslError:
            raise
        except Exception as e:
            raise TdslError(self.scrub(f"{what}: {_describe(e, self.policy)}")) from None

    def scrub(self, text: str) -> str:
        return text.replace(self.token, "***") if self.token else text

    # -- publish ----------------------------------------------------------------------

    def publish(self, owner_repo: str, tag: str, files: dict[str, Path], sums: dict[str, str],
                body: str, draft: bool) -> ReleaseResult:
        repo = self.call(lambda: self.gh.get_repo(owner_repo), f"{self.base_url}: repository {owner_repo}")
        release = self.find_release(repo, owner_repo, tag)
        created = release is None
        if release is None:
            release = self.call(lambda: repo.create_git_release(tag, name=tag, message=body, draft=True),
                                f"{owner_repo}: creating release {tag}", retry=False)
        where = f"{owner_repo} release {tag}"
        existing = {a.name: a for a in self.call(lambda: list(release.get_assets()), f"{where}: listing assets")}
        result = ReleaseResult(url=release.html_url, tag=tag, draft=draft, sums=dict(sums))
        todo = [n for n in files if _digest(existing.get(n)) != sums[n]]
        result.skipped = [n for n in files if n not in todo]
        if not todo and release.body == body and release.draft == draft:
            return result
        try:
            if not release.draft:
                self.set_release(release, where, release.body or "", draft=True)
            # Payload first, SHA256SUMS last: while it is a draft, order only matters for a re-run.
            for name in sorted(todo, key=lambda n: n == SUMS_NAME):
                old = existing.get(name)
                if old is not None:
                    self.call(lambda: _delete_asset(old), f"{where}: deleting outdated asset {name}")
                    result.replaced.append(name)
                else:
                    result.uploaded.append(name)
                self.upload(release, where, name, files[name], sums[name])
            self.set_release(release, where, body, draft=draft)
        except TdslError as e:
            raise TdslError(e.message, notes=(self.cleanup(release, where, created),)) from None
        result.url = release.html_url
        return result

    def find_release(self, repo: Any, owner_repo: str, tag: str) -> Any | None:
        """The release for `tag`, drafts included (GitHub's by-tag lookup omits drafts)."""
        from github import UnknownObjectException

        def lookup() -> Any | None:
            try:
                return repo.get_release(tag)
            except UnknownObjectException:
                return next((r for r in repo.get_releases() if r.tag_name == tag), None)

        return self.call(lookup, f"{owner_repo}: looking up release {tag}")

    def set_release(self, release: Any, where: str, body: str, *, draft: bool) -> None:
        self.call(lambda: release.update_release(name=release.name or release.tag_name, message=body, draft=draft),
                  f"{where}: updating the release")

    def upload(self, release: Any, where: str, name: str, path: Path, sha: str) -> None:
        """Upload one asset; after an ambiguous failure, check what arrived before trying again."""
        self.check_upload_url(release.upload_url, where)
        what = f"{where}: uploading {name}"

        def attempt() -> None:
            try:
                release.upload_asset(str(path), name=name, content_type="application/octet-stream")
            except Exception as e:
                if not _is_transient(e):
                    raise
                there = {a.name: a for a in release.get_assets()}.get(name)
                if there is not None and _digest(there) == sha:
                    return
                if there is not None:
                    _delete_asset(there)
                raise

        self.call(attempt, what)

    def check_upload_url(self, upload_url: str, where: str) -> None:
        host = urllib.parse.urlparse(upload_url).hostname
        api_host = urllib.parse.urlparse(self.base_url).hostname
        if host != api_host and not (api_host == "api.github.com" and host == "uploads.github.com"):
            raise TdslError(f"{where}: the server gave upload_url host '{host}', which is not the API "
                            f"host '{api_host}'; refusing to send the package there")

    def cleanup(self, release: Any, where: str, created: bool) -> str:
        if created:
            try:
                self.call(lambda: release.delete_release(), f"{where}: deleting the draft")
                return f"the draft release {release.tag_name} created by this run was deleted"
            except TdslError as e:
                return f"the draft release could not be deleted either ({e.message}); delete it by hand"
        return (f"release {release.tag_name} was left as a draft, so nobody downloads assets that do not "
                "match its SHA256SUMS; run the same command again to finish it")

    # -- fetch ------------------------------------------------------------------------

    def fetch(self, owner_repo: str, tag: str, dest: Path, work: Path) -> Path:
        repo = self.call(lambda: self.gh.get_repo(owner_repo), f"{self.base_url}: repository {owner_repo}")
        release = self.find_release(repo, owner_repo, tag)
        where = f"{owner_repo} release {tag}"
        if release is None:
            raise TdslError(f"{owner_repo}: no release with tag '{tag}'")
        assets = {a.name: a for a in self.call(lambda: list(release.get_assets()), f"{where}: listing assets")}
        if SUMS_NAME not in assets:
            raise TdslError(f"{where}: has no {SUMS_NAME} asset; refusing to fetch unverified files")
        downloads = work / "assets"
        downloads.mkdir()
        sums_text = self.download(assets[SUMS_NAME], downloads / SUMS_NAME, where, expected=None)
        sums = parse_sums(sums_text, f"{where}: {SUMS_NAME}")
        missing = sorted(set(sums) - set(assets))
        if missing:
            raise TdslError(f"{where}: {SUMS_NAME} lists {', '.join(missing)}, but the release has no such asset")
        tarballs = [n for n in sums if n.endswith(".tar.gz")]
        if len(tarballs) != 1:
            raise TdslError(f"{where}: expected one .tar.gz package among the checksummed assets, "
                            f"found {len(tarballs)}")
        for name in sorted(sums):
            self.download(assets[name], downloads / name, f"{where}: {name}", expected=sums[name])
        top = safe_extract(downloads / tarballs[0], work / "package", f"{where}: {tarballs[0]}")
        for name in sorted(set(sums) - set(tarballs)):
            if (top / name).exists():
                raise TdslError(f"{where}: asset {name} would overwrite a file of the package")
            os.replace(downloads / name, top / name)
        target = dest / top.name
        replace_dir(top, target)
        return target

    def download(self, asset: Any, dest: Path, what: str, expected: str | None) -> str:
        """Fetch one asset to `dest` (retried from scratch); verify it when `expected` is given."""

        def attempt() -> None:
            dest.unlink(missing_ok=True)
            _status, _headers, chunks = asset.download_asset(chunk_size=_CHUNK)
            if expected is None:
                with open(dest, "wb") as f:
                    for block in chunks:
                        f.write(block)
            else:
                copy_verified(chunks, dest, expected, what)

        try:
            self.call(attempt, f"{what}: downloading")
        except TdslError:
            dest.unlink(missing_ok=True)
            raise
        return dest.read_text(encoding="utf-8", errors="replace") if expected is None else ""


def _digest(asset: Any | None) -> str | None:
    """The sha256 GitHub reports for an asset (`digest: "sha256:<hex>"`), if any."""
    digest = getattr(asset, "digest", None) if asset is not None else None
    if isinstance(digest, str) and digest.startswith("sha256:"):
        return digest.split(":", 1)[1].lower()
    return None


def _delete_asset(asset: Any) -> None:
    from github import UnknownObjectException

    try:
        asset.delete_asset()
    except UnknownObjectException:
        pass  # already gone: deleting is idempotent


def _is_transient(e: BaseException) -> bool:
    import requests
    from github import GithubException

    if isinstance(e, GithubException):
        return e.status in (429, 500, 502, 503, 504)
    if isinstance(e, requests.HTTPError):
        return e.response is not None and e.response.status_code in (429, 500, 502, 503, 504)
    return isinstance(e, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                          http.client.HTTPException, ConnectionError, TimeoutError))


def _describe(e: BaseException, policy: NetPolicy) -> str:
    """One line for the user; the cause's class and status, never request headers."""
    import requests
    from github import BadCredentialsException, GithubException, UnknownObjectException

    if isinstance(e, BadCredentialsException) or getattr(e, "status", None) == 401:
        return "the server refused the credentials (401): check the token"
    if isinstance(e, UnknownObjectException):
        return "not found (404), or the token cannot see it"
    if isinstance(e, GithubException):
        message = e.data.get("message") if isinstance(e.data, dict) else None
        return f"the server answered {e.status}" + (f": {message}" if message else "")
    if isinstance(e, requests.HTTPError) and e.response is not None:
        return f"the server answered {e.response.status_code}"
    if isinstance(e, requests.Timeout):
        return f"no answer within {policy.timeout:g}s (timed out)"
    if _is_transient(e):
        return f"the connection failed ({type(e).__name__}: {e})"
    if isinstance(e, AssertionError):
        return "PyGithub refused a URL the server returned"
    return f"{type(e).__name__}: {e}"
