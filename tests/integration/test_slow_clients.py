"""Slow and idle clients: a slow reader gets every byte, a client that stops reading
is cut by the send timeout, a pipelined partial request does not cut the response in
progress, HTTP/2 uploads are timed per stream and capped per connection, and TLS
connections that are closed give their max_connections slot back at once."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h2.events
import pytest
from test_http2 import RawH2, h2_config, https_port, root_ca, start

from conftest import Backend, Gateway, free_port, pattern_digest, simple_config

MB = 1024 * 1024


def _http1_download(port: int, n: int) -> socket.socket:
    sock = socket.socket()
    # a small receive buffer: the gateway feels the client's pace soon
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /bytes?n=%d HTTP/1.1\r\nHost: t\r\n\r\n" % n)
    return sock


def _read_some(sock: socket.socket, limit: int) -> bytes:
    data = b""
    while len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _read_rest(sock: socket.socket) -> tuple[bytes, bool]:
    """Everything until EOF; (data, cut) where cut means a reset."""
    parts = []
    try:
        while True:
            chunk = sock.recv(256 * 1024)
            if not chunk:
                return b"".join(parts), False
            parts.append(chunk)
    except ConnectionResetError:
        return b"".join(parts), True


def _body(response: bytes) -> bytes:
    return response.split(b"\r\n\r\n", 1)[1]


def test_slow_reader_is_not_cut_by_the_upstream_read_timeout(
    backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    port = free_port()
    config = simple_config(backend.url, port)  # the client send timeout: 60s by default
    config["sites"][0]["routes"][0]["proxy"]["timeouts"] = {"read": "1s"}
    gateway(config)
    n = 20 * MB
    with _http1_download(port, n) as sock:
        response = _read_some(sock, 2 * MB)
        time.sleep(1.5)  # longer than the upstream read timeout: the upstream is paused
        head_size = response.index(b"\r\n\r\n") + 4
        response += _read_some(sock, head_size + n - len(response))
    assert response.startswith(b"HTTP/1.1 200")
    body = _body(response)
    assert len(body) == n
    assert hashlib.sha256(body).hexdigest() == pattern_digest(n)


def test_client_that_stops_reading_is_cut_by_the_send_timeout(
    backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    port = free_port()
    config = simple_config(backend.url, port, timeouts={"send": "1s"})
    config["sites"][0]["routes"][0]["proxy"]["timeouts"] = {"read": "30s"}
    gateway(config)
    n = 20 * MB
    with _http1_download(port, n) as sock:
        head = _read_some(sock, 1 * MB)
        time.sleep(3)  # reads nothing for three send timeouts
        rest, _cut = _read_rest(sock)
    assert len(_body(head + rest)) < n
    # the gateway goes on serving others
    with _http1_download(port, 1000) as other:
        answer = _read_some(other, 1)
        while len(_body(answer + b"\r\n\r\n")) < 1000:
            answer += _read_some(other, 1)
        assert _body(answer) == bytes(range(256)) * 3 + bytes(range(232))


def _h2_download(
    client: RawH2, path: str, stall_after: int, stall: float, limit: float = 15.0
) -> tuple[int, bool, bool]:
    """Download `path`, acknowledging what arrives, except for `stall` seconds once
    `stall_after` bytes arrived (no WINDOW_UPDATE then: the client reads nothing).
    Returns (body bytes, ended, reset)."""
    sid = client.conn.get_next_available_stream_id()
    client.conn.send_headers(sid, client.request_headers(path), end_stream=True)
    client.flush()
    got = 0
    stalled = False
    deadline = time.monotonic() + limit
    client.sock.settimeout(1.0)
    while time.monotonic() < deadline:
        if not stalled and got >= stall_after:
            stalled = True
            time.sleep(stall)
        try:
            data = client.sock.recv(65536)
        except TimeoutError:
            continue
        if not data:
            break
        for event in client.conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                got += len(event.data)
                client.conn.acknowledge_received_data(event.flow_controlled_length, sid)
            elif isinstance(event, h2.events.StreamEnded):
                return got, True, False
            elif isinstance(event, h2.events.StreamReset):
                return got, False, True
        client.flush()
    return got, False, False


def test_slow_h2_reader_gets_every_byte(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    config = h2_config(tmp_path, backend, {"timeouts": {"read": "1s"}})
    start(gateway, config)
    client = RawH2(https_port(config), root_ca(tmp_path))
    n = 4 * MB
    got, ended, reset = _h2_download(client, f"/bytes?n={n}", MB, 1.5)
    client.close()
    assert (got, ended, reset) == (n, True, False)


def test_h2_client_that_stops_reading_is_cut(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    config = h2_config(tmp_path, backend, {"timeouts": {"read": "30s"}}, timeouts={"send": "1s"})
    start(gateway, config)
    client = RawH2(https_port(config), root_ca(tmp_path))
    n = 4 * MB
    got, ended, reset = _h2_download(client, f"/bytes?n={n}", MB, 3.0)
    client.close()
    assert reset and not ended and got < n


def test_pipelined_partial_request_does_not_cut_the_response(
    backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    port = free_port()
    gateway(simple_config(backend.url, port, timeouts={"header": "1s"}))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # the backend answers after 2 s; the next request's head is half sent meanwhile
        sock.sendall(b"GET /slow?s=2 HTTP/1.1\r\nHost: t\r\n\r\nGET /next HTTP/1.1\r\nHo")
        answer, _cut = _read_rest(sock)
    assert answer.startswith(b"HTTP/1.1 200")
    assert b'{"slow": true}' in answer
    # then the unfinished head gets its own header timeout
    assert b"HTTP/1.1 408" in answer
    assert [r["path"] for r in backend.requests] == ["/slow?s=2"]


# ---------------------------------------------------------- HTTP/2 uploads
class CountingBackend:
    """Accepts connections and reads them until closed, answering nothing: counts how
    many the gateway holds open at once."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.open = 0
        self.most = 0
        self.total = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with self.lock:
                self.open += 1
                self.total += 1
                self.most = max(self.most, self.open)
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    def _drain(self, conn: socket.socket) -> None:
        with conn:
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass
        with self.lock:
            self.open -= 1

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def counting_backend() -> Iterator[CountingBackend]:
    server = CountingBackend()
    yield server
    server.close()


def test_h2_uploads_time_out_per_stream_and_are_capped(
    tmp_path: Path, counting_backend: CountingBackend, gateway: Callable[..., Gateway]
) -> None:
    config = h2_config(
        tmp_path,
        counting_backend.url,
        {"timeouts": {"read": "60s", "send": "60s"}},
        timeouts={"body": "1s"},
        http2={"max_uploads": 2},
    )
    start(gateway, config)
    client = RawH2(https_port(config), root_ca(tmp_path))
    sids = []
    for _ in range(6):
        sid = client.conn.get_next_available_stream_id()
        headers = [*client.request_headers("/upload", "POST"), ("content-length", "100000")]
        client.conn.send_headers(sid, headers)
        client.conn.send_data(sid, b"x")  # one byte of 100 kB, then nothing
        sids.append(sid)
    client.flush()
    statuses: dict[int, str] = {}
    for event in client.events(timeout=15):
        if isinstance(event, h2.events.ResponseReceived):
            statuses[event.stream_id] = dict(event.headers)[b":status"].decode()
        elif isinstance(event, h2.events.StreamReset) and event.stream_id not in statuses:
            statuses[event.stream_id] = "reset"
        if len(statuses) == len(sids):
            break
    client.close()
    assert statuses == {sid: "408" for sid in sids}
    # the cap (2), plus the two it replaces when both time out in the same second, if
    # the backend's threads have not seen those closed yet (6 without the cap)
    assert counting_backend.most <= 4
    assert counting_backend.total == 6  # each was forwarded in turn, then abandoned


def test_h2_uploads_beyond_the_cap_wait_and_complete(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    config = h2_config(tmp_path, backend, http2={"max_uploads": 1})
    start(gateway, config)
    client = RawH2(https_port(config), root_ca(tmp_path))
    sids = []
    for i in range(3):
        sid = client.conn.get_next_available_stream_id()
        headers = [*client.request_headers(f"/up/{i}", "POST"), ("content-length", "20000")]
        client.conn.send_headers(sid, headers)
        client.conn.send_data(sid, b"a" * 10000)
        sids.append(sid)
    client.flush()
    for sid in reversed(sids):  # the waiting ones complete first
        client.conn.send_data(sid, b"b" * 10000, end_stream=True)
    client.flush()
    statuses: dict[int, str] = {}
    for event in client.events(timeout=10):
        if isinstance(event, h2.events.ResponseReceived):
            statuses[event.stream_id] = dict(event.headers)[b":status"].decode()
        if isinstance(event, h2.events.StreamEnded) and len(statuses) == 3:
            break
    client.close()
    assert statuses == {sid: "200" for sid in sids}
    assert sorted(r["path"] for r in backend.requests) == ["/up/0", "/up/1", "/up/2"]
    assert {r["body_len"] for r in backend.requests} == {20000}


# ------------------------------------------------------------------------- TLS
def _tls_request(port: int, cafile: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(cafile))
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with context.wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        parts = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)


@pytest.mark.parametrize("first", ["idle", "bad request"])
def test_closed_tls_connection_frees_its_slot(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway], first: str
) -> None:
    config = h2_config(tmp_path, backend, timeouts={"header": "1s"}, limits={"max_connections": 1})
    config["http2"] = {"enabled": False}
    start(gateway, config)
    port = https_port(config)
    context = ssl.create_default_context(cafile=str(root_ca(tmp_path)))
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    held = context.wrap_socket(raw, server_hostname="localhost")
    if first == "bad request":
        held.sendall(b"GET /\x01 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert held.recv(65536).startswith(b"HTTP/1.1 400")
    # The held client never answers the server's close_notify (it reads nothing more).
    # Its slot comes back within the lingering time; the next client is served.
    answer = b""
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline and not answer.startswith(b"HTTP/1.1 200"):
        try:
            answer = _tls_request(port, root_ca(tmp_path))
        except (OSError, ssl.SSLError):
            time.sleep(0.2)
    held.close()
    assert answer.startswith(b"HTTP/1.1 200")


def test_websocket_tunnels_have_an_idle_timeout_by_default() -> None:
    from bastion.config.upstream import Proxy

    proxy: Any = Proxy.model_validate({"upstreams": ["http://127.0.0.1:1"]})
    assert proxy.websocket_idle_timeout == 3600.0


def test_tls_error_answer_is_followed_by_close_notify_at_once(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    config = h2_config(tmp_path, backend, limits={"max_body_bytes": "1MiB"})
    config["http2"] = {"enabled": False}
    start(gateway, config)
    context = ssl.create_default_context(cafile=str(root_ca(tmp_path)))
    raw = socket.create_connection(("127.0.0.1", https_port(config)), timeout=5)
    with context.wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall(b"POST /up HTTP/1.1\r\nHost: localhost\r\nContent-Length: 50000000\r\n\r\n")
        for _ in range(50):  # still sending when the 413 comes: no reset destroys it
            sock.sendall(b"x" * 65536)
        # TLS has no half-close: the answer's close_notify follows it at once (a
        # plaintext connection would linger 2 s); the bound is generous, not a timing
        sock.settimeout(1.5)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413")
    assert backend.requests == []


class DeafBackend:
    """Accepts connections and never reads from them: an upload to it stalls."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.server.close()
        for conn in self.held:
            conn.close()


def test_upload_stalled_by_the_upstream_is_not_blamed_on_the_client(
    gateway: Callable[..., Gateway],
) -> None:
    deaf = DeafBackend()
    port = free_port()
    config = simple_config(
        deaf.url, port, timeouts={"body": "1s"}, limits={"max_body_bytes": "200MiB"}
    )
    config["sites"][0]["routes"][0]["proxy"]["timeouts"] = {"send": "3s"}
    gateway(config)
    size = 100 * MB
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)

    def upload() -> None:
        with contextlib.suppress(OSError):
            sock.sendall(b"PUT /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
            block = b"x" * MB
            for _ in range(100):
                sock.sendall(block)

    sender = threading.Thread(target=upload, daemon=True)
    sender.start()
    answer, _cut = _read_rest(sock)
    sock.close()
    deaf.close()
    # the gateway paused reading the client because the upstream took nothing: the
    # upstream send timeout answers (504), not the client body timeout (408)
    assert answer.startswith(b"HTTP/1.1 504")
