"""Upstream failures become RFC 9457 problem documents (502/504) without leaking the
backend's address or a traceback; a response cut mid-body is cut for the client
too, and the gateway keeps serving. Also: a Unix-socket upstream."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Backend, Gateway, _Handler, free_port, simple_config


def config_with(upstreams: list[str], **proxy: Any) -> dict[str, Any]:
    config = simple_config(upstreams[0], free_port())
    config["sites"][0]["routes"][0]["proxy"].update(upstreams=upstreams, **proxy)
    return config


def assert_problem(r: httpx.Response, status: int, *addresses: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    doc = json.loads(r.content)
    assert doc["status"] == status
    assert doc["request_id"] == r.headers["x-request-id"]
    assert "Traceback" not in r.text
    for address in addresses:
        assert address not in r.text
    assert "127.0.0.1:" not in r.text
    return doc


def no_tracebacks(gw: Gateway) -> None:
    assert "Traceback" not in gw.stderr, gw.stderr


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def test_refused_upstream_is_502(gateway: Any, client: httpx.Client) -> None:
    dead = free_port()
    gw = gateway(config_with([f"http://127.0.0.1:{dead}"]))
    for method in ("GET", "POST"):
        r = client.request(method, gw.url + "/x", content=b"body" if method == "POST" else None)
        assert_problem(r, 502, str(dead))
    no_tracebacks(gw)


def test_refused_upstream_falls_over_to_the_next(
    backend: Backend, gateway: Any, client: httpx.Client
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    gw = gateway(config_with([dead, backend.url]))
    for i in range(6):
        assert client.get(gw.url + f"/rr/{i}").status_code == 200
    assert len(backend.requests) == 6


def test_garbage_from_upstream_is_502(
    proxied: Gateway, backend: Backend, client: httpx.Client
) -> None:
    assert_problem(client.get(proxied.url + "/garbage"), 502, str(backend.port))
    assert client.get(proxied.url + "/fine").status_code == 200
    no_tracebacks(proxied)


def test_backend_closing_before_answering_is_502(
    proxied: Gateway, backend: Backend, client: httpx.Client
) -> None:
    assert_problem(client.get(proxied.url + "/die-before"), 502, str(backend.port))
    r = client.post(proxied.url + "/die-before", content=b"payload")
    assert_problem(r, 502, str(backend.port))
    head = client.head(proxied.url + "/die-before")
    assert head.status_code == 502 and head.content == b""
    assert client.get(proxied.url + "/fine").status_code == 200


def test_read_timeout_is_504(backend: Backend, gateway: Any, client: httpx.Client) -> None:
    gw = gateway(config_with([backend.url], timeouts={"read": "1s"}))
    assert_problem(client.get(gw.url + "/slow?s=3"), 504, str(backend.port))
    no_tracebacks(gw)


def test_read_timeout_on_a_pooled_connection(backend: Backend, gateway: Any) -> None:
    """The slow request reuses the pooled connection, whose idle timer (10 s here)
    must not stand in for the 1 s read timeout."""
    gw = gateway(config_with([backend.url], timeouts={"read": "1s"}, idle_timeout="10s"))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        rfile = sock.makefile("rb")
        for path, status in (("/warm", 200), ("/slow?s=3", 504), ("/after", 200)):
            if path == "/slow?s=3":
                time.sleep(1.5)  # past the first read deadline: the timer now waits idle
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            line = rfile.readline()
            length = 0
            while (header := rfile.readline()) != b"\r\n":
                if header.lower().startswith(b"content-length:"):
                    length = int(header.split(b":")[1])
            rfile.read(length)
            assert int(line.split()[1]) == status, f"{path}: {line!r}"
        rfile.close()


def test_read_timeout_after_a_request_body(
    backend: Backend, gateway: Any, client: httpx.Client
) -> None:
    gw = gateway(config_with([backend.url], timeouts={"read": "1s", "send": "30s"}))
    assert client.get(gw.url + "/warm").status_code == 200
    r = client.post(gw.url + "/slow?s=3", content=b"x" * 100_000)
    assert_problem(r, 504, str(backend.port))
    r = client.post(gw.url + "/slow?s=3", content=iter([b"chunk"] * 3))
    assert_problem(r, 504, str(backend.port))


def test_backend_dying_mid_response_aborts_the_client(
    proxied: Gateway, client: httpx.Client
) -> None:
    with socket.create_connection(("127.0.0.1", proxied.port), timeout=10) as sock:
        sock.sendall(b"GET /die HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass  # an abort: as good as a FIN here, the body is short either way
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-length: 100000" in head.lower()
    assert body == b"partial"  # cut short, never padded or completed
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(proxied.url + "/die")
    # the gateway goes on serving, on new and pooled connections alike
    for _ in range(3):
        assert client.get(proxied.url + "/fine").status_code == 200
    no_tracebacks(proxied)


def test_connection_stays_usable_after_an_error(proxied: Gateway) -> None:
    with socket.create_connection(("127.0.0.1", proxied.port), timeout=10) as sock:
        rfile = sock.makefile("rb")
        for path, status in (("/garbage", 502), ("/die-before", 502), ("/ok", 200)):
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert int(rfile.readline().split()[1]) == status
            length = 0
            while (header := rfile.readline()) != b"\r\n":
                assert not header.lower().startswith(b"connection: close"), path
                if header.lower().startswith(b"content-length:"):
                    length = int(header.split(b":")[1])
            rfile.read(length)
        rfile.close()


def test_unix_upstream_missing_is_502_without_the_path(
    tmp_path: Any, gateway: Any, client: httpx.Client
) -> None:
    path = str(tmp_path / "nobody-home.sock")
    gw = gateway(config_with([f"unix:{path}"]))
    r = client.get(gw.url + "/x")
    assert_problem(r, 502, path, "nobody-home")
    no_tracebacks(gw)


class _UnixBackendServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """conftest's backend handler, listening on a Unix socket."""

    daemon_threads = True

    def __init__(self, path: str) -> None:
        super().__init__(path, _Handler)
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []


def test_unix_socket_upstream(tmp_path: Path, gateway: Any, client: httpx.Client) -> None:
    path = str(tmp_path / "backend.sock")
    server = _UnixBackendServer(path)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gw = gateway(simple_config(f"unix:{path}", free_port()))
        for i in range(3):
            r = client.get(gw.url + f"/unix/{i}?q=1")
            assert r.status_code == 200
            assert r.headers["content-type"] == "application/json"
        assert client.post(gw.url + "/up", content=b"abc").status_code == 200
        paths = [r["path"] for r in server.requests]
        assert paths == ["/unix/0?q=1", "/unix/1?q=1", "/unix/2?q=1", "/up"]
        assert server.requests[-1]["body_len"] == 3
        assert server.requests[-1]["sha256"] == hashlib.sha256(b"abc").hexdigest()
    finally:
        server.shutdown()
        server.server_close()


def test_connect_timeout_is_504(gateway: Any, client: httpx.Client) -> None:
    """A backend whose accept queue is full drops new SYNs: connecting hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    try:
        gw = gateway(config_with([f"http://127.0.0.1:{port}"], timeouts={"connect": "1s"}))
        assert_problem(client.get(gw.url + "/x"), 504, str(port))
        no_tracebacks(gw)
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_send_timeout_when_the_backend_stops_reading(gateway: Any) -> None:
    """The backend accepts a large upload but never reads it: once every buffer
    is full the send timeout answers 504 and the connection closes."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    port = listener.getsockname()[1]
    config = config_with([f"http://127.0.0.1:{port}"], timeouts={"send": "1s"})
    gw = gateway({**config, "limits": {"max_body_bytes": 0}})
    size = 256 << 20
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:

        def upload() -> None:
            with contextlib.suppress(OSError):
                sock.sendall(b"PUT /u HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
                block = bytes(1 << 20)
                for _ in range(size >> 20):
                    sock.sendall(block)

        threading.Thread(target=upload, daemon=True).start()
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 504"), head
    assert b"application/problem+json" in head
    listener.close()
    for conn in accepted:
        conn.close()
