"""A fake GitHub REST API (releases and assets) for the tests, GitHub Enterprise style.

The API lives under `/api/v3`, uploads under `/api/uploads` (the release's `upload_url`
points there, on this same loopback server) and asset bytes under `/api/v3/downloads`,
reached by the 302 GitHub answers to `Accept: application/octet-stream`.

Endpoints:
  GET    /api/v3/repos/{o}/{r}
  GET    /api/v3/repos/{o}/{r}/releases                 (drafts only with a valid token)
  POST   /api/v3/repos/{o}/{r}/releases
  GET    /api/v3/repos/{o}/{r}/releases/tags/{tag}      (published releases only, as GitHub)
  PATCH  /api/v3/repos/{o}/{r}/releases/{id}
  DELETE /api/v3/repos/{o}/{r}/releases/{id}
  GET    /api/v3/repos/{o}/{r}/releases/{id}/assets
  GET    /api/v3/repos/{o}/{r}/releases/assets/{id}     (JSON, or 302 to the bytes)
  DELETE /api/v3/repos/{o}/{r}/releases/assets/{id}
  POST   /api/uploads/repos/{o}/{r}/releases/{id}/assets?name=...
  GET    /api/v3/downloads/{id}/{name}
Writes need `Authorization: token <TOKEN>` (or Bearer); a wrong token is a 401 anywhere.
"""
from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qs, unquote

from fake_http import FakeHandler, FakeServer

TOKEN = "ghp_fake_token_0123456789abcdefSECRET"
_R = r"/api/v3/repos/([^/]+)/([^/]+)"


@dataclass
class GithubState:
    repos: set[str] = field(default_factory=lambda: {"acme/models"})
    releases: dict[int, dict[str, Any]] = field(default_factory=dict)
    assets: dict[int, dict[str, Any]] = field(default_factory=dict)
    blobs: dict[int, bytes] = field(default_factory=dict)
    ids: Any = field(default_factory=lambda: itertools.count(1))
    report_digest: bool = True


class GithubHandler(FakeHandler):
    server: FakeServer[GithubState]

    def routes(self) -> list[tuple[str, str, Callable[..., None]]]:
        return [
            ("GET", _R, self.get_repo),
            ("GET", _R + r"/releases", self.list_releases),
            ("POST", _R + r"/releases", self.create_release),
            ("GET", _R + r"/releases/tags/(.+)", self.release_by_tag),
            ("PATCH", _R + r"/releases/(\d+)", self.update_release),
            ("DELETE", _R + r"/releases/(\d+)", self.delete_release),
            ("GET", _R + r"/releases/(\d+)/assets", self.list_assets),
            ("GET", _R + r"/releases/assets/(\d+)", self.get_asset),
            ("DELETE", _R + r"/releases/assets/(\d+)", self.delete_asset),
            ("POST", r"/api/uploads/repos/([^/]+)/([^/]+)/releases/(\d+)/assets", self.upload_asset),
            ("GET", r"/api/v3/downloads/(\d+)/([^/]+)", self.download),
        ]

    @property
    def st(self) -> GithubState:
        return self.server.state

    def _dispatch(self, method: str) -> None:
        auth = self.headers.get("Authorization")
        self.authed = auth in (f"token {TOKEN}", f"Bearer {TOKEN}")
        if auth is not None and not self.authed:
            self.send_json(401, {"message": "Bad credentials"})
            return
        if method != "GET" and not self.authed:
            self.send_json(401, {"message": "Requires authentication"})
            return
        super()._dispatch(method)

    def repo_ok(self, o: str, r: str) -> bool:
        if f"{o}/{r}" in self.st.repos:
            return True
        self.send_json(404, {"message": "Not Found"})
        return False

    def release_json(self, rel: dict[str, Any]) -> dict[str, Any]:
        base, rid = self.server.url, rel["id"]
        repo = rel["repo"]
        return {
            "id": rid, "tag_name": rel["tag_name"], "name": rel["name"], "body": rel["body"],
            "draft": rel["draft"], "prerelease": False,
            "url": f"{base}/api/v3/repos/{repo}/releases/{rid}",
            "html_url": f"https://github.example/{repo}/releases/tag/{rel['tag_name']}",
            "assets_url": f"{base}/api/v3/repos/{repo}/releases/{rid}/assets",
            "upload_url": f"{base}/api/uploads/repos/{repo}/releases/{rid}/assets{{?name,label}}",
            "assets": [self.asset_json(a) for a in self.assets_of(rid)],
        }

    def asset_json(self, a: dict[str, Any]) -> dict[str, Any]:
        base = self.server.url
        out = {"id": a["id"], "name": a["name"], "label": "", "size": len(self.st.blobs[a["id"]]),
               "state": "uploaded", "content_type": "application/octet-stream",
               "url": f"{base}/api/v3/repos/{a['repo']}/releases/assets/{a['id']}",
               "browser_download_url": f"{base}/api/v3/downloads/{a['id']}/{a['name']}"}
        if self.st.report_digest:
            out["digest"] = "sha256:" + hashlib.sha256(self.st.blobs[a["id"]]).hexdigest()
        return out

    def assets_of(self, rid: int) -> list[dict[str, Any]]:
        return [a for a in self.st.assets.values() if a["release"] == rid]

    def find_release(self, o: str, r: str, rid: str) -> dict[str, Any] | None:
        rel = self.st.releases.get(int(rid))
        if rel is None or rel["repo"] != f"{o}/{r}":
            self.send_json(404, {"message": "Not Found"})
            return None
        return rel

    def get_repo(self, o: str, r: str) -> None:
        if self.repo_ok(o, r):
            self.send_json(200, {"id": 1, "name": r, "full_name": f"{o}/{r}", "owner": {"login": o},
                                 "url": f"{self.server.url}/api/v3/repos/{o}/{r}"})

    def list_releases(self, o: str, r: str) -> None:
        if self.repo_ok(o, r):
            rels = [x for x in self.st.releases.values()
                    if x["repo"] == f"{o}/{r}" and (self.authed or not x["draft"])]
            self.send_json(200, [self.release_json(x) for x in rels])

    def create_release(self, o: str, r: str) -> None:
        if not self.repo_ok(o, r):
            return
        req = self.json_body()
        if any(x["repo"] == f"{o}/{r}" and x["tag_name"] == req["tag_name"] for x in self.st.releases.values()):
            self.send_json(422, {"message": "Validation Failed",
                                 "errors": [{"resource": "Release", "code": "already_exists", "field": "tag_name"}]})
            return
        rid = next(self.st.ids)
        self.st.releases[rid] = {"id": rid, "repo": f"{o}/{r}", "tag_name": req["tag_name"],
                                 "name": req.get("name") or req["tag_name"], "body": req.get("body", ""),
                                 "draft": bool(req.get("draft", False))}
        self.send_json(201, self.release_json(self.st.releases[rid]))

    def release_by_tag(self, o: str, r: str, tag: str) -> None:
        if not self.repo_ok(o, r):
            return
        tag = unquote(tag)
        for x in self.st.releases.values():
            if x["repo"] == f"{o}/{r}" and x["tag_name"] == tag and not x["draft"]:
                self.send_json(200, self.release_json(x))
                return
        self.send_json(404, {"message": "Not Found"})

    def update_release(self, o: str, r: str, rid: str) -> None:
        rel = self.find_release(o, r, rid)
        if rel is not None:
            req = self.json_body()
            for key in ("name", "body", "draft", "tag_name"):
                if key in req:
                    rel[key] = req[key]
            self.send_json(200, self.release_json(rel))

    def delete_release(self, o: str, r: str, rid: str) -> None:
        rel = self.find_release(o, r, rid)
        if rel is not None:
            for a in self.assets_of(rel["id"]):
                del self.st.assets[a["id"]]
            del self.st.releases[rel["id"]]
            self.send_bytes(204, b"")

    def list_assets(self, o: str, r: str, rid: str) -> None:
        rel = self.find_release(o, r, rid)
        if rel is not None:
            self.send_json(200, [self.asset_json(a) for a in self.assets_of(rel["id"])])

    def get_asset(self, o: str, r: str, aid: str) -> None:
        a = self.st.assets.get(int(aid))
        if a is None or a["repo"] != f"{o}/{r}":
            self.send_json(404, {"message": "Not Found"})
        elif self.headers.get("Accept") == "application/octet-stream":
            self.send_bytes(302, b"", {"Location": f"{self.server.url}/api/v3/downloads/{aid}/{a['name']}"})
        else:
            self.send_json(200, self.asset_json(a))

    def delete_asset(self, o: str, r: str, aid: str) -> None:
        a = self.st.assets.get(int(aid))
        if a is None or a["repo"] != f"{o}/{r}":
            self.send_json(404, {"message": "Not Found"})
            return
        del self.st.assets[int(aid)]
        self.send_bytes(204, b"")

    def upload_asset(self, o: str, r: str, rid: str) -> None:
        rel = self.find_release(o, r, rid)
        if rel is None:
            return
        name = parse_qs(self.query).get("name", [""])[0]
        if any(a["name"] == name for a in self.assets_of(rel["id"])):
            self.send_json(422, {"message": "Validation Failed",
                                 "errors": [{"resource": "ReleaseAsset", "code": "already_exists", "field": "name"}]})
            return
        aid = next(self.st.ids)
        self.st.assets[aid] = {"id": aid, "name": name, "release": rel["id"], "repo": f"{o}/{r}"}
        self.st.blobs[aid] = self.body
        self.send_json(201, self.asset_json(self.st.assets[aid]))

    def download(self, aid: str, name: str) -> None:
        if int(aid) not in self.st.assets:
            self.send_json(404, {"message": "Not Found"})
        else:
            self.send_bytes(200, self.st.blobs[int(aid)])


def start() -> FakeServer[GithubState]:
    return FakeServer(GithubHandler, GithubState()).__enter__()
