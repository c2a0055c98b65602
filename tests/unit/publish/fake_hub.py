"""A fake Hugging Face Hub for the tests: what `create_repo`, `create_branch`, `create_commit`
(LFS "basic" transfer; the tests turn Xet off, which this fake does not speak) and
`snapshot_download` call, found by running the client against it and logging its 404s.

Endpoints:
  POST /api/repos/create                                 {name, organization, type, visibility}
  POST /api/validate-yaml                                the README's front matter (before a commit)
  POST /api/models/{repo}/branch/{branch}
  POST /api/models/{repo}/preupload/{rev}                *.safetensors / *.onnx are "lfs"
  POST /{repo}.git/info/lfs/objects/batch                upload actions to PUT /lfs-upload/{oid}
  PUT  /lfs-upload/{oid}                                 the body must hash to oid (no auth: a signed URL)
  POST /api/models/{repo}/commit/{rev}                   NDJSON: header, file (base64), lfsFile
  GET  /api/models/{repo}[/revision/{rev}]               model info with sha and siblings
  GET  /api/models/{repo}/tree/{rev}[/{path}]            recursive listing
  HEAD|GET /{repo}/resolve/{rev}/{path}                  ETag, X-Repo-Commit, bytes
Writes need `Authorization: Bearer <TOKEN>`; a wrong token is a 401 anywhere.
"""
from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import unquote

import yaml

from fake_http import FakeHandler, FakeServer

TOKEN = "hf_fakeTOKENabcdefghijklmnopqrstuvwxyz0123"
_REPO = r"([^/]+/[^/]+)"
_LFS_SUFFIXES = (".safetensors", ".onnx", ".bin")


@dataclass
class HubState:
    repos: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> {private, branches: {b: oid}}
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # oid -> {path: bytes}
    lfs: dict[str, bytes] = field(default_factory=dict)  # sha256 -> bytes
    commit_log: list[dict[str, Any]] = field(default_factory=list)


class HubHandler(FakeHandler):
    server: FakeServer[HubState]

    def routes(self) -> list[tuple[str, str, Callable[..., None]]]:
        return [
            ("POST", r"/api/repos/create", self.create_repo),
            ("POST", r"/api/validate-yaml", self.validate_yaml),
            ("POST", rf"/api/models/{_REPO}/branch/([^/]+)", self.create_branch),
            ("POST", rf"/api/models/{_REPO}/preupload/([^/]+)", self.preupload),
            ("POST", rf"/{_REPO}\.git/info/lfs/objects/batch", self.lfs_batch),
            ("PUT", r"/lfs-upload/([0-9a-f]{64})", self.lfs_put),
            ("POST", rf"/api/models/{_REPO}/commit/([^/]+)", self.commit),
            ("GET", rf"/api/models/{_REPO}", lambda repo: self.model_info(repo, "main")),
            ("GET", rf"/api/models/{_REPO}/revision/([^/]+)", self.model_info),
            ("GET", rf"/api/models/{_REPO}/tree/([^/]+)(?:/(.*))?", self.tree),
            ("HEAD", rf"/{_REPO}/resolve/([^/]+)/(.+)", self.resolve),
            ("GET", rf"/{_REPO}/resolve/([^/]+)/(.+)", self.resolve),
        ]

    @property
    def st(self) -> HubState:
        return self.server.state

    def _dispatch(self, method: str) -> None:
        auth = self.headers.get("Authorization")
        self.authed = auth == f"Bearer {TOKEN}"
        if auth is not None and not self.authed:
            self.send_json(401, {"error": "Invalid credentials in Authorization header"})
            return
        if method in ("POST", "PUT") and not self.authed and not self.path.startswith("/lfs-upload/"):
            self.send_json(401, {"error": "You must be authenticated to do this"})
            return
        super()._dispatch(method)

    def not_found(self, what: str, code: str = "RepoNotFound") -> None:
        self.send_json(404, {"error": f"{what} not found"}, {"X-Error-Code": code})

    def head_files(self, repo: str, rev: str) -> tuple[str, dict[str, bytes]] | None:
        """(commit oid, files) of a branch name or commit oid, or None after a 404."""
        r = self.st.repos.get(repo)
        if r is None or (r["private"] and not self.authed):
            self.not_found("Repository")
            return None
        rev = unquote(rev)
        oid = r["branches"].get(rev) or (rev if rev in self.st.commits else None)
        if oid is None:
            self.not_found("Revision", "RevisionNotFound")
            return None
        return oid, self.st.commits[oid]

    def create_repo(self) -> None:
        req = self.json_body()
        repo = f"{req.get('organization') or 'me'}/{req['name']}"
        if repo in self.st.repos:
            self.send_json(409, {"error": "You already created this model repo", "url": f"{self.server.url}/{repo}"})
            return
        oid = self.new_commit({".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"})
        private = req.get("visibility", "private" if req.get("private") else "public") == "private"
        self.st.repos[repo] = {"private": private, "branches": {"main": oid}}
        self.send_json(200, {"url": f"{self.server.url}/{repo}", "name": repo})

    def validate_yaml(self) -> None:
        """Parse the card's front matter; check the model-index shape the Hub requires."""
        content = self.json_body()["content"]
        errors = []
        if content.startswith("---\n"):
            try:
                meta = yaml.safe_load(content[4:content.index("\n---", 3)])
            except (yaml.YAMLError, ValueError) as e:
                meta, errors = None, [f"invalid YAML: {e}"]
            if not errors and not isinstance(meta, dict):
                errors.append("metadata must be a mapping")
            for entry in (meta or {}).get("model-index", []) if not errors else []:
                for result in entry.get("results", []) if isinstance(entry, dict) else [None]:
                    if not (isinstance(result, dict) and "type" in result.get("task", {})
                            and all("type" in m and "value" in m for m in result.get("metrics", []))):
                        errors.append(f"model-index result is missing task.type or metric type/value: {result}")
        if errors:
            self.send_json(400, {"errors": [{"message": m} for m in errors]})
        else:
            self.send_json(200, {"warnings": []})

    def new_commit(self, files: dict[str, bytes]) -> str:
        oid = hashlib.sha1(json.dumps(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in files.items())
                                      ).encode() + str(len(self.st.commits)).encode()).hexdigest()
        self.st.commits[oid] = files
        return oid

    def create_branch(self, repo: str, branch: str) -> None:
        got = self.head_files(repo, "main")
        if got is None:
            return
        branches = self.st.repos[repo]["branches"]
        if unquote(branch) in branches:
            self.send_json(409, {"error": "Reference already exists"})
            return
        branches[unquote(branch)] = got[0]
        self.send_json(200, {})

    def preupload(self, repo: str, rev: str) -> None:
        if self.head_files(repo, rev) is None:
            return
        files = self.json_body()["files"]
        self.send_json(200, {"files": [{"path": f["path"], "shouldIgnore": False,
                                        "uploadMode": "lfs" if f["path"].endswith(_LFS_SUFFIXES) else "regular"}
                                       for f in files]})

    def lfs_batch(self, repo: str) -> None:
        objects = []
        for o in self.json_body()["objects"]:
            entry: dict[str, Any] = {"oid": o["oid"], "size": o["size"]}
            if o["oid"] not in self.st.lfs:
                entry["actions"] = {"upload": {"href": f"{self.server.url}/lfs-upload/{o['oid']}"}}
            objects.append(entry)
        self.send_bytes(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                        content_type="application/vnd.git-lfs+json")

    def lfs_put(self, oid: str) -> None:
        if hashlib.sha256(self.body).hexdigest() != oid:
            self.send_json(400, {"error": "sha256 mismatch"})
            return
        self.st.lfs[oid] = self.body
        self.send_bytes(200, b"")

    def commit(self, repo: str, rev: str) -> None:
        got = self.head_files(repo, rev)
        if got is None:
            return
        files = dict(got[1])
        header: dict[str, Any] = {}
        for line in self.body.decode().splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "header":
                header = value
            elif item["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "lfsFile":
                if value["oid"] not in self.st.lfs:
                    self.send_json(400, {"error": f"LFS object {value['oid']} was never uploaded"})
                    return
                files[value["path"]] = self.st.lfs[value["oid"]]
            else:
                self.send_json(400, {"error": f"unknown commit key {item['key']}"})
                return
        oid = self.new_commit(files)
        self.st.repos[repo]["branches"][unquote(rev)] = oid
        self.st.commit_log.append({"repo": repo, "revision": unquote(rev), "oid": oid, **header})
        self.send_json(200, {"success": True, "commitOid": oid,
                             "commitUrl": f"{self.server.url}/{repo}/commit/{oid}"})

    def model_info(self, repo: str, rev: str) -> None:
        got = self.head_files(repo, rev)
        if got is not None:
            oid, files = got
            self.send_json(200, {"id": repo, "modelId": repo, "sha": oid, "private": self.st.repos[repo]["private"],
                                 "siblings": [{"rfilename": p} for p in sorted(files)], "tags": [],
                                 "library_name": "tdsl"})

    def tree(self, repo: str, rev: str, path: str | None) -> None:
        got = self.head_files(repo, rev)
        if got is None:
            return
        prefix = f"{path.rstrip('/')}/" if path else ""
        out = []
        for p, data in sorted(got[1].items()):
            if not p.startswith(prefix):
                continue
            entry: dict[str, Any] = {"type": "file", "path": p, "size": len(data),
                                     "oid": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}
            if p.endswith(_LFS_SUFFIXES):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 130}
            out.append(entry)
        self.send_json(200, out)

    def resolve(self, repo: str, rev: str, path: str) -> None:
        got = self.head_files(repo, rev)
        if got is None:
            return
        oid, files = got
        data = files.get(unquote(path))
        if data is None:
            self.not_found("Entry", "EntryNotFound")
            return
        etag = hashlib.sha256(data).hexdigest() if path.endswith(_LFS_SUFFIXES) else \
            hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        self.send_bytes(200, data, {"ETag": f'"{etag}"', "X-Repo-Commit": oid})


def start() -> FakeServer[HubState]:
    return FakeServer(HubHandler, HubState()).__enter__()
