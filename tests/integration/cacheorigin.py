"""A backend for the cache tests that answers each path as the test says and counts its
requests."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"hello"
    delay: float = 0.0
    etag: str | None = None  # answers If-None-Match with 304 when it matches


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (a read timeout under test) is no error here


class CountingBackend:
    """A real HTTP/1.1 server: each path answers as `replies[path]` says (or 200 with a
    counter in the body) and every request is counted, per path."""

    def __init__(self) -> None:
        self.replies: dict[str, Reply] = {}
        self.hits: dict[str, int] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.lock = threading.Lock()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with backend.lock:
                    backend.hits[path] = backend.hits.get(path, 0) + 1
                    count = backend.hits[path]
                    backend.requests.append(
                        (self.path, {k.lower(): v for k, v in self.headers.items()})
                    )
                reply = backend.replies.get(path, Reply())
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.etag is not None and self.headers.get("If-None-Match") == reply.etag:
                    self.send_response(304)
                    self.send_header("ETag", reply.etag)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    return
                body = reply.body.replace(b"{n}", str(count).encode())
                body = body.replace(b"{lang}", self.headers.get("Accept-Language", "-").encode())
                self.send_response(reply.status)
                if reply.etag is not None:
                    self.send_header("ETag", reply.etag)
                for name, value in reply.headers.items():
                    self.send_header(name, value.replace("{n}", str(count)))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_HEAD = do_GET

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def hits_of(self, path: str) -> int:
        with self.lock:
            return self.hits.get(path, 0)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
