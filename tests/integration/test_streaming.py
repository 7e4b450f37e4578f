"""Bodies stream through the gateway both ways: Content-Length and chunked uploads,
chunked downloads re-chunked for HTTP/1.1 clients and close-delimited for HTTP/1.0
ones, HEAD/204/304 and Expect: 100-continue, and 1 GB each way with the gateway's
memory staying flat."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from conftest import Backend, Gateway, free_port, pattern_digest, simple_config

GB = 1 << 30
BLOCK = bytes(range(256)) * 4096  # 1 MiB of the backend's download pattern
RSS_LIMIT_KB = 150 * 1024


def unlimited(backend: Backend) -> dict[str, Any]:
    return simple_config(backend.url, free_port(), limits={"max_body_bytes": 0})


class RssSampler:
    """Samples the gateway's RSS every 50 ms while a transfer runs."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.samples: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.05):
            self.samples.append(self.gateway.rss_kb())

    def __enter__(self) -> RssSampler:
        self.samples.append(self.gateway.rss_kb())
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.samples.append(self.gateway.rss_kb())

    @property
    def peak_kb(self) -> int:
        return max(self.samples)


@pytest.fixture
def big_gateway(backend: Backend, gateway: Callable[..., Gateway]) -> Gateway:
    return gateway(unlimited(backend))


def read_head(rfile: Any) -> tuple[int, dict[str, str]]:
    status = int(rfile.readline().split()[1])
    headers: dict[str, str] = {}
    while (line := rfile.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


@pytest.fixture
def conn(big_gateway: Gateway) -> Iterator[tuple[socket.socket, Any]]:
    sock = socket.create_connection(("127.0.0.1", big_gateway.port), timeout=30)
    rfile = sock.makefile("rb")
    yield sock, rfile
    rfile.close()
    sock.close()


# ------------------------------------------------------------------ uploads
def test_content_length_upload(big_gateway: Gateway, backend: Backend) -> None:
    body = BLOCK * 5 + b"tail"
    r = httpx.post(big_gateway.url + "/upload", content=body)
    assert r.status_code == 200
    seen = backend.requests[-1]
    assert seen["body_len"] == len(body)
    assert seen["sha256"] == hashlib.sha256(body).hexdigest()
    assert dict(seen["headers"])["content-length"] == str(len(body))


def test_chunked_upload(big_gateway: Gateway, backend: Backend) -> None:
    parts = [BLOCK[:1000], BLOCK, b"x" * 70000, b"end"]
    r = httpx.put(big_gateway.url + "/upload", content=iter(parts))  # chunked by httpx
    assert r.status_code == 200
    seen = backend.requests[-1]
    expected = b"".join(parts)
    assert seen["body_len"] == len(expected)
    assert seen["sha256"] == hashlib.sha256(expected).hexdigest()
    headers = dict(seen["headers"])
    assert headers["transfer-encoding"] == "chunked"
    assert "content-length" not in headers


def test_raw_chunked_upload_with_extensions_and_trailers(conn, backend: Backend) -> None:
    sock, rfile = conn
    sock.sendall(
        b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    status, _ = read_head(rfile)
    assert status == 200
    assert backend.requests[-1]["sha256"] == hashlib.sha256(b"hello world").hexdigest()


def test_delete_with_a_body_is_forwarded(big_gateway: Gateway, backend: Backend) -> None:
    r = httpx.request("DELETE", big_gateway.url + "/thing", content=b"reason")
    assert r.status_code == 200
    assert backend.requests[-1]["body_len"] == 6


# ---------------------------------------------------------------- downloads
def test_chunked_download_is_rechunked(conn, backend: Backend) -> None:
    sock, rfile = conn
    for n in (300_000, 1):
        sock.sendall(b"GET /chunked?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
        status, headers = read_head(rfile)
        assert status == 200
        assert headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in headers
        total = 0
        while size := int(rfile.readline().split(b";")[0], 16):
            data = rfile.read(size)
            assert set(data) == {ord("x")}
            total += len(data)
            assert rfile.readline() == b"\r\n"
        assert rfile.readline() == b"\r\n"
        assert total == n
    # still usable afterwards
    sock.sendall(b"GET /bytes?n=3 HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers = read_head(rfile)
    assert (status, headers["content-length"], rfile.read(3)) == (200, "3", b"\x00\x01\x02")


def test_http10_client_gets_close_delimited_body(conn) -> None:
    sock, rfile = conn
    sock.sendall(b"GET /chunked?n=200000 HTTP/1.0\r\nHost: x\r\n\r\n")
    status, headers = read_head(rfile)
    assert status == 200
    assert "transfer-encoding" not in headers and "content-length" not in headers
    assert headers.get("connection", "").lower() == "close"
    body = rfile.read()  # to EOF: the gateway closes to end the body
    assert body == b"x" * 200000


def test_http10_keep_alive_with_content_length(conn) -> None:
    sock, rfile = conn
    for n in (10, 20):
        sock.sendall(b"GET /bytes?n=%d HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n" % n)
        status, headers = read_head(rfile)
        assert status == 200 and headers["content-length"] == str(n)
        assert headers.get("connection", "").lower() == "keep-alive"
        assert rfile.read(n) == bytes(range(n))


def test_content_length_download(big_gateway: Gateway) -> None:
    n = 3 * len(BLOCK) + 17
    digest = hashlib.sha256()
    with httpx.stream("GET", big_gateway.url + f"/bytes?n={n}") as r:
        assert r.status_code == 200
        assert r.headers["content-length"] == str(n)
        for chunk in r.iter_raw():
            digest.update(chunk)
    assert digest.hexdigest() == pattern_digest(n)


# ------------------------------------------------------- bodiless answers
def test_head_204_304_have_no_body_and_keep_the_connection(conn, backend: Backend) -> None:
    sock, rfile = conn
    for method, path in (
        ("HEAD", "/bytes?n=5000"),
        ("GET", "/status?code=204"),
        ("GET", "/status?code=304"),
        ("HEAD", "/echo"),
    ):
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, headers = read_head(rfile)
        assert status == int(path[-3:]) if "code" in path else status == 200
        assert "transfer-encoding" not in headers
        if path == "/bytes?n=5000":
            assert headers["content-length"] == "5000"
    # no stray body bytes were sent: the next answer starts right where expected
    sock.sendall(b"GET /bytes?n=10 HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers = read_head(rfile)
    assert (status, rfile.read(10)) == (200, bytes(range(10)))
    assert [r["method"] for r in backend.requests] == ["HEAD", "GET", "GET", "HEAD", "GET"]


def test_expect_100_continue(conn, backend: Backend) -> None:
    sock, rfile = conn
    sock.sendall(
        b"PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n"
    )
    assert read_head(rfile) == (100, {})
    sock.sendall(b"hello world")
    status, headers = read_head(rfile)
    assert status == 200
    rfile.read(int(headers["content-length"]))
    assert backend.requests[-1]["body_len"] == 11
    assert "expect" not in dict(backend.requests[-1]["headers"])
    sock.sendall(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_head(rfile)[0] == 200


# ----------------------------------------------------------------- 1 GB
def test_one_gigabyte_upload_flat_rss(conn, big_gateway: Gateway, backend: Backend) -> None:
    sock, rfile = conn
    sock.sendall(b"POST /big-upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % GB)
    with RssSampler(big_gateway) as rss:
        for _ in range(GB // len(BLOCK)):
            sock.sendall(BLOCK)
        status, headers = read_head(rfile)
        body = rfile.read(int(headers["content-length"]))
    assert status == 200, body
    seen = backend.requests[-1]
    assert seen["body_len"] == GB
    assert seen["sha256"] == pattern_digest(GB)
    assert rss.peak_kb < RSS_LIMIT_KB, f"gateway RSS peaked at {rss.peak_kb} kB"
    print(f"1 GB upload: gateway RSS {min(rss.samples)}..{rss.peak_kb} kB")


def test_one_gigabyte_download_flat_rss(conn, big_gateway: Gateway) -> None:
    sock, rfile = conn
    sock.sendall(b"GET /bytes?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % GB)
    status, headers = read_head(rfile)
    assert status == 200 and headers["content-length"] == str(GB)
    digest = hashlib.sha256()
    left = GB
    with RssSampler(big_gateway) as rss:
        while left:
            data = rfile.read1(min(left, 1 << 20))
            assert data, f"connection closed with {left} bytes left"
            digest.update(data)
            left -= len(data)
    assert digest.hexdigest() == pattern_digest(GB)
    assert rss.peak_kb < RSS_LIMIT_KB, f"gateway RSS peaked at {rss.peak_kb} kB"
    print(f"1 GB download: gateway RSS {min(rss.samples)}..{rss.peak_kb} kB")


def test_slow_reader_download_flat_rss(conn, big_gateway: Gateway) -> None:
    """The client stops reading for a while: the gateway must pause the upstream
    rather than buffer the rest of a 256 MB body."""
    sock, rfile = conn
    n = 256 << 20
    sock.sendall(b"GET /bytes?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
    status, _ = read_head(rfile)
    assert status == 200
    with RssSampler(big_gateway) as rss:
        threading.Event().wait(1.5)  # not reading: buffers fill up and must stay bounded
        digest = hashlib.sha256()
        left = n
        while left:
            data = rfile.read1(min(left, 1 << 20))
            assert data
            digest.update(data)
            left -= len(data)
    assert digest.hexdigest() == pattern_digest(n)
    assert rss.peak_kb < RSS_LIMIT_KB, f"gateway RSS peaked at {rss.peak_kb} kB"


def test_body_arriving_while_the_upstream_connects(backend: Backend, gateway) -> None:
    """The head reaches the gateway alone and the body follows while the upstream
    connection is still being opened (no pooled connection): no byte may be lost."""
    config = unlimited(backend)
    config["sites"][0]["routes"][0]["proxy"]["max_idle_connections"] = 0
    gw = gateway(config)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rfile = sock.makefile("rb")
        for i in range(20):
            chunked = i % 2 == 1
            framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: 6000"
            sock.sendall(b"POST /up/%d HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n" % (i, framing))
            for _ in range(6):
                sock.sendall(b"3e8\r\n" + b"a" * 1000 + b"\r\n" if chunked else b"a" * 1000)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
            status, headers = read_head(rfile)
            rfile.read(int(headers["content-length"]))
            assert status == 200
            assert backend.requests[-1]["body_len"] == 6000, f"request {i}"
        rfile.close()


class EndlessBackend:
    """Streams a chunked body forever; `cut` is set once the gateway drops it."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.cut = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        sock, _ = self.listener.accept()
        with sock:
            sock.recv(65536)
            sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"%x\r\n%s\r\n" % (65536, b"e" * 65536)
            try:
                while True:
                    sock.sendall(chunk)
            except OSError:
                self.cut.set()


def test_client_leaving_a_download_releases_the_upstream(gateway: Any) -> None:
    endless = EndlessBackend()
    gw = gateway(simple_config(endless.url, free_port()))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        received = 0
        while received < 1 << 20:
            received += len(sock.recv(65536))
    # the client is gone: the gateway must stop pulling the endless body
    assert endless.cut.wait(10), "the upstream kept streaming to a client that left"
    endless.listener.close()
