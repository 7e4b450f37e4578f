"""HTTP/2 on the HTTPS listener through real clients: httpx (h2), curl --http2 and
raw frames from the `h2` library for what well-behaved clients never send."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
from h2.errors import ErrorCodes
from hpack import Decoder, Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
)

from conftest import Backend, Gateway, free_port, pattern_digest, wait_for_port

MB = 1024 * 1024


# ------------------------------------------------------------------ helpers
def h2_config(
    tmp_path: Path, backend: Backend | str, proxy: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """An http and an https listener for localhost: static files under /files/, the rest
    proxied to ``backend`` (or an upstream URL) with the ``proxy`` settings added."""
    upstream = backend if isinstance(backend, str) else backend.url
    http, https = free_port(), free_port()
    static = tmp_path / "www"
    (static / "files").mkdir(parents=True, exist_ok=True)
    (static / "files" / "hello.txt").write_text("hello over h2\n")
    config: dict[str, Any] = {
        "listen": {"http": f"127.0.0.1:{http}", "https": f"127.0.0.1:{https}"},
        "data_dir": str(tmp_path / "data"),
        "access_log": {"format": "json", "path": str(tmp_path / "access.log")},
        "limits": {"max_body_bytes": "200MiB"},
        "sites": [
            {
                "hosts": ["localhost"],
                "routes": [
                    {"path": "/files/", "static": {"root": str(static)}},
                    {"path": "/", "proxy": {"upstreams": [upstream], **(proxy or {})}},
                ],
            }
        ],
    }
    config.update(extra)
    return config


def https_port(config: dict[str, Any]) -> int:
    return int(config["listen"]["https"].rsplit(":", 1)[1])


def root_ca(tmp_path: Path) -> Path:
    return tmp_path / "data" / "ca" / "root.crt"


def start(gateway: Callable[..., Gateway], config: dict[str, Any]) -> Gateway:
    gw = gateway(config)
    wait_for_port(https_port(config))
    return gw


def client(tmp_path: Path, **kwargs: Any) -> httpx.Client:
    return httpx.Client(
        http1=True,
        http2=True,
        verify=ssl.create_default_context(cafile=str(root_ca(tmp_path))),
        timeout=30,
        **kwargs,
    )


class RawH2:
    """A raw HTTP/2 client over TLS (ALPN h2) for frames no polite client sends."""

    def __init__(self, port: int, cafile: Path) -> None:
        context = ssl.create_default_context(cafile=str(cafile))
        context.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        assert self.sock.selected_alpn_protocol() == "h2"
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request_headers(self, path: str, method: str = "GET") -> list[tuple[str, str]]:
        return [
            (":method", method),
            (":scheme", "https"),
            (":authority", "localhost"),
            (":path", path),
        ]

    def events(self, timeout: float = 10.0) -> Iterator[h2.events.Event]:
        """Events until the server closes the connection (or `timeout` passes)."""
        deadline = time.monotonic() + timeout
        self.sock.settimeout(1.0)
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except (ConnectionError, ssl.SSLError):
                return
            if not data:
                return
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                return
            self.flush()
            yield from events

    def close(self) -> None:
        self.sock.close()


def backend_count(backend: Backend) -> int:
    return len(backend.requests)


def access_lines(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "access.log"
    deadline = time.monotonic() + 5
    lines: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        if path.exists():
            lines = [json.loads(line) for line in path.read_text().splitlines() if line]
            if lines:
                return lines
        time.sleep(0.1)
    return lines


# -------------------------------------------------------------------- tests
def test_many_streams_on_one_connection(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    config = h2_config(tmp_path, backend)
    start(gateway, config)
    port = https_port(config)
    context = ssl.create_default_context(cafile=str(root_ca(tmp_path)))

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            http1=True,
            http2=True,
            verify=context,
            timeout=30,
            limits=httpx.Limits(max_connections=1),
        ) as ac:
            calls = [ac.get(f"https://localhost:{port}/item/{i}?q={i}") for i in range(50)]
            return await asyncio.gather(*calls)

    responses = asyncio.run(run())
    for i, response in enumerate(responses):
        assert response.http_version == "HTTP/2"
        assert response.status_code == 200
        assert response.json()["path"] == f"/item/{i}?q={i}"
        assert response.headers["x-request-id"]
        assert "connection" not in response.headers
    seen = {entry["path"] for entry in backend.requests}
    assert seen == {f"/item/{i}?q={i}" for i in range(50)}
    # the upstream request was HTTP/1.1 with a Host (from :authority) and the
    # forwarding fields
    headers = dict(backend.requests[0]["headers"])
    assert headers["host"] == f"localhost:{port}"
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-host"] == f"localhost:{port}"
    logged = [e for e in access_lines(tmp_path) if e["target"].startswith("/item/")]
    assert logged and {e["protocol"] for e in logged} == {"HTTP/2.0"}


def test_curl_negotiates_h2(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    if shutil.which("curl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("curl is required in CI")
        pytest.skip("curl is not installed")
    config = h2_config(tmp_path, backend)
    start(gateway, config)
    port = https_port(config)
    out = subprocess.run(
        [
            "curl", "-sS", "--http2", "--cacert", str(root_ca(tmp_path)),
            "-H", "X-Test: curl",
            "-w", "\n%{http_version}",
            f"https://localhost:{port}/via-curl",
        ],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    body, _, version = out.stdout.rpartition("\n")
    assert version == "2"
    doc = json.loads(body)
    assert doc["path"] == "/via-curl"
    assert ["x-test", "curl"] in doc["headers"]


def test_static_and_problem_answers_over_h2(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    config = h2_config(tmp_path, backend)
    config["sites"][0]["routes"].insert(
        0, {"path": "/only-get", "methods": ["GET"], "respond": {"status": 200, "body": "x"}}
    )
    start(gateway, config)
    base = f"https://localhost:{https_port(config)}"
    with client(tmp_path) as c:
        r = c.get(base + "/files/hello.txt")
        assert r.http_version == "HTTP/2"
        assert r.status_code == 200
        assert r.text == "hello over h2\n"
        assert r.headers["content-type"].startswith("text/plain")
        assert r.headers["content-length"] == str(len("hello over h2\n"))
        ranged = c.get(base + "/files/hello.txt", headers={"Range": "bytes=0-4"})
        assert ranged.status_code == 206 and ranged.text == "hello"
        missing = c.get(base + "/files/nope.txt")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.json()["status"] == 404
        assert missing.json()["request_id"] == missing.headers["x-request-id"]
        wrong = c.post(base + "/only-get", content=b"abc")
        assert wrong.status_code == 405
        assert wrong.headers["allow"] == "GET, HEAD"
        assert wrong.headers["content-type"] == "application/problem+json"
        # the same connection still serves after errors
        assert c.get(base + "/after").json()["path"] == "/after"


def test_malformed_requests_get_4xx_on_their_stream(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    config = h2_config(
        tmp_path, backend, limits={"max_header_bytes": "4KiB", "max_body_bytes": 1000}
    )
    start(gateway, config)
    raw = RawH2(https_port(config), root_ca(tmp_path))
    conn = raw.conn
    conn.send_headers(1, raw.request_headers("/a/../../etc/passwd"), end_stream=True)
    conn.send_headers(3, [*raw.request_headers("/big"), ("x-big", "a" * 6000)], end_stream=True)
    conn.send_headers(5, raw.request_headers("/upload", "POST"), end_stream=False)
    conn.send_data(5, b"x" * 1500, end_stream=True)
    conn.send_headers(7, raw.request_headers("/fine"), end_stream=True)
    conn.send_headers(9, raw.request_headers("/echo", "TRACE"), end_stream=True)
    raw.flush()
    statuses: dict[int, int] = {}
    bodies: dict[int, bytes] = {}
    done: set[int] = set()
    for event in raw.events(timeout=15):
        if isinstance(event, h2.events.ResponseReceived):
            statuses[event.stream_id] = int(dict(event.headers)[b":status"])
        elif isinstance(event, h2.events.DataReceived):
            bodies[event.stream_id] = bodies.get(event.stream_id, b"") + event.data
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
            done.add(event.stream_id)
        if {1, 3, 5, 7, 9} <= done:
            break
    raw.close()
    # a path climbing above the root is refused, as over HTTP/1.1
    assert statuses[1] == 400
    assert json.loads(bodies[1])["status"] == 400
    assert statuses[3] == 431
    assert json.loads(bodies[3])["status"] == 431
    assert statuses[5] == 413
    assert statuses[7] == 200
    # TRACE would echo the forwarded headers back: refused, as over HTTP/1.1
    assert statuses[9] == 501
    assert json.loads(bodies[9])["status"] == 501
    paths = [entry["path"] for entry in backend.requests]
    assert paths == ["/fine"]


def _rss_sampler(gw: Gateway) -> tuple[list[int], threading.Event]:
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(gw.rss_kb())
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    return samples, stop


def test_100mb_down_and_up_with_flat_memory(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    config = h2_config(tmp_path, backend)
    gw = start(gateway, config)
    base = f"https://localhost:{https_port(config)}"
    size = 100 * MB
    samples, stop = _rss_sampler(gw)
    try:
        with client(tmp_path) as c:
            digest = hashlib.sha256()
            received = 0
            with c.stream("GET", f"{base}/bytes?n={size}") as r:
                assert r.http_version == "HTTP/2"
                assert r.status_code == 200
                for chunk in r.iter_bytes():
                    received += len(chunk)
                    digest.update(chunk)
            assert received == size
            assert digest.hexdigest() == pattern_digest(size)

            block = os.urandom(MB)
            sent = hashlib.sha256()

            def body() -> Iterator[bytes]:
                for _ in range(100):
                    sent.update(block)
                    yield block

            r = c.post(f"{base}/echo", content=body())
            assert r.http_version == "HTTP/2"
            assert r.status_code == 200
            doc = r.json()
            assert doc["body_len"] == size
            assert doc["sha256"] == sent.hexdigest()
    finally:
        stop.set()
    peak_mb = max(samples) / 1024
    assert peak_mb < 150, f"gateway RSS peaked at {peak_mb:.0f} MB"


def test_rapid_reset_is_cut_off(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    config = h2_config(tmp_path, backend)
    gw = start(gateway, config)
    port = https_port(config)
    raw = RawH2(port, root_ca(tmp_path))
    conn = raw.conn
    opened = 0
    terminated: h2.events.ConnectionTerminated | None = None
    try:
        for _ in range(50):  # up to 5000 streams, 100 per write
            for _ in range(100):
                sid = conn.get_next_available_stream_id()
                conn.send_headers(sid, raw.request_headers(f"/slow?s=0.2&i={sid}"), end_stream=True)
                conn.reset_stream(sid, ErrorCodes.CANCEL)
                opened += 1
            raw.flush()
    except (ConnectionError, ssl.SSLError, h2.exceptions.ProtocolError):
        pass  # the gateway closed the connection under us
    for event in raw.events(timeout=10):
        if isinstance(event, h2.events.ConnectionTerminated):
            terminated = event
            break
    raw.close()
    assert terminated is not None, "no GOAWAY"
    assert terminated.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    time.sleep(0.5)
    # the streams were cancelled before reaching the backend (or right after)
    assert backend_count(backend) < opened // 10
    # the worker is fine: a new connection is answered by the same process
    with client(tmp_path) as c:
        assert c.get(f"https://localhost:{port}/after").status_code == 200
    assert gw.proc is not None and gw.proc.poll() is None


def test_continuation_flood_closes_the_connection(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    config = h2_config(tmp_path, backend)
    gw = start(gateway, config)
    port = https_port(config)
    raw = RawH2(port, root_ca(tmp_path))
    block = Encoder().encode(raw.request_headers("/flood"))
    first = HeadersFrame(1, data=block, flags=["END_STREAM"])  # no END_HEADERS
    frames = [first.serialize()]
    filler = Encoder().encode([("x-pad", "p" * 8000)])
    for _ in range(200):
        frames.append(ContinuationFrame(1, data=filler).serialize())
    closed_with: int | None = None
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        raw.sock.sendall(b"".join(frames))
    for event in raw.events(timeout=10):
        if isinstance(event, h2.events.ConnectionTerminated):
            closed_with = event.error_code
            break
    raw.close()
    assert closed_with == ErrorCodes.ENHANCE_YOUR_CALM
    assert backend_count(backend) == 0
    with client(tmp_path) as c:
        assert c.get(f"https://localhost:{port}/after").status_code == 200
    assert gw.proc is not None and gw.proc.poll() is None


def test_websocket_still_works_on_the_tls_listener(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    from websockets.sync.client import connect
    from websockets.sync.server import serve

    def echo(ws: Any) -> None:
        for message in ws:
            ws.send(message)

    server = serve(echo, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ws_port = server.socket.getsockname()[1]
    try:
        config = h2_config(tmp_path, backend)
        config["sites"][0]["routes"].insert(
            0, {"path": "/ws", "proxy": {"upstreams": [f"http://127.0.0.1:{ws_port}"]}}
        )
        start(gateway, config)
        context = ssl.create_default_context(cafile=str(root_ca(tmp_path)))
        # a WebSocket client offers http/1.1 in ALPN (or nothing) and gets its Upgrade
        context.set_alpn_protocols(["http/1.1"])
        with connect(f"wss://localhost:{https_port(config)}/ws", ssl=context) as ws:
            ws.send("over tls")
            assert ws.recv(timeout=10) == "over tls"
        # and an h2 client on the same listener at the same time
        with client(tmp_path) as c:
            r = c.get(f"https://localhost:{https_port(config)}/h2-too")
            assert r.http_version == "HTTP/2"
    finally:
        server.shutdown()


def ask_slowly(raw: RawH2, backend: Backend) -> None:
    """Stream 1 asks for an answer 2 s late; returns once the backend has the request."""
    raw.conn.send_headers(1, raw.request_headers("/slow?s=2"), end_stream=True)
    raw.flush()
    deadline = time.monotonic() + 10
    while not any(e["path"].startswith("/slow") for e in backend.requests):
        assert time.monotonic() < deadline, "the slow request never reached the backend"
        time.sleep(0.02)


def test_goaway_on_sigterm_lets_the_slow_stream_finish(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    config = h2_config(tmp_path, backend)
    gw = start(gateway, config)
    raw = RawH2(https_port(config), root_ca(tmp_path))
    ask_slowly(raw, backend)
    gw.send_signal(signal.SIGTERM)
    # The h2 library refuses every frame after a GOAWAY (a limit of its client side),
    # so the frames that follow are read here by hand.
    frames = read_frames(raw.sock, timeout=15)
    raw.close()
    goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert goaways and goaways[0].error_code == ErrorCodes.NO_ERROR
    assert goaways[0].last_stream_id == 1
    decoder = Decoder()
    heads = [dict(decoder.decode(f.data)) for f in frames if isinstance(f, HeadersFrame)]
    assert heads and heads[0][":status"] == "200"
    body = b"".join(f.data for f in frames if isinstance(f, DataFrame) and f.stream_id == 1)
    assert json.loads(body) == {"slow": True}
    assert any("END_STREAM" in f.flags for f in frames if f.stream_id == 1)
    # the GOAWAY came before the answer: in-flight streams finish after it
    assert frames.index(goaways[0]) < frames.index(
        next(f for f in frames if isinstance(f, HeadersFrame))
    )
    assert gw.proc is not None and gw.proc.wait(15) == 0


def read_frames(sock: ssl.SSLSocket, timeout: float) -> list[Frame]:
    """Every frame the server sends until it closes the connection."""
    deadline = time.monotonic() + timeout
    sock.settimeout(1.0)
    data = b""
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionError, ssl.SSLError):
            break
        if not chunk:
            break
        data += chunk
    return frames_in(data)


def test_reload_sends_graceful_goaway(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    config = h2_config(tmp_path, backend)
    gw = start(gateway, config)
    port = https_port(config)
    raw = RawH2(port, root_ca(tmp_path))
    raw.conn.send_headers(1, raw.request_headers("/before"), end_stream=True)
    raw.flush()
    for event in raw.events(timeout=10):
        if isinstance(event, h2.events.StreamEnded):
            break
    config["sites"][0]["routes"].insert(
        0, {"path": "/new", "respond": {"status": 200, "body": "new config"}}
    )
    gw.reload(config, wait_for="configuration reloaded")
    frames = read_frames(raw.sock, timeout=10)  # until the gateway closes
    raw.close()
    goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert len(goaways) == 1
    assert goaways[0].error_code == ErrorCodes.NO_ERROR and goaways[0].last_stream_id == 1
    with client(tmp_path) as c:
        r = c.get(f"https://localhost:{port}/new")
        assert r.http_version == "HTTP/2" and r.text == "new config"


def test_a_stop_does_not_wait_on_an_idle_http2_client(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    """At a stop an idle HTTP/2 connection gets GOAWAY and is closed at once: a client that
    reads nothing (it has nothing in flight) must not hold the stop until the TLS layer gives
    up waiting for its close_notify (30 s, longer than `stop` waits before it kills)."""
    config = h2_config(tmp_path, backend)
    gw = start(gateway, config)
    with client(tmp_path) as c:
        r = c.get(f"https://localhost:{https_port(config)}/plain")
        assert r.http_version == "HTTP/2" and r.status_code == 200
        assert gw.stop() == 0  # a graceful exit, not the kill after 15 s


def test_a_stop_closes_an_http2_connection_once_its_last_answer_is_out(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    """The same once a stream in flight at the stop has its answer: the client keeps the
    connection and reads no more."""
    config = h2_config(tmp_path, backend)
    gw = start(gateway, config)
    raw = RawH2(https_port(config), root_ca(tmp_path))
    try:
        ask_slowly(raw, backend)
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGTERM)
        # read until the answer has ended (by hand: the h2 library refuses frames after a
        # GOAWAY), then read no more and keep the connection
        data = b""
        raw.sock.settimeout(15)
        while not any(f.stream_id == 1 and "END_STREAM" in f.flags for f in frames_in(data)):
            chunk = raw.sock.recv(65536)
            assert chunk, "closed before the answer ended"
            data += chunk
        assert gw.stop() == 0
    finally:
        raw.close()


def frames_in(data: bytes) -> list[Frame]:
    """The whole frames at the start of `data`."""
    frames: list[Frame] = []
    view = memoryview(data)
    while len(view) >= 9:
        frame, length = Frame.parse_frame_header(view[:9])
        if len(view) < 9 + length:
            break
        frame.parse_body(view[9 : 9 + length])
        frames.append(frame)
        view = view[9 + length :]
    return frames


def test_max_requests_per_connection(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    config = h2_config(tmp_path, backend, http2={"max_requests": 2})
    start(gateway, config)
    raw = RawH2(https_port(config), root_ca(tmp_path))
    for sid in (1, 3, 5):
        raw.conn.send_headers(sid, raw.request_headers(f"/n{sid}"), end_stream=True)
    raw.flush()
    frames = read_frames(raw.sock, timeout=10)
    raw.close()
    goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert goaways and goaways[0].last_stream_id == 3
    refused = [f for f in frames if isinstance(f, RstStreamFrame) and f.stream_id == 5]
    assert refused and refused[0].error_code == ErrorCodes.REFUSED_STREAM
    ends = {f.stream_id for f in frames if "END_STREAM" in f.flags}
    assert {1, 3} <= ends
    assert sorted(e["path"] for e in backend.requests) == ["/n1", "/n3"]


def test_http2_can_be_turned_off(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    config = h2_config(tmp_path, backend, http2={"enabled": False})
    start(gateway, config)
    with client(tmp_path) as c:
        r = c.get(f"https://localhost:{https_port(config)}/plain")
    assert r.status_code == 200
    assert r.http_version == "HTTP/1.1"


def test_unfinished_header_block_times_out(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    config = h2_config(tmp_path, backend, timeouts={"header": "1s"})
    gw = start(gateway, config)
    raw = RawH2(https_port(config), root_ca(tmp_path))
    block = Encoder().encode(raw.request_headers("/never"))
    # HEADERS without END_HEADERS, and no CONTINUATION ever: a slow-loris head
    raw.sock.sendall(HeadersFrame(1, data=block, flags=["END_STREAM"]).serialize())
    started = time.monotonic()
    frames = read_frames(raw.sock, timeout=20)
    elapsed = time.monotonic() - started
    raw.close()
    assert elapsed < 15, "the connection was not closed"
    goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert goaways and goaways[0].error_code == ErrorCodes.PROTOCOL_ERROR
    assert backend.requests == []
    assert gw.proc is not None and gw.proc.poll() is None


def test_ping_flood_closes_the_connection(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    config = h2_config(tmp_path, backend)
    gw = start(gateway, config)
    port = https_port(config)
    raw = RawH2(port, root_ca(tmp_path))
    pings = b"".join(
        PingFrame(0, opaque_data=i.to_bytes(8, "big")).serialize() for i in range(3000)
    )
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        raw.sock.sendall(pings)
    frames = read_frames(raw.sock, timeout=10)
    raw.close()
    goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert goaways and goaways[0].error_code == ErrorCodes.ENHANCE_YOUR_CALM
    # far fewer answers than pings: the flood was not reflected in full
    assert sum(1 for f in frames if isinstance(f, PingFrame)) <= 1001
    with client(tmp_path) as c:
        assert c.get(f"https://localhost:{port}/after").status_code == 200
    assert gw.proc is not None and gw.proc.poll() is None


def test_idle_connection_gets_goaway(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    config = h2_config(tmp_path, backend, timeouts={"keepalive": "1s"})
    start(gateway, config)
    raw = RawH2(https_port(config), root_ca(tmp_path))
    raw.conn.send_headers(1, raw.request_headers("/once"), end_stream=True)
    raw.flush()
    started = time.monotonic()
    frames = read_frames(raw.sock, timeout=20)
    raw.close()
    assert time.monotonic() - started < 15, "the idle connection was not closed"
    assert any(isinstance(f, DataFrame) and f.stream_id == 1 for f in frames)
    goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert goaways and goaways[0].error_code == ErrorCodes.NO_ERROR
    assert goaways[0].last_stream_id == 1


def test_expect_continue_and_sized_upload(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    config = h2_config(tmp_path, backend)
    start(gateway, config)
    raw = RawH2(https_port(config), root_ca(tmp_path))
    headers = [
        *raw.request_headers("/upload", "POST"),
        ("content-length", "5"),
        ("expect", "100-continue"),
    ]
    raw.conn.send_headers(1, headers, end_stream=False)
    raw.flush()
    informational = False
    body = b""
    status = 0
    for event in raw.events(timeout=15):
        if isinstance(event, h2.events.InformationalResponseReceived):
            informational = dict(event.headers)[b":status"] == b"100"
            raw.conn.send_data(1, b"hello", end_stream=True)
            raw.flush()
        elif isinstance(event, h2.events.ResponseReceived):
            status = int(dict(event.headers)[b":status"])
        elif isinstance(event, h2.events.DataReceived):
            body += event.data
            raw.conn.acknowledge_received_data(event.flow_controlled_length, 1)
        elif isinstance(event, h2.events.StreamEnded):
            break
    raw.close()
    assert informational
    assert status == 200
    doc = json.loads(body)
    assert doc["body_len"] == 5
    assert doc["sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert ["content-length", "5"] in doc["headers"]


def test_upstream_connection_reused_after_a_slow_reader(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    """A response that ends while its client's window is closed (the upstream socket
    paused for backpressure) leaves a pooled connection that still answers."""
    config = h2_config(tmp_path, backend)
    start(gateway, config)
    raw = RawH2(https_port(config), root_ca(tmp_path))
    for round_ in range(3):
        sid = raw.conn.get_next_available_stream_id()
        raw.conn.send_headers(sid, raw.request_headers(f"/bytes?n=300000&r={round_}"), True)
        raw.flush()
        time.sleep(0.3)  # the whole answer reaches the gateway; the window stays closed
        received = 0
        ended = False
        for event in raw.events(timeout=10):
            if isinstance(event, h2.events.DataReceived):
                received += len(event.data)
                raw.conn.acknowledge_received_data(event.flow_controlled_length, sid)
                raw.flush()
            elif isinstance(event, h2.events.StreamEnded):
                ended = True
                break
        assert ended and received == 300000
    raw.close()
    assert len(backend.requests) == 3


def test_malformed_header_blocks_reset_only_their_stream(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    """RFC 9113 §8.2/§8.3: each malformed request is reset with PROTOCOL_ERROR,
    never reaches the backend, and the requests beside it on the connection are served."""
    config = h2_config(tmp_path, backend)
    start(gateway, config)
    raw = RawH2(https_port(config), root_ca(tmp_path))
    conn = raw.conn
    # let the test client send what a polite one would refuse to
    conn.config.validate_outbound_headers = False
    conn.config.normalize_outbound_headers = False
    base = raw.request_headers("/bad")
    malformed: dict[int, list[tuple[str, str]]] = {
        1: [*base, ("X-Upper", "1")],
        3: [*base, ("connection", "keep-alive")],
        5: [*base, ("te", "gzip")],
        7: [*base, ("x-a", " padded")],
        9: [*base, ("x-a", "a\nb")],
        11: [("x-early", "1"), *base],
        13: [*base[:3], (":path", "/bad"), (":path", "/bad2")],
        15: [*base[:3]],  # no :path
        17: [*base, ("host", "elsewhere.example")],
        19: [*base, (":status", "200")],
        21: [*base, ("x:colon", "1")],
    }
    for sid, fields in malformed.items():
        conn.send_headers(sid, fields, end_stream=True)
    conn.send_headers(23, raw.request_headers("/fine"), end_stream=True)
    raw.flush()
    resets: dict[int, int] = {}
    status = 0
    ended = False
    for event in raw.events(timeout=15):
        if isinstance(event, h2.events.StreamReset):
            resets[event.stream_id] = event.error_code
        elif isinstance(event, h2.events.ResponseReceived) and event.stream_id == 23:
            status = int(dict(event.headers)[b":status"])
        elif isinstance(event, h2.events.DataReceived):
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded) and event.stream_id == 23:
            ended = True
        if ended and len(resets) == len(malformed):
            break
    raw.close()
    assert resets == {sid: ErrorCodes.PROTOCOL_ERROR for sid in malformed}
    assert status == 200
    assert [entry["path"] for entry in backend.requests] == ["/fine"]


def test_response_fields_are_lowercased_and_connection_fields_dropped(
    tmp_path: Path, gateway: Callable[..., Gateway]
) -> None:
    """The gateway's own outbound checks (h2's are off): an upstream's mixed-case and
    HTTP/1.1-only fields arrive as valid HTTP/2 fields, the body intact."""
    upstream = socket.socket()
    upstream.bind(("127.0.0.1", 0))
    upstream.listen(8)
    port = upstream.getsockname()[1]

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                sock, _ = upstream.accept()
                with sock:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = sock.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    sock.sendall(
                        b"HTTP/1.1 200 OK\r\nX-Mixed-Case: Yes\r\nConnection: keep-alive\r\n"
                        b"Keep-Alive: timeout=5\r\nContent-Length: 5\r\n\r\nhello"
                    )

    threading.Thread(target=serve, daemon=True).start()
    config = h2_config(tmp_path, f"http://127.0.0.1:{port}")
    https = https_port(config)
    start(gateway, config)
    try:
        with client(tmp_path) as c:
            resp = c.get(f"https://localhost:{https}/x")
        assert resp.http_version == "HTTP/2"
        assert resp.status_code == 200
        assert resp.text == "hello"
        assert resp.headers["x-mixed-case"] == "Yes"
        assert "connection" not in resp.headers
        assert "keep-alive" not in resp.headers
    finally:
        upstream.close()


class _CountingBackend:
    """A keep-alive HTTP/1.1 backend that answers after `delay` and counts the
    connections it accepted and those still open."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.accepted = 0
        self.open = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                with self.lock:
                    self.accepted += 1
                    self.open += 1
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        try:
            with conn, contextlib.suppress(OSError):
                while True:
                    while b"\r\n\r\n" not in buf:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        buf += chunk
                    _, buf = buf.split(b"\r\n\r\n", 1)
                    time.sleep(self.delay)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        finally:
            with self.lock:
                self.open -= 1


def test_upstream_connections_survive_between_bursts_of_streams(
    tmp_path: Path, gateway: Callable[..., Gateway]
) -> None:
    """Eight streams at once against `max_idle_connections: 2`: the second burst reuses
    the first burst's eight upstream connections instead of opening six new ones, and a
    second later only two stay open."""
    upstream = _CountingBackend(delay=0.3)
    config = h2_config(tmp_path, upstream.url, proxy={"max_idle_connections": 2})
    https = https_port(config)
    start(gateway, config)

    async def bursts() -> list[int]:
        context = ssl.create_default_context(cafile=str(root_ca(tmp_path)))
        async with httpx.AsyncClient(http2=True, verify=context, timeout=30) as ac:
            statuses = []
            for _ in range(2):
                answers = await asyncio.gather(
                    *(ac.get(f"https://localhost:{https}/b/{i}") for i in range(8))
                )
                assert all(a.http_version == "HTTP/2" for a in answers)
                statuses += [a.status_code for a in answers]
            return statuses

    try:
        assert asyncio.run(bursts()) == [200] * 16
        assert upstream.accepted <= 9  # one spare for an unlucky interleaving
        deadline = time.monotonic() + 10
        while upstream.open > 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert upstream.open == 2
    finally:
        upstream.sock.close()
