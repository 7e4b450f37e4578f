"""The admin listener's edges, attacked through real sockets against a real `bastion run`:
HTTP semantics a client or an intermediary relies on (HEAD), and what the gateway does
when the admin's inputs are hostile or its settings change."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from test_admin_kit import TOKEN, admin_gateway

from conftest import Gateway

Start = Callable[..., Gateway]


def _read_heads(sock: socket.socket, count: int) -> bytes:
    """What the connection sends until `count` answer heads have arrived (or it stops, or
    sends more than any head of the admin's)."""
    received = b""
    while received.count(b"\r\n\r\n") < count and len(received) < 4096:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        received += chunk
    return received


def test_head_of_the_live_stream_has_no_body(
    gateway: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HEAD /api/live answers the stream's head only: the next answer on the connection is
    the next request's, not events read as if they were it."""
    _, admin = admin_gateway(gateway, tmp_path, monkeypatch)
    fields = f"Host: {admin.host}\r\nAuthorization: Bearer {TOKEN}\r\n".encode()
    with socket.create_connection(("127.0.0.1", admin.port), timeout=5) as sock:
        sock.sendall(b"HEAD /api/live HTTP/1.1\r\n" + fields + b"\r\n")
        first = _read_heads(sock, 1)
        assert first.startswith(b"HTTP/1.1 200 ")
        assert b"text/event-stream" in first
        sock.sendall(b"GET /api/session HTTP/1.1\r\n" + fields + b"Connection: close\r\n\r\n")
        rest = first.split(b"\r\n\r\n", 1)[1] + _read_heads(sock, 1)
    assert rest.startswith(b"HTTP/1.1 200 "), rest[:80]
    assert b'"authenticated":true' in rest or b"application/json" in rest
