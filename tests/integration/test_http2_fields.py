"""HTTP/2 requests are validated to HTTP/1.1's rules before anything is forwarded:
:method a token (in uppercase), :path visible ASCII, :authority host[:port], field
names lowercase tokens, values without control characters, trailers the same.

The HTTP/2 client is `h2` with its own validation off, so it sends what the test
asks for. The backend is a raw socket server that records every request head it
reads: "nothing forwarded" means not one byte of the request reached it.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h2.events
import pytest
from h2.errors import ErrorCodes
from test_http2 import RawH2, h2_config, https_port, root_ca, start

from conftest import Gateway, free_port, wait_for_port

Fields = list[tuple[bytes, bytes]]


class RawBackend:
    """An HTTP/1.1 origin that keeps every request head exactly as received and
    answers each request (Content-Length or chunked body read) with 200 "ok"."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.lock = threading.Lock()
        self.heads: list[bytes] = []
        self.complete = 0  # requests whose body was read to its end
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            try:
                while True:
                    while b"\r\n\r\n" not in buffer:
                        data = conn.recv(65536)
                        if not data:
                            return
                        buffer += data
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    with self.lock:
                        self.heads.append(head)
                    buffer = self._skip_body(conn, head.lower(), buffer)
                    with self.lock:
                        self.complete += 1
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            except (OSError, ValueError):
                return

    def _read_until(self, conn: socket.socket, buffer: bytes, size: int) -> bytes:
        while len(buffer) < size:
            data = conn.recv(65536)
            if not data:
                raise ConnectionError("request cut short")
            buffer += data
        return buffer

    def _line(self, conn: socket.socket, buffer: bytes) -> tuple[bytes, bytes]:
        while b"\r\n" not in buffer:
            data = conn.recv(65536)
            if not data:
                raise ConnectionError("request cut short")
            buffer += data
        line, _, rest = buffer.partition(b"\r\n")
        return line, rest

    def _skip_body(self, conn: socket.socket, head: bytes, buffer: bytes) -> bytes:
        if b"\r\ntransfer-encoding: chunked" in head:
            while True:
                line, buffer = self._line(conn, buffer)
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while True:
                        line, buffer = self._line(conn, buffer)
                        if not line:
                            return buffer
                buffer = self._read_until(conn, buffer, size + 2)[size + 2 :]
        for line in head.split(b"\r\n"):
            if line.startswith(b"content-length:"):
                size = int(line.split(b":", 1)[1])
                buffer = self._read_until(conn, buffer, size)
                return buffer[size:]
        return buffer

    def request_lines(self) -> list[bytes]:
        with self.lock:
            return [head.split(b"\r\n", 1)[0] for head in self.heads]

    def stop(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_backend() -> Iterator[RawBackend]:
    origin = RawBackend()
    yield origin
    origin.stop()


def fields_config(tmp_path: Path, origin: RawBackend) -> dict[str, Any]:
    """`/only-get/` allows GET (so HEAD) only and is cached; the rest is proxied."""
    config = h2_config(tmp_path, origin.url)
    routes = config["sites"][0]["routes"]
    routes.insert(
        0,
        {
            "path": "/only-get/",
            "methods": ["GET"],
            "proxy": {"upstreams": [origin.url]},
            "cache": {},
        },
    )
    return config


def raw_client(config: dict[str, Any], tmp_path: Path) -> RawH2:
    raw = RawH2(https_port(config), root_ca(tmp_path))
    # let the test client send what a polite one would refuse to
    raw.conn.config.validate_outbound_headers = False
    raw.conn.config.normalize_outbound_headers = False
    return raw


def request(method: bytes = b"GET", path: bytes = b"/fine", **pseudo: bytes) -> Fields:
    fields = {
        b":method": method,
        b":scheme": pseudo.get("scheme", b"https"),
        b":authority": pseudo.get("authority", b"localhost"),
        b":path": path,
    }
    return list(fields.items())


class Outcome:
    def __init__(self) -> None:
        self.status: dict[int, int] = {}
        self.body: dict[int, bytes] = {}
        self.reset: dict[int, int] = {}
        self.ended: set[int] = set()

    def problem(self, sid: int) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.body[sid])
        return body


def exchange(
    raw: RawH2, streams: dict[int, Fields], body: dict[int, bytes] | None = None
) -> Outcome:
    """Send every stream's request (with its body, if any) in one write; collect
    until each has an answer or a reset."""
    conn = raw.conn
    body = body or {}
    for sid, fields in streams.items():
        data = body.get(sid)
        conn.send_headers(sid, fields, end_stream=data is None)
        if data is not None:
            conn.send_data(sid, data, end_stream=True)
    raw.flush()
    return collect(raw, set(streams))


def collect(raw: RawH2, wanted: set[int]) -> Outcome:
    out = Outcome()
    for event in raw.events(timeout=15):
        if isinstance(event, h2.events.ResponseReceived):
            out.status[event.stream_id] = int(dict(event.headers)[b":status"])
        elif isinstance(event, h2.events.DataReceived):
            out.body[event.stream_id] = out.body.get(event.stream_id, b"") + event.data
            raw.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            out.ended.add(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            out.reset[event.stream_id] = event.error_code
        if wanted <= out.ended | set(out.reset):
            break
    return out


def no_traceback(gw: Gateway) -> None:
    log = gw.stderr
    assert "Traceback" not in log, log
    assert "failed in its handler" not in log, log


# ------------------------------------------------------------------ :method
def test_method_that_is_not_a_token_resets_the_stream(
    tmp_path: Path, raw_backend: RawBackend, gateway: Callable[..., Gateway]
) -> None:
    """A space in :method would write `GET /x /evil/m1 HTTP/1.1` upstream (routed as
    /evil/, served as /x), an empty one ` /path HTTP/1.1`, a non-ASCII one failed
    with a 500 and a traceback: all are malformed requests (RFC 9113 §8.3)."""
    config = fields_config(tmp_path, raw_backend)
    gw = start(gateway, config)
    raw = raw_client(config, tmp_path)
    malformed = {
        1: request(b"GET /x", b"/evil/m1"),
        3: request(b"", b"/empty"),
        5: request("GÉT".encode(), b"/utf8"),
        7: request(b"G\xffT", b"/latin"),
        9: request(b"GE(T", b"/paren"),
        11: request(b"GET\x0b", b"/vt"),
    }
    out = exchange(raw, {**malformed, 13: request(b"GET", b"/fine")})
    raw.close()
    assert out.reset == {sid: ErrorCodes.PROTOCOL_ERROR for sid in malformed}
    assert out.status == {13: 200}
    assert raw_backend.request_lines() == [b"GET /fine HTTP/1.1"]
    no_traceback(gw)


def test_methods_are_uppercase_and_compared_exactly(
    tmp_path: Path, raw_backend: RawBackend, gateway: Callable[..., Gateway]
) -> None:
    """RFC 9110 §9.1: `trace` is not TRACE and `get` is not GET; backends that
    uppercase what they read would run them as TRACE and GET, with the secrets the
    gateway adds echoed back or a route's `methods: [GET]` walked around. They are
    refused with 400, as nginx and the HTTP/1.1 side do; extension methods in
    uppercase still pass."""
    config = fields_config(tmp_path, raw_backend)
    gw = start(gateway, config)
    raw = raw_client(config, tmp_path)
    out = exchange(
        raw,
        {
            1: request(b"trace", b"/echo"),
            3: request(b"get", b"/only-get/x"),
            5: request(b"Get", b"/only-get/x"),
            7: request(b"connect", b"/tunnel"),
            9: request(b"TRACE", b"/echo"),
            11: request(b"POST", b"/only-get/x"),
            13: request(b"GET", b"/only-get/x"),
            15: request(b"PROPFIND", b"/dav"),
        },
        body={11: b"x"},
    )
    raw.close()
    assert out.reset == {}
    for sid in (1, 3, 5, 7):
        assert out.status[sid] == 400, sid
        assert out.problem(sid)["status"] == 400
    assert out.status[9] == 501
    assert out.status[11] == 405
    assert out.status[13] == 200
    assert out.status[15] == 200
    assert sorted(raw_backend.request_lines()) == [
        b"GET /only-get/x HTTP/1.1",
        b"PROPFIND /dav HTTP/1.1",
    ]
    no_traceback(gw)


# --------------------------------------------------------- :path, :authority
def test_path_with_anything_but_visible_ascii_resets_the_stream(
    tmp_path: Path, raw_backend: RawBackend, gateway: Callable[..., Gateway]
) -> None:
    config = fields_config(tmp_path, raw_backend)
    gw = start(gateway, config)
    raw = raw_client(config, tmp_path)
    malformed = {
        1: request(path=b"/a b"),
        3: request(path=b"/a\x01b"),
        5: request(path=b"/a\x7fb"),
        7: request(path=b"/a\xffb"),
        9: request(path=b"/a\tb"),
        11: request(path=b"/a\x1bb"),
        13: request(path="/caf\u00e9".encode()),
        15: request(path=b"/x HTTP/1.1\tX-Evil: 1"),
    }
    out = exchange(raw, {**malformed, 17: request(path=b"/fine?a=%20b")})
    raw.close()
    assert out.reset == {sid: ErrorCodes.PROTOCOL_ERROR for sid in malformed}
    assert out.status == {17: 200}
    assert raw_backend.request_lines() == [b"GET /fine?a=%20b HTTP/1.1"]
    no_traceback(gw)


def test_authority_and_scheme_are_checked(
    tmp_path: Path, raw_backend: RawBackend, gateway: Callable[..., Gateway]
) -> None:
    config = fields_config(tmp_path, raw_backend)
    gw = start(gateway, config)
    raw = raw_client(config, tmp_path)
    refused = {
        1: request(authority=b"localhost:\xb2"),  # "²".isdigit() is True
        3: request(authority=b"localhost:\xd9\xa1"),  # an Arabic-Indic digit in UTF-8
        5: request(authority=b"user@localhost"),
        7: request(authority=b"local host"),
        9: request(authority=b"localhost:80:80"),
        11: request(authority=b"localhost/x"),
        13: request(scheme=b"ftp"),
    }
    out = exchange(raw, {**refused, 15: request(authority=b"localhost:443")})
    raw.close()
    assert out.reset == {}
    assert {sid: out.status[sid] for sid in refused} == {sid: 400 for sid in refused}
    assert out.status[15] == 200
    assert raw_backend.request_lines() == [b"GET /fine HTTP/1.1"]
    no_traceback(gw)


# ---------------------------------------------------------- names and values
def test_field_names_and_values_are_checked(
    tmp_path: Path, raw_backend: RawBackend, gateway: Callable[..., Gateway]
) -> None:
    """RFC 9113 §8.2.1 and RFC 9110 §5.1/§5.5: names are lowercase tokens, values
    carry no control character but HTAB and no surrounding whitespace; fields that
    belong to an HTTP/1.1 connection are malformed in HTTP/2 (§8.2.2)."""
    config = fields_config(tmp_path, raw_backend)
    gw = start(gateway, config)
    raw = raw_client(config, tmp_path)
    base = request(path=b"/bad")
    bad_fields: list[tuple[bytes, bytes]] = [
        (b"x(y", b"1"),
        (b"x y", b"1"),
        (b"x/y", b"1"),
        (b"x@y", b"1"),
        (b"x\xffy", b"1"),
        (b"x\x01y", b"1"),
        (b"X-Upper", b"1"),
        (b"", b"1"),
        (b"x-a", b"a\x01b"),
        (b"x-a", b"a\x1bb"),
        (b"x-a", b"a\x7fb"),
        (b"x-a", b"a\x0bb"),
        (b"x-a", b"a\rb"),
        (b"x-a", b"a\x00b"),
        (b"x-a", b"\tpadded"),
        (b"x-a", b"padded "),
        (b"keep-alive", b"timeout=5"),
        (b"proxy-connection", b"keep-alive"),
        (b"transfer-encoding", b"chunked"),
        (b"upgrade", b"websocket"),
        (b"te", b"trailers, deflate"),
    ]
    malformed = {1 + 2 * i: [*base, field] for i, field in enumerate(bad_fields)}
    fine_sid = 1 + 2 * len(bad_fields)
    fine = [
        *request(path=b"/fine"),
        (b"te", b"trailers"),
        (b"x-tab", b"a\tb"),
        (b"x-obs", b"caf\xe9"),
        (b"x-token", b"!#$%&'*+-.^_`|~09az"),
    ]
    out = exchange(raw, {**malformed, fine_sid: fine})
    raw.close()
    assert out.reset == {sid: ErrorCodes.PROTOCOL_ERROR for sid in malformed}
    assert out.status == {fine_sid: 200}
    assert raw_backend.request_lines() == [b"GET /fine HTTP/1.1"]
    head = raw_backend.heads[0]
    assert b"\r\nx-tab: a\tb" in head
    assert b"\r\nx-obs: caf\xe9" in head
    assert b"\r\nte:" not in head.lower()
    no_traceback(gw)


# ----------------------------------------------------------------- trailers
def bad_trailer_sets() -> list[Fields]:
    return [
        [(b":path", b"/evil")],
        [(b"X-Upper", b"1")],
        [(b"x-a", b"a\x01b")],
        [(b"x-a", b"a\nb")],
        [(b"x y", b"1")],
        [(b"transfer-encoding", b"chunked")],
    ]


def test_malformed_trailers_reset_the_stream_before_it_is_forwarded(
    tmp_path: Path, raw_backend: RawBackend, gateway: Callable[..., Gateway]
) -> None:
    """Trailers arriving with their request: the stream is reset before dispatch."""
    config = fields_config(tmp_path, raw_backend)
    gw = start(gateway, config)
    raw = raw_client(config, tmp_path)
    conn = raw.conn
    sids = []
    for i, trailers in enumerate(bad_trailer_sets()):
        sid = 1 + 2 * i
        sids.append(sid)
        conn.send_headers(sid, request(b"POST", b"/upload"))
        conn.send_data(sid, b"body")
        conn.send_headers(sid, trailers, end_stream=True)
    good = 1 + 2 * len(sids)
    conn.send_headers(good, request(b"POST", b"/fine"))
    conn.send_data(good, b"body")
    conn.send_headers(good, [(b"x-checksum", b"abc")], end_stream=True)
    raw.flush()
    out = collect(raw, {*sids, good})
    raw.close()
    assert out.reset == {sid: ErrorCodes.PROTOCOL_ERROR for sid in sids}
    assert out.status == {good: 200}
    assert raw_backend.request_lines() == [b"POST /fine HTTP/1.1"]
    no_traceback(gw)


def test_malformed_trailers_after_dispatch_cut_the_upstream_request(
    tmp_path: Path, raw_backend: RawBackend, gateway: Callable[..., Gateway]
) -> None:
    """Trailers arriving after the request went upstream: the stream is reset and
    the upstream request is cut before its body ends, so it never completes."""
    config = fields_config(tmp_path, raw_backend)
    gw = start(gateway, config)
    raw = raw_client(config, tmp_path)
    conn = raw.conn
    sid = 1
    conn.send_headers(sid, [*request(b"POST", b"/upload"), (b"expect", b"100-continue")])
    raw.flush()
    # the 100 (Continue) comes once the proxy has taken the body: the request is upstream
    interim = False
    for event in raw.events(timeout=15):
        if isinstance(event, h2.events.InformationalResponseReceived):
            interim = True
            break
    assert interim
    conn.send_data(sid, b"body")
    conn.send_headers(sid, [(b"x-a", b"a\x01b")], end_stream=True)
    raw.flush()
    out = collect(raw, {sid})
    raw.close()
    assert out.reset == {sid: ErrorCodes.PROTOCOL_ERROR}
    assert raw_backend.complete == 0
    no_traceback(gw)


# ------------------------------------------------------------------ HTTP/1.1
def send_raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)


HTTP1_REFUSED = [
    b"get /only-get/x HTTP/1.1\r\nHost: localhost\r\n",
    b"trace /echo HTTP/1.1\r\nHost: localhost\r\n",
    b"Get /only-get/x HTTP/1.1\r\nHost: localhost\r\n",
    b"GET /x /evil/m1 HTTP/1.1\r\nHost: localhost\r\n",
    b" /path HTTP/1.1\r\nHost: localhost\r\n",
    "GÉT /utf8 HTTP/1.1\r\nHost: localhost\r\n".encode(),
    b"GET /a\x7fb HTTP/1.1\r\nHost: localhost\r\n",
    b"GET /a\xffb HTTP/1.1\r\nHost: localhost\r\n",
    b"GET /a\x01b HTTP/1.1\r\nHost: localhost\r\n",
    b"GET /fine HTTP/1.1\r\nHost: localhost\r\nx(y: 1\r\n",
    b"GET /fine HTTP/1.1\r\nHost: localhost\r\nx\xffy: 1\r\n",
    b"GET /fine HTTP/1.1\r\nHost: localhost\r\nx-a: a\x01b\r\n",
    b"GET /fine HTTP/1.1\r\nHost: localhost\r\nx-a: a\x7fb\r\n",
    b"GET /fine HTTP/1.1\r\nHost: localhost\r\nx-a: a\x1bb\r\n",
    b"GET /fine HTTP/1.1\r\nHost: localhost:\xb2\r\n",
    b"GET /fine HTTP/1.1\r\nHost: user@localhost\r\n",
]


def test_http1_requests_follow_the_same_rules(
    tmp_path: Path, raw_backend: RawBackend, gateway: Callable[..., Gateway]
) -> None:
    """The same method, target, host, name and value rules over HTTP/1.1 (llhttp in
    strict mode refuses most of them in its parser): a 400, nothing forwarded."""
    http = free_port()
    upstream = {"upstreams": [raw_backend.url]}
    config = {
        "listen": {"http": f"127.0.0.1:{http}"},
        "data_dir": str(tmp_path / "data"),
        "sites": [
            {
                "hosts": ["localhost"],
                "routes": [
                    {"path": "/only-get/", "methods": ["GET"], "proxy": upstream},
                    {"path": "/", "proxy": upstream},
                ],
            }
        ],
    }
    gw = gateway(config)
    wait_for_port(http)
    answers = {head: send_raw(http, head + b"\r\n")[:12] for head in HTTP1_REFUSED}
    assert answers == {head: b"HTTP/1.1 400" for head in HTTP1_REFUSED}
    ok = send_raw(http, b"GET /fine HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200 "), ok[:100]
    assert raw_backend.request_lines() == [b"GET /fine HTTP/1.1"]
    no_traceback(gw)


def test_a_malformed_request_the_client_resets_in_the_same_read_leaves_the_others(
    tmp_path: Path, raw_backend: RawBackend, gateway: Callable[..., Gateway]
) -> None:
    """A malformed HEADERS and the client's own RST_STREAM for it arrive in one read: h2
    has closed the stream before bastion sees the request, so the reset bastion sends
    for it must not fail (it used to end the whole connection with a traceback)."""
    config = fields_config(tmp_path, raw_backend)
    gw = start(gateway, config)
    raw = raw_client(config, tmp_path)
    conn = raw.conn
    conn.send_headers(1, [*request(b"GET", b"/bad"), (b"x-upper", b"1"), (b"X-Upper", b"1")])
    conn.reset_stream(1, ErrorCodes.CANCEL)
    conn.send_headers(3, request(b"GET", b"/fine"), end_stream=True)
    raw.flush()
    out = collect(raw, {3})
    raw.close()
    assert out.status == {3: 200}
    assert raw_backend.request_lines() == [b"GET /fine HTTP/1.1"]
    no_traceback(gw)
