"""WebSocket (HTTP/1.1 Upgrade) tunnels through the gateway: echo of text and binary
messages, closing from either side, idle tunnels and websocket_idle_timeout."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.sync.server import Server, ServerConnection, serve
from websockets.typing import Subprotocol

from conftest import Backend, free_port, simple_config


class WsBackend:
    """An echo WebSocket server; "close:<code>" makes it close the connection,
    "vanish" makes it drop the TCP connection without a close frame."""

    def __init__(self) -> None:
        self.closes: list[int | None] = []
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.server: Server = serve(
            self._handler,
            "127.0.0.1",
            0,
            ping_interval=None,
            max_size=8 << 20,
            select_subprotocol=_chat_if_offered,
        )
        self.port = self.server.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.paths.append(ws.request.path)
        self.headers.append({k.lower(): v for k, v in ws.request.headers.raw_items()})
        try:
            for message in ws:
                if message == "vanish":  # drop the TCP connection, no close frame
                    ws.socket.shutdown(socket.SHUT_RDWR)
                    break
                if isinstance(message, str) and message.startswith("close:"):
                    ws.close(int(message[6:]), "server says bye")
                    break
                ws.send(message)
        except ConnectionClosed:
            pass
        self.closes.append(ws.close_code)


def _chat_if_offered(ws: ServerConnection, offered: Sequence[str]) -> Subprotocol | None:
    return Subprotocol("chat.v2") if "chat.v2" in offered else None


@pytest.fixture
def ws_backend() -> Iterator[WsBackend]:
    b = WsBackend()
    yield b
    b.server.shutdown()


def ws_gateway(gateway: Any, upstream: str, **proxy: Any) -> Any:
    config = simple_config(upstream, free_port())
    config["sites"][0]["routes"][0]["proxy"].update(proxy)
    return gateway(config)


HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
    b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def ws_connect(port: int, path: str = "/ws", **kwargs: Any) -> ClientConnection:
    return connect(
        f"ws://127.0.0.1:{port}{path}",
        proxy=None,
        ping_interval=None,
        open_timeout=5,
        close_timeout=2,
        **kwargs,
    )


def test_echo_text_and_binary(ws_backend: WsBackend, gateway: Any) -> None:
    gw = ws_gateway(gateway, ws_backend.url)
    with ws_connect(gw.port, "/ws/room?id=7", subprotocols=["chat.v2"], max_size=4 << 20) as ws:
        assert ws.subprotocol == "chat.v2"
        for i in range(50):
            ws.send(f"hello {i} ünïcode")
            assert ws.recv(timeout=5) == f"hello {i} ünïcode"
        blob = os.urandom(3 << 20)
        ws.send(blob)
        assert ws.recv(timeout=10) == blob
        ws.send(b"\x00\xff")
        assert ws.recv(timeout=5) == b"\x00\xff"
    assert ws_backend.paths == ["/ws/room?id=7"]
    headers = ws_backend.headers[0]
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["upgrade"].lower() == "websocket"
    assert "x-request-id" in headers


def test_close_from_client(ws_backend: WsBackend, gateway: Any) -> None:
    gw = ws_gateway(gateway, ws_backend.url)
    with ws_connect(gw.port) as ws:
        ws.send("ping")
        assert ws.recv(timeout=5) == "ping"
        ws.close(1000, "done")
        assert ws.close_code == 1000  # the backend's close frame came back through
    wait_for(lambda: bool(ws_backend.closes))
    assert ws_backend.closes == [1000]
    # the gateway is fine afterwards
    with ws_connect(gw.port) as again:
        again.send("again")
        assert again.recv(timeout=5) == "again"


def test_close_from_server(ws_backend: WsBackend, gateway: Any) -> None:
    gw = ws_gateway(gateway, ws_backend.url)
    with ws_connect(gw.port) as ws:
        ws.send("close:4001")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4001
        assert closed.value.rcvd.reason == "server says bye"


def test_either_side_dropping_tcp_ends_the_tunnel(ws_backend: WsBackend, gateway: Any) -> None:
    gw = ws_gateway(gateway, ws_backend.url)
    with ws_connect(gw.port) as ws:
        ws.send("vanish")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is None  # no close frame: the gateway closed the socket
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(HANDSHAKE)
        assert sock.recv(65536).startswith(b"HTTP/1.1 101")
    wait_for(lambda: len(ws_backend.closes) == 2)
    assert ws_backend.closes[1] == 1006  # the client vanished: the backend saw it go


def test_idle_tunnel_outlives_the_read_timeout(ws_backend: WsBackend, gateway: Any) -> None:
    gw = ws_gateway(gateway, ws_backend.url, timeouts={"read": "1s"})
    with ws_connect(gw.port) as ws:
        ws.send("before")
        assert ws.recv(timeout=5) == "before"
        time.sleep(2.5)
        ws.send("after")
        assert ws.recv(timeout=5) == "after"


def test_websocket_idle_timeout_closes_the_tunnel(ws_backend: WsBackend, gateway: Any) -> None:
    gw = ws_gateway(gateway, ws_backend.url, websocket_idle_timeout="1s")
    with ws_connect(gw.port) as ws:
        for _ in range(4):  # traffic keeps it open past the idle timeout
            ws.send("busy")
            assert ws.recv(timeout=5) == "busy"
            time.sleep(0.5)
        time.sleep(2.5)
        with pytest.raises(ConnectionClosed):
            ws.send("too late")
            ws.recv(timeout=5)
    wait_for(lambda: bool(ws_backend.closes))
    assert len(ws_backend.closes) == 1  # the upstream side was closed too


def test_frame_sent_with_the_handshake_is_forwarded(ws_backend: WsBackend, gateway: Any) -> None:
    gw = ws_gateway(gateway, ws_backend.url)
    payload = b"early bird"
    mask = b"\x01\x02\x03\x04"
    frame = (
        bytes([0x81, 0x80 | len(payload)])
        + mask
        + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    )
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(HANDSHAKE + frame)
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(payload):
            chunk = sock.recv(65536)
            assert chunk, f"closed early: {data!r}"
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    assert rest == bytes([0x81, len(payload)]) + payload


def test_upgrade_refused_by_a_plain_backend(backend: Backend, gateway: Any) -> None:
    gw = ws_gateway(gateway, backend.url)
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(gw.port, "/not-ws")
    assert refused.value.response.status_code == 200
    assert httpx.get(gw.url + "/after").status_code == 200
