"""Proxying through the real gateway: keep-alive both ways, upstream pool reuse and
stale connections, request/response header rewriting, strip_prefix and upstream
responses that are odd but valid (or not)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from conftest import Backend, free_port, raw_request, simple_config


# ----------------------------------------------------------------- raw client
@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    chunked: bool = False

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]


class RawClient:
    """One client connection, sending raw bytes and parsing answers one by one."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.rfile = self.sock.makefile("rb")

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self, head_only: bool = False) -> Reply:
        line = self.rfile.readline()
        assert line.startswith(b"HTTP/1."), f"not a status line: {line!r}"
        status = int(line.split()[1])
        headers: list[tuple[str, str]] = []
        while (line := self.rfile.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.strip().lower(), value.strip()))
        reply = Reply(status, headers, b"")
        if head_only or status < 200 or status in (204, 304):
            return reply
        if (reply.header("transfer-encoding") or "").lower() == "chunked":
            reply.chunked = True
            parts = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b""):
                pass
            reply.body = b"".join(parts)
        elif (length := reply.header("content-length")) is not None:
            reply.body = self.rfile.read(int(length))
        else:
            reply.body = self.rfile.read()
        return reply

    def get(self, path: str, extra: str = "", method: str = "GET") -> Reply:
        self.send(f"{method} {path} HTTP/1.1\r\nHost: test.local\r\n{extra}\r\n".encode())
        return self.reply(head_only=method == "HEAD")

    def is_closed(self) -> bool:
        self.sock.settimeout(1.0)
        try:
            return self.sock.recv(1) == b""
        except TimeoutError:
            return False


@pytest.fixture
def client_factory() -> Iterator[Callable[[int], RawClient]]:
    made: list[RawClient] = []

    def make(port: int) -> RawClient:
        made.append(RawClient(port))
        return made[-1]

    yield make
    for c in made:
        c.close()


# ---------------------------------------------------------------- tiny backend
@dataclass
class Seen:
    port: int
    nth: int  # index of the request on its connection
    method: str
    target: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def ok_answer(seen: Seen) -> bytes | None:
    return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class TinyBackend:
    """A raw-socket HTTP/1.1 keep-alive backend that records the peer port of every
    request. `answer(seen)` returns the response bytes, or None to close the
    connection without answering (an HTTP/1.0 answer is ended by closing);
    `idle_close` closes connections idle that long."""

    def __init__(
        self, answer: Callable[[Seen], bytes | None] = ok_answer, idle_close: float | None = None
    ) -> None:
        self.answer = answer
        self.idle_close = idle_close
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, peer = self.listener.accept()
            except OSError:
                return
            self.conns.append(sock)
            threading.Thread(target=self._serve, args=(sock, peer[1]), daemon=True).start()

    def _serve(self, sock: socket.socket, port: int) -> None:
        sock.settimeout(self.idle_close)
        rfile = sock.makefile("rb")
        nth = 0
        try:
            while line := rfile.readline():
                method, target, _ = line.decode("latin-1").split(" ", 2)
                seen = Seen(port, nth, method, target)
                while (line := rfile.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    seen.headers.append((name.strip().lower(), value.strip()))
                length = int(dict(seen.headers).get("content-length", "0"))
                seen.body = rfile.read(length) if length else b""
                with self.lock:
                    self.seen.append(seen)
                nth += 1
                answer = self.answer(seen)
                if answer is None:
                    break
                sock.sendall(answer)
                if answer.startswith(b"HTTP/1.0"):
                    break  # a close-delimited response
        except (OSError, ValueError):
            pass
        finally:
            rfile.close()
            sock.close()

    def ports(self) -> set[int]:
        with self.lock:
            return {s.port for s in self.seen}

    def stop(self) -> None:
        self.listener.close()
        for sock in self.conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def tiny() -> Iterator[Callable[..., TinyBackend]]:
    made: list[TinyBackend] = []

    def make(*args: Any, **kwargs: Any) -> TinyBackend:
        made.append(TinyBackend(*args, **kwargs))
        return made[-1]

    yield make
    for b in made:
        b.stop()


def proxy_config(upstream: str, **proxy: Any) -> dict[str, Any]:
    config = simple_config(upstream, free_port())
    config["sites"][0]["routes"][0]["proxy"].update(proxy)
    return config


# --------------------------------------------------------------- keep-alive
def test_sequential_requests_reuse_one_upstream_connection(tiny, gateway, client_factory) -> None:
    backend = tiny()
    gw = gateway(proxy_config(backend.url))
    client = client_factory(gw.port)
    for i in range(25):
        reply = client.get(f"/n/{i}")
        assert (reply.status, reply.body) == (200, b"ok")
        assert reply.header("connection") is None
    assert len(backend.seen) == 25
    assert len(backend.ports()) == 1, f"upstream connections used: {backend.ports()}"
    # pipelined requests are answered in order over the same upstream connection
    client.send(b"".join(b"GET /p/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5)))
    assert [client.reply().body for _ in range(5)] == [b"ok"] * 5
    assert [s.target for s in backend.seen[-5:]] == [f"/p/{i}" for i in range(5)]
    # a second client connection, used after the first, takes the same pooled connection
    other = client_factory(gw.port)
    assert other.get("/again").status == 200
    assert len(backend.ports()) == 1


def test_backend_closing_idle_connection_is_not_a_client_error(
    tiny, gateway, client_factory
) -> None:
    backend = tiny(idle_close=0.3)
    gw = gateway(proxy_config(backend.url))
    client = client_factory(gw.port)
    assert client.get("/first").status == 200
    time.sleep(0.8)  # the backend has dropped the pooled connection meanwhile
    assert client.get("/second").status == 200
    assert client.get("/third").status == 200
    assert len(backend.ports()) == 2


def test_gateway_closes_upstream_connections_idle_past_idle_timeout(
    tiny, gateway, client_factory
) -> None:
    backend = tiny()
    gw = gateway(proxy_config(backend.url, idle_timeout="0.5s"))
    client = client_factory(gw.port)
    assert client.get("/first").status == 200
    assert client.get("/second").status == 200
    time.sleep(1.5)  # the pooled connection is past its idle timeout
    assert client.get("/third").status == 200
    ports = [s.port for s in backend.seen]
    assert ports[0] == ports[1] != ports[2], ports


def _answer_once_per_connection(seen: Seen) -> bytes | None:
    # keeps the connection open, then drops it when the next request arrives: a
    # pooled connection that went stale just as the gateway reused it
    return ok_answer(seen) if seen.nth == 0 else None


def test_stale_pooled_connection_get_is_retried(tiny, gateway, client_factory) -> None:
    backend = tiny(_answer_once_per_connection)
    gw = gateway(proxy_config(backend.url))
    client = client_factory(gw.port)
    for i in range(3):
        reply = client.get(f"/get/{i}")
        assert (reply.status, reply.body) == (200, b"ok"), reply
    # each reuse hit a stale connection and was retried on a fresh one
    targets = [s.target for s in backend.seen]
    assert targets == ["/get/0", "/get/1", "/get/1", "/get/2", "/get/2"]


def test_stale_pooled_connection_post_is_not_retried(tiny, gateway, client_factory) -> None:
    backend = tiny(_answer_once_per_connection)
    gw = gateway(proxy_config(backend.url))
    client = client_factory(gw.port)
    post = "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    client.send(post.encode())
    assert client.reply().status == 200
    client.send(post.encode())
    reply = client.reply()
    assert reply.status == 502
    assert reply.header("content-type") == "application/problem+json"
    assert [s.method for s in backend.seen] == ["POST", "POST"]  # sent once, not retried
    assert all(s.body == b"hello" for s in backend.seen)


# ------------------------------------------------------------------ headers
def test_hop_by_hop_headers_removed_both_ways(tiny, gateway, client_factory) -> None:
    def answer(seen: Seen) -> bytes:
        return (
            b"HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: secret\r\n"
            b"Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nTrailer: X-T\r\n"
            b"Upgrade: h2c\r\nProxy-Connection: keep-alive\r\nX-Request-ID: backend\r\n"
            b"X-End: kept\r\nContent-Length: 2\r\n\r\nok"
        )

    backend = tiny(answer)
    gw = gateway(proxy_config(backend.url))
    client = client_factory(gw.port)
    reply = client.get(
        "/hop",
        "Connection: keep-alive, X-Client-Hop\r\nX-Client-Hop: 1\r\n"
        "Keep-Alive: 300\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\n"
        "Proxy-Authorization: Basic Zm9vOmJhcg==\r\nProxy-Connection: keep-alive\r\n"
        "X-Normal: yes\r\n",
    )
    assert reply.status == 200 and reply.body == b"ok"
    names = {k for k, _ in reply.headers}
    assert "connection" not in names and "proxy-connection" not in names
    for hop in ("x-hop", "keep-alive", "proxy-authenticate", "trailer", "upgrade"):
        assert hop not in names, f"{hop} relayed to the client: {reply.headers}"
    assert reply.header("x-end") == "kept"
    assert len(reply.all("x-request-id")) == 1 and reply.header("x-request-id") != "backend"
    sent = dict(backend.seen[0].headers)
    for hop in ("x-client-hop", "keep-alive", "te", "trailer", "upgrade", "proxy-authorization"):
        assert hop not in sent, f"{hop} forwarded upstream: {sent}"
    assert "proxy-connection" not in sent
    assert sent.get("connection", "keep-alive").lower() == "keep-alive"
    assert sent["x-normal"] == "yes"
    assert client.get("/still-open").status == 200


def test_forwarded_headers_from_an_untrusted_client(backend: Backend, gateway) -> None:
    gw = gateway(simple_config(backend.url, free_port()))
    r = httpx.get(
        gw.url + "/fwd",
        headers={
            "Host": "shop.example",
            "X-Forwarded-For": "6.6.6.6",
            "X-Real-IP": "6.6.6.6",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "evil.example",
            "X-Request-ID": "client-chosen",
        },
    )
    assert r.status_code == 200
    seen = dict(backend.requests[-1]["headers"])
    assert seen["host"] == "shop.example"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-real-ip"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == "shop.example"
    rid = r.headers["x-request-id"]
    assert rid and rid != "client-chosen" and seen["x-request-id"] == rid
    assert [k for k, _ in backend.requests[-1]["headers"]].count("x-forwarded-for") == 1


def test_forwarded_headers_from_a_trusted_proxy(backend: Backend, gateway) -> None:
    gw = gateway(simple_config(backend.url, free_port(), trusted_proxies=["127.0.0.0/8"]))
    r = httpx.get(
        gw.url + "/fwd",
        headers={
            "X-Forwarded-For": "203.0.113.9, 10.1.1.1",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "public.example",
            "X-Request-ID": "edge-42",
        },
    )
    assert r.status_code == 200
    seen = dict(backend.requests[-1]["headers"])
    assert seen["x-forwarded-for"] == "203.0.113.9, 10.1.1.1, 127.0.0.1"
    assert seen["x-real-ip"] == "10.1.1.1"  # rightmost address that is not trusted
    assert seen["x-forwarded-proto"] == "https"
    assert seen["x-forwarded-host"] == "public.example"
    assert seen["x-request-id"] == "edge-42" == r.headers["x-request-id"]


def test_host_rewritten_without_preserve_host(backend: Backend, gateway) -> None:
    gw = gateway(proxy_config(backend.url, preserve_host=False))
    r = httpx.get(gw.url + "/h", headers={"Host": "shop.example"})
    assert r.status_code == 200
    seen = dict(backend.requests[-1]["headers"])
    assert seen["host"] == f"127.0.0.1:{backend.port}"
    assert seen["x-forwarded-host"] == "shop.example"


def test_strip_prefix(backend: Backend, gateway) -> None:
    config = simple_config(backend.url, free_port())
    config["sites"][0]["routes"] = [
        {"path": "/api/", "strip_prefix": True, "proxy": {"upstreams": [backend.url]}},
        {"path": "/keep/", "proxy": {"upstreams": [backend.url]}},
    ]
    gw = gateway(config)
    with httpx.Client(base_url=gw.url) as c:
        assert c.get("/api/users/7?x=1&y=%20").status_code == 200
        assert backend.requests[-1]["path"] == "/users/7?x=1&y=%20"
        assert c.get("/api/").status_code == 200
        assert backend.requests[-1]["path"] == "/"
    for target, forwarded in (("/%61pi/users?x=1", "/users?x=1"), ("//api/a%20b", "/a%20b")):
        assert raw_request(
            gw.port, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        ).startswith(b"HTTP/1.1 200")
        assert backend.requests[-1]["path"] == forwarded, target
    with httpx.Client(base_url=gw.url) as c:
        assert c.get("/keep/a?b=c").status_code == 200
        assert backend.requests[-1]["path"] == "/keep/a?b=c"
        assert c.get("/other").status_code == 404
    assert len(backend.requests) == 5


# ------------------------------------------------- odd upstream responses
def test_odd_but_valid_upstream_responses(tiny, gateway, client_factory) -> None:
    answers = {
        "/http10": b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close",
        "/interim": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n"
        b"Link: </a.css>; rel=preload\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\nmade",
        "/cookies": b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
        b"Content-Length: 0\r\n\r\n",
    }
    backend = tiny(lambda seen: answers[seen.target])
    gw = gateway(proxy_config(backend.url))
    client = client_factory(gw.port)
    reply = client.get("/http10")  # re-framed as chunked for an HTTP/1.1 client
    assert (reply.status, reply.body, reply.chunked) == (200, b"until close", True)
    reply = client.get("/interim")  # 1xx from upstream are not relayed
    assert (reply.status, reply.body) == (201, b"made")
    reply = client.get("/cookies")
    assert reply.all("set-cookie") == ["a=1", "b=2"]
    assert client.get("/http10").body == b"until close"


def test_unsolicited_101_is_a_bad_gateway(tiny, gateway, client_factory) -> None:
    backend = tiny(
        lambda seen: (
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
            b"Upgrade: evil\r\n\r\nraw bytes"
        )
    )
    gw = gateway(proxy_config(backend.url))
    client = client_factory(gw.port)
    reply = client.get("/plain")
    assert reply.status == 502
    assert b"X-Forwarded-For" not in reply.body and b"raw bytes" not in reply.body
