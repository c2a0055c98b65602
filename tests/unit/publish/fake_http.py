"""A loopback HTTP server for the publish tests: routing, request log and injected faults.

Both fakes (`fake_github.py`, `fake_hub.py`) subclass `FakeHandler` and run in a
`ThreadingHTTPServer` bound to 127.0.0.1 on an ephemeral port, in a daemon thread. A fault
matches a method and a path pattern and answers a status, drops the connection half-way
through the response, or sleeps before answering (for client timeouts).
"""
from __future__ import annotations

import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Generic, TypeVar
from urllib.parse import urlsplit


@dataclass
class Fault:
    """Misbehave on the next `times` requests matching `method` and regex `path`."""

    method: str
    path: str
    status: int | None = None
    drop: bool = False
    sleep: float = 0.0
    times: int = 1


class FakeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "FakeServer[Any]"

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        self.query = url.query
        self.server.log.append((method, url.path, dict(self.headers)))
        fault = self.server.take_fault(method, url.path)
        if fault is not None and fault.sleep:
            time.sleep(fault.sleep)
        if fault is not None and fault.status is not None:
            self.send_json(fault.status, {"message": f"injected {fault.status}"})
            return
        self.dropping = fault is not None and fault.drop
        for route_method, pattern, fn in self.routes():
            m = re.fullmatch(pattern, url.path)
            if route_method == method and m:
                fn(*m.groups())
                return
        self.server.unhandled.append((method, url.path))
        self.send_json(404, {"message": "Not Found"})

    def routes(self) -> list[tuple[str, str, Callable[..., None]]]:
        raise NotImplementedError

    def send_bytes(self, status: int, data: bytes, headers: dict[str, str] | None = None,
                   content_type: str = "application/octet-stream") -> None:
        """Send a response; when a drop fault is armed, send half the body and cut the socket."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        if getattr(self, "dropping", False):
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(data)

    def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self.send_bytes(status, json.dumps(obj).encode(), headers, "application/json")

    def json_body(self) -> Any:
        return json.loads(self.body or b"{}")


S = TypeVar("S")


class FakeServer(ThreadingHTTPServer, Generic[S]):
    """The server, its state (`state`), the request log and the pending faults."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, handler: type[FakeHandler], state: S):
        super().__init__(("127.0.0.1", 0), handler)
        self.state = state
        self.log: list[tuple[str, str, dict[str, str]]] = []
        self.unhandled: list[tuple[str, str]] = []
        self.faults: list[Fault] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def fault(self, method: str, path: str, **kw: Any) -> Fault:
        f = Fault(method, path, **kw)
        with self.lock:
            self.faults.append(f)
        return f

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.times > 0 and f.method == method and re.search(f.path, path):
                    f.times -= 1
                    return f
        return None

    def requests(self, method: str | None = None, path: str = "") -> list[str]:
        return [p for m, p, _ in self.log if (method is None or m == method) and re.search(path, p)]

    def __enter__(self) -> "FakeServer[S]":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
        self.server_close()
