"""Backends for load-balancing tests: each says who it is, can turn slow, fail its
health check, answer a chosen status, or (in its own process) be killed outright."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from conftest import free_port, wait_for_port


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        server = self.server
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path.startswith("/healthz"):
            with server.lock:
                server.checks += 1
                mode = server.health
                ok = server.checks % 2 == 0 if mode == "flap" else mode == "ok"
            time.sleep(server.delay)
            self._send(200 if ok else 503, b"ok" if ok else b"down")
            return
        with server.lock:
            server.hits += 1
            server.paths[self.path] += 1
            status = server.status
        time.sleep(server.delay)
        self._send(status, server.name.encode())

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Backend", self.server.name)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_HEAD = do_PUT = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class Controlled:
    """A threaded backend whose behaviour the test changes while it runs."""

    def __init__(self, name: str) -> None:
        self.server = _Server(("127.0.0.1", 0), _Handler)
        s = self.server
        s.name = name  # type: ignore[attr-defined]
        s.lock = threading.Lock()  # type: ignore[attr-defined]
        s.delay = 0.0  # type: ignore[attr-defined]
        s.status = 200  # type: ignore[attr-defined]
        s.health = "ok"  # type: ignore[attr-defined]
        s.hits = 0  # type: ignore[attr-defined]
        s.checks = 0  # type: ignore[attr-defined]
        s.paths = Counter()  # type: ignore[attr-defined]
        self.name = name
        self.url = f"http://127.0.0.1:{s.server_address[1]}"
        threading.Thread(target=s.serve_forever, daemon=True).start()

    def set(self, **values: Any) -> None:
        with self.server.lock:  # type: ignore[attr-defined]
            for key, value in values.items():
                setattr(self.server, key, value)

    @property
    def hits(self) -> int:
        with self.server.lock:  # type: ignore[attr-defined]
            return int(self.server.hits)  # type: ignore[attr-defined]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


_KILLABLE = r"""
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, log_path, name = int(sys.argv[1]), sys.argv[2], sys.argv[3]
log = open(log_path, "a", buffering=1)

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def handle_one(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        log.write(f"{self.command} {self.path}\n")
        if self.path.startswith("/slow"):
            time.sleep(3)
        body = name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Backend", name)
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = handle_one

class S(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

S(("127.0.0.1", port), H).serve_forever()
"""


class Killable:
    """A backend in its own process, so that SIGKILL takes every connection down with
    it; it logs each request as it arrives (before answering) to a file."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"{name}.log"
        self.log.touch()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _KILLABLE, str(self.port), str(self.log), name],
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        wait_for_port(self.port)

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


def controlled_backends() -> Iterator[Callable[[str], Controlled]]:
    """The body of a `controlled` fixture: `controlled(name)` starts a Controlled backend;
    every one is stopped at the end of the test."""
    made: list[Controlled] = []

    def make(name: str) -> Controlled:
        backend = Controlled(name)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.stop()
