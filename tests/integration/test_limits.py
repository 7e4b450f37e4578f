"""Size limits, client timeouts, connection limits, and one client's bad request
never disturbing another: real sockets to a real gateway and a real backend.

The gateway runs with small limits (1 KiB heads and bodies, 256-byte targets)
and one-second client timeouts, so every limit is reached fast.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from conftest import Backend, Gateway, free_port, simple_config

TIMEOUT = 1.0  # the gateway's header, body and keep-alive timeouts
WAIT = 5.0  # how long a client waits for something the gateway must do well before


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def problem(self, status: int) -> dict[str, Any]:
        assert self.status == status, self
        assert self.headers["content-type"] == "application/problem+json"
        doc: dict[str, Any] = json.loads(self.body)
        assert doc["status"] == status and doc["title"] and doc["detail"]
        assert "Traceback" not in self.body.decode() and "127.0.0.1" not in self.body.decode()
        return doc


class Client:
    """A raw keep-alive connection that reads responses one at a time."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.buf = b""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        self.buf += chunk
        return bool(chunk)

    def response(self) -> Response:
        while b"\r\n\r\n" not in self.buf:
            assert self._fill(), f"closed before a response head: {self.buf!r}"
        block, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = block.decode("latin-1").split("\r\n")
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
        }
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            assert self._fill(), "closed in a response body"
        body, self.buf = self.buf[:length], self.buf[length:]
        return Response(int(lines[0].split(" ")[1]), headers, body)

    def closed(self, timeout: float = WAIT) -> bool:
        """True once the gateway closed the connection (nothing more was sent)."""
        self.sock.settimeout(timeout)
        try:
            more = self._fill()
        except TimeoutError:
            return False
        assert not more, f"unexpected bytes: {self.buf!r}"
        return True

    def interim(self) -> bytes:
        while b"\r\n\r\n" not in self.buf:
            assert self._fill(), "closed before an interim response"
        block, _, self.buf = self.buf.partition(b"\r\n\r\n")
        return block


def get(path: str, extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n" + extra + b"\r\n"


def chunked_post(path: str, expect: bool = True) -> bytes:
    expectation = b"Expect: 100-continue\r\n" if expect else b""
    head = b"POST %s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n" % path.encode()
    return head + expectation + b"\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def upstream() -> Iterator[Backend]:
    b = Backend()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def gw(upstream: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    port = free_port()
    config = simple_config(
        upstream.url,
        port,
        limits={"max_header_bytes": "1KiB", "max_uri_bytes": 256, "max_body_bytes": "1KiB"},
        timeouts={"header": "1s", "body": "1s", "keepalive": "1s"},
    )
    workdir = tmp_path_factory.mktemp("limits")
    g = Gateway(workdir / "bastion.yaml", port, workdir)
    g.write_config(config)
    g.start()
    yield g
    g.stop()


@pytest.fixture
def backend(upstream: Backend) -> Backend:
    with upstream.server.lock:
        upstream.server.requests.clear()
    return upstream


def paths(backend: Backend) -> list[str]:
    return [r["path"] for r in backend.requests]


def rejected(port: int, data: bytes, status: int) -> None:
    with Client(port) as c:
        c.send(data)
        resp = c.response()
        resp.problem(status)
        assert resp.headers["connection"] == "close"
        assert c.closed()


def fine(port: int, data: bytes) -> Response:
    with Client(port) as c:
        c.send(data)
        resp = c.response()
        assert resp.status == 200, resp
        return resp


# -------------------------------------------------------------- size limits
def test_header_bytes_over_the_limit_is_431(gw: Gateway, backend: Backend) -> None:
    fine(gw.port, get("/ok", b"X-Big: " + b"a" * 600 + b"\r\n"))
    rejected(gw.port, get("/big", b"X-Big: " + b"a" * 1100 + b"\r\n"), 431)
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 40) for i in range(40))
    rejected(gw.port, get("/many", many), 431)
    # a head that never ends but keeps growing
    rejected(gw.port, get("/endless")[:-2] + b"X-Big: " + b"a" * 4000, 431)
    rejected(gw.port, b"GET /first HTTP/1.1\r\nX-Big: " + b"a" * 4000, 431)  # no header done
    assert paths(backend) == ["/ok"]


def test_uri_over_the_limit_is_414(gw: Gateway, backend: Backend) -> None:
    fine(gw.port, get("/" + "u" * 200))
    rejected(gw.port, get("/" + "u" * 300), 414)
    rejected(gw.port, b"GET /" + b"u" * 5000, 414)  # the request line never ends
    assert paths(backend) == ["/" + "u" * 200]


def test_content_length_over_the_limit_is_413_before_the_body(
    gw: Gateway, backend: Backend
) -> None:
    head = b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n"
    rejected(gw.port, head + b"\r\n", 413)  # answered without sending a byte of body
    with Client(gw.port) as c:  # no 100 Continue for a body that will be refused
        c.send(head + b"Expect: 100-continue\r\n\r\n")
        c.response().problem(413)
        assert c.closed()
    body = b"b" * 1024
    resp = fine(gw.port, b"POST /fits HTTP/1.1\r\nHost: t\r\nContent-Length: 1024\r\n\r\n" + body)
    assert json.loads(resp.body)["body_len"] == 1024
    assert paths(backend) == ["/fits"]


def test_chunked_body_growing_past_the_limit_is_413(gw: Gateway, backend: Backend) -> None:
    with Client(gw.port) as c:
        c.send(chunked_post("/grows"))
        assert c.interim().startswith(b"HTTP/1.1 100")  # the upstream exchange started
        c.send(chunk(b"a" * 400))
        c.send(chunk(b"b" * 400))
        c.send(chunk(b"c" * 400))
        resp = c.response()
        resp.problem(413)
        assert c.closed()
    with Client(gw.port) as c:
        c.send(chunked_post("/fits", expect=False) + chunk(b"a" * 500) + chunk(b"b" * 500))
        c.send(b"0\r\n\r\n")
        assert json.loads(c.response().body)["body_len"] == 1000
    assert paths(backend) == ["/fits"]


def test_bad_chunk_while_streaming_is_400(gw: Gateway, backend: Backend) -> None:
    with Client(gw.port) as c:
        c.send(chunked_post("/broken"))
        assert c.interim().startswith(b"HTTP/1.1 100")
        c.send(chunk(b"a" * 100))
        c.send(b"not-hex\r\n")
        c.response().problem(400)
        assert c.closed()
    fine(gw.port, get("/after"))
    assert paths(backend) == ["/after"]


# ----------------------------------------------------------------- timeouts
def test_slowloris_head_is_cut_off(gw: Gateway, backend: Backend) -> None:
    with Client(gw.port) as c:
        c.sock.settimeout(0.2)  # pacing: one byte per 0.2 s, never a whole head
        start = time.monotonic()
        drip = iter(b"GET /slow HTTP/1.1\r\nHost: t\r\n" + b"X-Slow: " + b"s" * 1000)
        closed = False
        while time.monotonic() - start < WAIT:
            try:
                c.send(bytes([next(drip)]))
                closed = not c._fill()
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
            if closed:
                break
        assert closed, "the gateway let a slow head run past its header timeout"
        if c.buf:
            Client.response(c).problem(408)
    assert paths(backend) == []


def test_idle_keepalive_connection_is_closed(gw: Gateway, backend: Backend) -> None:
    with Client(gw.port) as c:
        c.send(get("/one"))
        assert c.response().status == 200
        c.send(get("/two"))  # still open right after a response
        assert c.response().status == 200
        assert c.closed(), "an idle keep-alive connection was not closed"
    assert paths(backend) == ["/one", "/two"]


def test_short_timeouts_hold_on_a_reused_keepalive_connection(
    gateway: Callable[..., Gateway], backend: Backend
) -> None:
    # a long keep-alive timer is pending when the next request starts: the shorter
    # header and body timeouts must still apply
    port = free_port()
    timeouts = {"header": "1s", "body": "1s", "keepalive": "60s"}
    gateway(simple_config(backend.url, port, timeouts=timeouts))
    for slow in (
        b"GET /slow-head HTTP/1.1\r\nHost: t\r\n",
        b"POST /slow-body HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789",
    ):
        with Client(port) as c:
            c.send(get("/first"))
            assert c.response().status == 200
            c.send(slow)
            c.response().problem(408)
            assert c.closed()
    assert paths(backend) == ["/first", "/first"]


def test_connection_that_never_sends_is_closed(gw: Gateway) -> None:
    with Client(gw.port) as c:
        assert c.closed()


def test_max_connections(gateway: Callable[..., Gateway], backend: Backend) -> None:
    port = free_port()
    g = gateway(simple_config(backend.url, port, limits={"max_connections": 2}))
    first, second = Client(port), Client(port)
    for c in (first, second):
        c.send(get("/held"))
        assert c.response().status == 200
    with Client(port) as third:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            third.send(get("/third"))  # may already fail: the gateway dropped it
        assert third.closed(), "a third connection was served past max_connections"
    assert paths(backend) == ["/held", "/held"]
    first.sock.close()
    second.sock.close()
    deadline = time.monotonic() + WAIT
    while True:  # the gateway notices the closes asynchronously
        try:
            fine(g.port, get("/again"))
            break
        except (AssertionError, OSError):
            assert time.monotonic() < deadline, "no new connection accepted after closes"
            time.sleep(0.05)
    fine(g.port, get("/again"))


# ----------------------------------------------------------------- isolation
GARBAGE = {
    "request-line": b"HELLO\r\n\r\n",
    "framing": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    "headers-too-large": get("/x", b"X-Big: " + b"a" * 2000 + b"\r\n"),
    "bad-chunk": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
}


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_on_one_connection_spares_another(
    gw: Gateway, backend: Backend, garbage: bytes
) -> None:
    with Client(gw.port) as good:
        good.send(get("/before"))
        assert good.response().status == 200
        with Client(gw.port) as bad:
            bad.send(garbage)
            assert bad.response().status >= 400
            assert bad.closed()
        good.send(get("/after"))
        resp = good.response()
        assert resp.status == 200
        assert json.loads(resp.body)["path"] == "/after"
    assert paths(backend) == ["/before", "/after"]


def test_pipelined_requests_are_answered_in_order(gw: Gateway, backend: Backend) -> None:
    with Client(gw.port) as c:
        post = b"POST /p2 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
        c.send(get("/p1") + post + get("/p3"))
        got = [json.loads(c.response().body) for _ in range(3)]
        assert [d["path"] for d in got] == ["/p1", "/p2", "/p3"]
        assert got[1]["body_len"] == 3
        c.send(get("/p4"))  # and the connection is still good
        assert json.loads(c.response().body)["path"] == "/p4"


BAD_AFTER_GOOD = {
    "request-line": (b"NOT HTTP\r\n\r\n", 400),
    "missing-host": (b"GET /b HTTP/1.1\r\n\r\n", 400),
    "bad-chunk": (b"POST /b HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    "too-large": (get("/b", b"X-Big: " + b"a" * 2000 + b"\r\n"), 431),
    "body-too-large": (b"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 4096\r\n\r\n", 413),
}


@pytest.mark.parametrize(("bad", "status"), BAD_AFTER_GOOD.values(), ids=BAD_AFTER_GOOD.keys())
def test_malformed_request_pipelined_after_a_good_one(
    gw: Gateway, backend: Backend, bad: bytes, status: int
) -> None:
    with Client(gw.port) as c:
        c.send(get("/good") + get("/good2") + bad)
        assert json.loads(c.response().body)["path"] == "/good"
        assert json.loads(c.response().body)["path"] == "/good2"
        c.response().problem(status)
        assert c.closed()
    assert paths(backend) == ["/good", "/good2"]
