"""A real HTTP/1.1 backend for the cache tests: it answers any method, known or not, and
records every request (method, path, headers) before a subclass's `answer` replies."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import SplitResult, urlsplit


class RecordingOrigin:
    """`answer(handler, url, headers, count)` writes the reply; `count` is how many GETs of
    that path the origin has served, this one included. `cache_control` holds the
    Cache-Control a test sets per path."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.cache_control: dict[str, str] = {}
        self.lock = threading.Lock()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def handle_one_request(self) -> None:
                # any method, known or not, is answered by `answer`
                self.raw_requestline = self.rfile.readline(65537)
                if not self.raw_requestline or not self.parse_request():
                    self.close_connection = True
                    return
                url = urlsplit(self.path)
                headers = {k.lower(): v for k, v in self.headers.items()}
                length = int(headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                with origin.lock:
                    origin.seen.append((self.command, url.path, headers))
                    count = sum(1 for m, p, _ in origin.seen if m == "GET" and p == url.path)
                origin.answer(self, url, headers, count)
                self.wfile.flush()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(
        self,
        handler: BaseHTTPRequestHandler,
        url: SplitResult,
        headers: dict[str, str],
        count: int,
    ) -> None:
        raise NotImplementedError

    def gets(self, path: str) -> list[dict[str, str]]:
        """The headers of the GETs of `path` the backend received."""
        with self.lock:
            return [h for m, p, h in self.seen if m == "GET" and p == path]

    def wait_for_gets(self, path: str, count: int) -> list[dict[str, str]]:
        """The GETs of `path`, once there are `count` (the cache sends some on its own)."""
        deadline = time.monotonic() + 10
        while len(self.gets(path)) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.gets(path)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
