"""What the cache tests share: a real HTTP/1.1 backend that answers any method, known or not,
and records every request (method, path, headers) before a subclass's `answer` replies; and
a gateway site reachable over HTTP/1.1 (plain) and HTTP/2 (HTTPS), with a client of each."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import httpx

from conftest import Gateway, free_port, wait_for_port


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


class Site:
    """A gateway with an http listener (HTTP/1.1) and an https one (HTTP/2), and a client
    of each."""

    def __init__(self, gw: Gateway, http: int, https: int, data: Path) -> None:
        self.gw = gw
        self.data = data
        context = ssl.create_default_context(cafile=str(data / "ca" / "root.crt"))
        self.bases = {"h1": f"http://127.0.0.1:{http}", "h2": f"https://localhost:{https}"}
        self.clients = {
            "h1": httpx.Client(timeout=30),
            "h2": httpx.Client(http1=False, http2=True, verify=context, timeout=30),
        }

    def get(self, proto: str, path: str, **headers: str) -> tuple[str, dict[str, Any]]:
        """(X-Cache, the JSON body) of a GET that must succeed."""
        r = self.clients[proto].get(self.bases[proto] + path, headers=headers)
        assert r.status_code == 200, r.text
        assert r.http_version == ("HTTP/2" if proto == "h2" else "HTTP/1.1")
        return r.headers["x-cache"], r.json()

    def send(self, proto: str, method: str, path: str, **headers: str) -> httpx.Response:
        return self.clients[proto].request(
            method, self.bases[proto] + path, headers=headers, content=b"{}"
        )

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


def start_site(
    gateway: Callable[..., Gateway], tmp_path: Path, routes: list[dict[str, Any]], **top: Any
) -> Site:
    """A gateway serving `routes` over HTTPS (HTTP/2) and over plain HTTP (HTTP/1.1)."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    http, https = free_port(), free_port()
    config = {
        "listen": {"http": f"127.0.0.1:{http}", "https": f"127.0.0.1:{https}"},
        "data_dir": str(data),
        "access_log": {"format": "off"},
        "sites": [
            {"hosts": ["localhost"], "routes": routes},
            {"hosts": ["*"], "tls": "off", "routes": routes},
        ],
        **top,
    }
    gw = gateway(config)
    wait_for_port(https)
    return Site(gw, http, https, data)
