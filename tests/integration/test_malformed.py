"""Malformed requests (RFC 9112 framing), RFC 9457 error bodies and routing,
each through a real socket to a real gateway in front of a real backend.

One gateway per module keeps the file fast; every test starts with an empty
backend log, and "nothing forwarded" is checked after a sentinel request has
gone through the same gateway (so the gateway is also known to be alive).
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import Backend, Gateway, free_port, simple_config

READ_TIMEOUT = 3.0  # far above anything the gateway needs to answer and close


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    responses: list[Response] = field(default_factory=list)
    closed: bool = False  # the gateway closed (EOF or reset) before READ_TIMEOUT


def parse_responses(data: bytes, head: bool = False) -> list[Response]:
    """Every complete HTTP/1.1 response in `data` (answers to HEAD when `head`);
    trailing bytes fail the test."""
    out: list[Response] = []
    while data:
        block, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"incomplete response head: {data[:200]!r}"
        lines = block.decode("latin-1").split("\r\n")
        version, code, *_ = lines[0].split(" ", 2)
        assert version == "HTTP/1.1", lines[0]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"duplicate header {name}"
            headers[name.lower()] = value.strip()
        if head:
            body = b""
        elif "transfer-encoding" in headers:
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                body, rest = body + rest[:size], rest[size + 2 :]
                if size == 0:
                    break
        else:
            length = int(headers.get("content-length", "0"))
            assert len(rest) >= length, "response body cut short"
            body, rest = rest[:length], rest[length:]
        out.append(Response(int(code), headers, body))
        data = rest
    return out


def read_reply(sock: socket.socket, timeout: float = READ_TIMEOUT, head: bool = False) -> Reply:
    """Read until the gateway closes; `closed` is False if it never did."""
    sock.settimeout(timeout)
    chunks: list[bytes] = []
    closed = False
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        closed = True
    except (ConnectionResetError, BrokenPipeError):
        closed = True
    except TimeoutError:
        pass
    return Reply(parse_responses(b"".join(chunks), head), closed)


def exchange(port: int, data: bytes, timeout: float = READ_TIMEOUT, head: bool = False) -> Reply:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_reply(sock, timeout, head)


def assert_problem(resp: Response, status: int, *secrets: str) -> dict[str, Any]:
    assert resp.status == status, resp
    assert resp.headers["content-type"] == "application/problem+json"
    doc = json.loads(resp.body)
    assert doc["status"] == status
    assert isinstance(doc["title"], str) and doc["title"]
    assert isinstance(doc["detail"], str) and doc["detail"]
    text = resp.body.decode()
    assert "Traceback" not in text and 'File "' not in text
    for secret in secrets:
        assert secret not in text
    return doc


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def upstream() -> Iterator[Backend]:
    b = Backend()
    yield b
    b.stop()


def _start(config: dict[str, Any], workdir: Path) -> Gateway:
    workdir.mkdir()
    gw = Gateway(workdir / "bastion.yaml", int(config["listen"]["http"].rsplit(":", 1)[1]), workdir)
    gw.write_config(config)
    return gw.start()


@pytest.fixture(scope="module")
def gw(upstream: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = simple_config(upstream.url, free_port(), timeouts={"header": "2s", "body": "2s"})
    g = _start(config, tmp_path_factory.mktemp("malformed") / "gw")
    yield g
    g.stop()


@pytest.fixture
def backend(upstream: Backend) -> Backend:
    with upstream.server.lock:
        upstream.server.requests.clear()
    return upstream


def assert_nothing_forwarded(gw: Gateway, backend: Backend) -> None:
    reply = exchange(gw.port, b"GET /sentinel HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert [r.status for r in reply.responses] == [200]
    assert [r["path"] for r in backend.requests] == ["/sentinel"]


def assert_rejected(gw: Gateway, backend: Backend, data: bytes, status: int) -> dict[str, Any]:
    reply = exchange(gw.port, data)
    assert reply.closed, "the gateway did not close the connection"
    assert len(reply.responses) == 1, reply
    resp = reply.responses[0]
    doc = assert_problem(resp, status, backend.url.split("//")[1])
    assert resp.headers.get("connection") == "close"
    assert_nothing_forwarded(gw, backend)
    return doc


# ------------------------------------------------------------ framing → 400
H = b"Host: t\r\n"
P = b"POST / HTTP/1.1\r\n" + H  # a POST head, to be continued
G = b"GET / HTTP/1.1\r\n" + H
TE = b"Transfer-Encoding: chunked\r\n\r\n"
FRAMING_400 = {
    "cl-and-te": P + b"Content-Length: 5\r\n" + TE + b"0\r\n\r\n",
    "te-and-cl": P + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "two-content-lengths": P + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "cl-plus": P + b"Content-Length: +5\r\n\r\nhello",
    "cl-list": P + b"Content-Length: 5, 5\r\n\r\nhello",
    "cl-alpha": P + b"Content-Length: abc\r\n\r\nhello",
    "cl-negative": P + b"Content-Length: -1\r\n\r\nhello",
    "chunk-size-invalid": P + TE + b"zz\r\nhello\r\n0\r\n\r\n",
    "chunk-size-overflow": P + TE + b"fffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "chunk-missing-crlf": P + TE + b"5\r\nhelloXX0\r\n\r\n",
    "chunked-twice": P + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "obs-fold": G + b"X-A: a\r\n b\r\n\r\n",
    "bare-cr-in-value": G + b"X-A: a\rb\r\n\r\n",
    "nul-in-value": G + b"X-A: a\x00b\r\n\r\n",
    "nul-in-name": G + b"X-\x00A: b\r\n\r\n",
    "space-before-colon": G + b"X-A : b\r\n\r\n",
    "host-with-space": b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    "host-with-colons": b"GET / HTTP/1.1\r\nHost: x:y:z\r\n\r\n",
    "host-bad-port": b"GET / HTTP/1.1\r\nHost: x:80a\r\n\r\n",
    "two-hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "missing-host": b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n",
    "http10-chunked": b"POST / HTTP/1.0\r\n" + TE + b"0\r\n\r\n",
    "garbage-line": b"HELLO THERE\r\n\r\n",
    "tls-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
    "space-in-target": b"GET /a b HTTP/1.1\r\n" + H + b"\r\n",
    "lowercase-version": b"GET / http/1.1\r\n" + H + b"\r\n",
    "dotdot-above-root": b"GET /../x HTTP/1.1\r\n" + H + b"\r\n",
    "encoded-dotdot-above-root": b"GET /%2e%2e/x HTTP/1.1\r\n" + H + b"\r\n",
    "encoded-nul": b"GET /a%00b HTTP/1.1\r\n" + H + b"\r\n",
    "bad-escape": b"GET /a%zz HTTP/1.1\r\n" + H + b"\r\n",
    "dotdot-behind-encoded-slash": b"GET /a/..%2fb HTTP/1.1\r\n" + H + b"\r\n",
    "dotdot-semicolon": b"GET /a/..;/b HTTP/1.1\r\n" + H + b"\r\n",
    "fragment": b"GET /a#b HTTP/1.1\r\n" + H + b"\r\n",
    "absolute-form-ftp": b"GET ftp://t/x HTTP/1.1\r\n" + H + b"\r\n",
}


@pytest.mark.parametrize("data", FRAMING_400.values(), ids=FRAMING_400.keys())
def test_malformed_framing_is_400_and_close(gw: Gateway, backend: Backend, data: bytes) -> None:
    assert_rejected(gw, backend, data, 400)


UNKNOWN_CODINGS = {
    "gzip": b"gzip",
    "gzip-chunked": b"gzip, chunked",
    "identity": b"identity",
}


@pytest.mark.parametrize("coding", UNKNOWN_CODINGS.values(), ids=UNKNOWN_CODINGS.keys())
def test_unknown_transfer_coding_is_501(gw: Gateway, backend: Backend, coding: bytes) -> None:
    data = b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: " + coding + b"\r\n\r\n0\r\n\r\n"
    assert_rejected(gw, backend, data, 501)


REFUSED_METHODS = {
    "connect-authority": b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    # the bytes after a CONNECT would be tunnel data: the GET behind it is not served
    "connect-then-get": b"CONNECT / HTTP/1.1\r\n" + H + b"\r\n" + G + b"\r\n",
    "trace": b"TRACE / HTTP/1.1\r\n" + H + b"\r\n",
}


@pytest.mark.parametrize("data", REFUSED_METHODS.values(), ids=REFUSED_METHODS.keys())
def test_connect_and_trace_are_501_and_never_forwarded(
    gw: Gateway, backend: Backend, data: bytes
) -> None:
    """A backend would open a tunnel for CONNECT, or echo the forwarded (and injected)
    headers back for TRACE: the gateway refuses both itself."""
    doc = assert_rejected(gw, backend, data, 501)
    assert data.split(b" ", 1)[0].decode() in doc["detail"]


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/3.0", b"HTTP/0.9"])
def test_unsupported_version_is_505(gw: Gateway, backend: Backend, version: bytes) -> None:
    assert_rejected(gw, backend, b"GET / " + version + b"\r\n" + H + b"\r\n", 505)


def test_http10_without_host_is_accepted(gw: Gateway, backend: Backend) -> None:
    reply = exchange(gw.port, b"GET /ten HTTP/1.0\r\n\r\n")
    assert reply.closed  # HTTP/1.0 without keep-alive
    assert [r.status for r in reply.responses] == [200]
    assert [r["path"] for r in backend.requests] == ["/ten"]


@pytest.mark.parametrize(
    "fields",
    [
        b"Connection: keep-alive\r\n",
        b"Proxy-Connection: keep-alive\r\n",
        b"Proxy-Connection: Keep-Alive\r\nConnection: te\r\n",
        b"Connection: x-a\r\nProxy-Connection: keep-alive\r\nX-A: 1\r\n",
    ],
    ids=["connection", "proxy-connection", "proxy-connection-and-another-token", "named-field"],
)
def test_http10_kept_alive_is_still_http10(gw: Gateway, backend: Backend, fields: bytes) -> None:
    """llhttp keeps an HTTP/1.0 connection open for a keep-alive token in Connection or in
    Proxy-Connection. The parser takes a request kept open without such a field for
    HTTP/1.1 without asking llhttp for the version (http1/head.py): a 1.0 request that
    llhttp keeps open must still be read as 1.0 (no Host needed, no chunked answer)."""
    ten = b"GET /ten HTTP/1.0\r\n" + fields + b"\r\n"
    reply = exchange(gw.port, ten + ten, timeout=2.0)
    assert [r.status for r in reply.responses] == [200, 200]
    for response in reply.responses:
        assert response.headers["connection"] == "keep-alive"
        assert "transfer-encoding" not in response.headers
    assert [r["path"] for r in backend.requests] == ["/ten", "/ten"]


@pytest.mark.parametrize(
    "data",
    [
        b"GET /ten HTTP/1.1\r\n" + H + b"\r\n",
        b"GET /ten HTTP/1.1\r\n" + H + b"Connection: keep-alive\r\n\r\n",
        b"GET /ten HTTP/1.1\r\n" + H + b"Proxy-Connection: close\r\n\r\n",
        b"GET /ten HTTP/1.1\r\nX-A: 1\r\n\r\n",
    ],
    ids=["plain", "keep-alive-token", "proxy-connection", "no-host"],
)
def test_http11_is_read_as_http11_whatever_its_connection_fields(
    gw: Gateway, backend: Backend, data: bytes
) -> None:
    reply = exchange(gw.port, data, timeout=2.0)
    if b"Host:" not in data:
        assert [r.status for r in reply.responses] == [400]  # HTTP/1.1 needs a Host
        assert backend.requests == []
        return
    assert [r.status for r in reply.responses] == [200]
    assert "transfer-encoding" not in reply.responses[0].headers  # (a length-framed answer)
    # kept open, as 1.1 is by default, unless a close token says otherwise (llhttp reads
    # Proxy-Connection's as Connection's)
    closes = b"close" in data
    assert reply.closed is closes
    assert reply.responses[0].headers.get("connection") == ("close" if closes else None)


@pytest.mark.parametrize(
    "first",
    [b"GET /ten HTTP/1.0\r\n\r\n", b"GET /ten HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n"],
    ids=["http10", "connection-close"],
)
def test_bytes_after_a_closing_request_are_not_answered(
    gw: Gateway, backend: Backend, first: bytes
) -> None:
    """What follows a request that ends the connection is no request: the client gets
    the first answer and the close, not a 400 for the rest (nginx does the same)."""
    reply = exchange(gw.port, first + G + b"\r\n")
    assert reply.closed
    assert [r.status for r in reply.responses] == [200]
    assert [r["path"] for r in backend.requests] == ["/ten"]


@pytest.mark.parametrize(
    "data",
    [
        b"HEAD /x HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"HEAD #x HTTP/1.1\r\n" + H + b"\r\n",
        b"HEAD /a\x0bb HTTP/1.1\r\n" + H + b"\r\n",
    ],
    ids=["two-lengths", "bad-target-start", "ctl-in-target"],
)
def test_a_refused_head_request_gets_no_body(gw: Gateway, backend: Backend, data: bytes) -> None:
    """A HEAD refused while its head is parsed still gets an answer without a body:
    bytes after it would be read as the start of a next answer."""
    reply = exchange(gw.port, data, head=True)
    assert [r.status for r in reply.responses] == [400]
    assert reply.closed
    assert_nothing_forwarded(gw, backend)


def test_garbage_after_a_head_request_gets_a_whole_answer(gw: Gateway, backend: Backend) -> None:
    """Bytes that are no request after a HEAD are answered with a 400 that has its body:
    the method of the HEAD before must not carry over to them."""
    data = b"HEAD /h HTTP/1.1\r\n" + H + b"\r\n" + b";e\x96 garbage\r\n\r\n"
    with socket.create_connection(("127.0.0.1", gw.port), timeout=READ_TIMEOUT) as sock:
        sock.sendall(data)
        sock.settimeout(READ_TIMEOUT)
        raw = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                raw += chunk
    first, _, rest = raw.partition(b"\r\n\r\n")  # the HEAD's answer: a head only
    assert first.startswith(b"HTTP/1.1 200 ")
    (refusal,) = parse_responses(rest)
    assert_problem(refusal, 400)


def test_upstream_down_502_hides_the_address(
    gateway: Callable[..., Gateway], backend: Backend
) -> None:
    dead = free_port()
    g = gateway(simple_config(f"http://127.0.0.1:{dead}", free_port()))
    reply = exchange(g.port, b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert len(reply.responses) == 1
    assert_problem(reply.responses[0], 502, str(dead), "127.0.0.1")


# ------------------------------------------------------------------ routing
def _respond(path: str, body: str, **extra: Any) -> dict[str, Any]:
    return {"path": path, "respond": {"status": 200, "body": body}, **extra}


@pytest.fixture(scope="module")
def router(upstream: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = {
        "listen": {"http": f"127.0.0.1:{free_port()}"},
        "access_log": {"format": "off"},
        "timeouts": {"header": "2s", "body": "2s"},
        "sites": [
            {"hosts": ["*.example.test"], "routes": [_respond("/", "wild-host")]},
            {"hosts": ["www.example.test"], "routes": [_respond("/", "exact-host")]},
            {
                "hosts": ["api.example.test"],
                "routes": [
                    _respond("~ ^/a/", "regex-a"),
                    _respond("~ ^/v[0-9]+/", "regex-v"),
                    _respond("/a/", "prefix-a"),
                    _respond("/a/b", "prefix-ab"),
                    _respond("= /a/b", "exact-ab"),
                    _respond("/m/", "m-get", methods=["GET"]),
                    _respond("/m/", "m-post", methods=["POST", "PUT"]),
                    {"path": "/api/", "proxy": {"upstreams": [upstream.url]}},
                ],
            },
        ],
    }
    g = _start(config, tmp_path_factory.mktemp("router") / "gw")
    yield g
    g.stop()


def get(port: int, target: str, host: str = "api.example.test", method: str = "GET") -> Response:
    data = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    reply = exchange(port, data.encode(), head=method == "HEAD")
    assert reply.closed
    assert len(reply.responses) == 1
    return reply.responses[0]


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/a/b", "exact-ab"),  # exact beats the prefix of the same text
        ("/a/bc", "prefix-ab"),  # longest prefix
        ("/a/b/c", "prefix-ab"),
        ("/a/x", "prefix-a"),  # a prefix beats a regex listed first
        ("/v2/x", "regex-v"),  # regex only when no exact or prefix matches
        ("/a/./b", "exact-ab"),  # normalised before matching
        ("//a//b", "exact-ab"),
        ("/x/../a/b", "exact-ab"),
        ("/%61/b", "exact-ab"),
        ("/a/b?q=1", "exact-ab"),
    ],
)
def test_path_precedence(router: Gateway, path: str, route: str) -> None:
    resp = get(router.port, path)
    assert (resp.status, resp.body) == (200, route.encode())


@pytest.mark.parametrize(
    ("host", "route"),
    [
        ("www.example.test", "exact-host"),
        ("WWW.Example.Test:8080", "exact-host"),
        ("www.example.test.", "exact-host"),  # a fully qualified name is the same site
        ("other.example.test", "wild-host"),
        ("deep.www.example.test", "wild-host"),
    ],
)
def test_host_precedence(router: Gateway, host: str, route: str) -> None:
    resp = get(router.port, "/", host)
    assert (resp.status, resp.body) == (200, route.encode())


def test_star_site_is_the_last_resort(gateway: Callable[..., Gateway]) -> None:
    sites = [
        {"hosts": ["*"], "routes": [_respond("/", "any-host")]},
        {"hosts": ["*.example.test"], "routes": [_respond("/", "wild-host")]},
        {"hosts": ["www.example.test"], "routes": [_respond("/", "exact-host")]},
    ]
    g = gateway({"access_log": {"format": "off"}, "sites": sites})
    for host, route in [
        ("www.example.test", "exact-host"),
        ("a.example.test", "wild-host"),
        ("example.test", "any-host"),
        ("elsewhere.test", "any-host"),
    ]:
        assert get(g.port, "/", host).body == route.encode(), host


@pytest.mark.parametrize(
    ("host", "path"), [("nowhere.test", "/"), ("example.test", "/"), ("api.example.test", "/z")]
)
def test_no_route_is_404_problem(router: Gateway, host: str, path: str) -> None:
    resp = get(router.port, path, host)
    assert_problem(resp, 404)


def test_method_mismatch_is_405_with_allow(router: Gateway) -> None:
    assert get(router.port, "/m/x", method="PUT").body == b"m-post"
    assert get(router.port, "/m/x", method="HEAD").status == 200  # GET implies HEAD
    resp = get(router.port, "/m/x", method="DELETE")
    assert_problem(resp, 405)
    allowed = {m.strip() for m in resp.headers["allow"].split(",")}
    assert allowed == {"GET", "HEAD", "POST", "PUT"}


def test_dot_segments_route_like_the_normalised_path(router: Gateway, backend: Backend) -> None:
    assert get(router.port, "/a/../api/x").status == 200
    assert get(router.port, "/a/%2e%2e/api/y").status == 200
    paths = [r["path"] for r in backend.requests]
    assert len(paths) == 2
    assert all(p.endswith(("/api/x", "/api/y")) for p in paths), paths
    resp = get(router.port, "/../api/x")
    assert_problem(resp, 400)
    assert len(backend.requests) == 2


def test_absolute_form_routes_on_the_target_host(router: Gateway, backend: Backend) -> None:
    resp = get(router.port, "http://www.example.test/", host="api.example.test")
    assert resp.body == b"exact-host"
    resp = get(router.port, "http://api.example.test:80/api/abs?q=1", host="www.example.test")
    assert resp.status == 200
    assert [r["path"] for r in backend.requests] == ["/api/abs?q=1"]
    assert json.loads(resp.body)["path"] == "/api/abs?q=1"
