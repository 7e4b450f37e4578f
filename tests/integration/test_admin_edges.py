"""The admin listener's edges, attacked through real sockets against a real `bastion run`:
HTTP semantics a client or an intermediary relies on (HEAD), and what the gateway does
when the admin's inputs are hostile or its settings change."""

from __future__ import annotations

import base64
import contextlib
import http.client
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import bcrypt
import pytest
from test_admin_kit import TOKEN, admin_gateway

from bastion.observe.stats.schema import open_writer, stats_path
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


def _locked_stats_file(data_dir: Path) -> sqlite3.Connection:
    """A statistics file that another process holds locked (a backup tool, an `sqlite3`
    shell left in a transaction): every reader waits for it, then fails."""
    path = stats_path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    open_writer(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("PRAGMA user_version")
    holder.execute("COMMIT")  # the exclusive lock stays with the connection
    return holder


def test_a_locked_statistics_file_does_not_stall_the_gateway(
    gateway: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live view and the stats endpoint read the file off the event loop, and in
    threads of the admin's own: while readers wait for a lock, the sites keep answering
    (basic auth's password checks need the loop's thread pool), and the endpoint says what
    is wrong."""
    data_dir = tmp_path / "data"
    holder = _locked_stats_file(data_dir)
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    route = {"path": "/", "respond": {}, "auth": {"basic": {"users": {"alice": hashed}}}}
    try:
        gw, admin = admin_gateway(
            gateway,
            tmp_path,
            monkeypatch,
            data_dir=str(data_dir),
            sites=[{"hosts": ["*"], "routes": [route]}],
        )
        fields = f"Host: {admin.host}\r\nAuthorization: Bearer {TOKEN}\r\n".encode()
        with contextlib.ExitStack() as stack:
            live = stack.enter_context(socket.create_connection(("127.0.0.1", admin.port), 30))
            live.sendall(b"GET /api/live HTTP/1.1\r\n" + fields + b"\r\n")
            received = b""
            while b"retry: 2000\n\n" not in received:
                chunk = live.recv(4096)
                assert chunk, received
                received += chunk
            assert received.startswith(b"HTTP/1.1 200 ")
            # the stream now reads its first second, which waits for the lock; so do
            # dashboards asking for their figures
            asking = []
            for _ in range(6):  # with the live read: more than the loop's pool has threads
                sock = stack.enter_context(socket.create_connection(("127.0.0.1", admin.port), 30))
                sock.sendall(b"GET /api/stats?window=1h HTTP/1.1\r\n" + fields + b"\r\n")
                asking.append(sock)
            time.sleep(0.5)  # (they are read and their reads started)
            conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
            basic = "Basic " + base64.b64encode(b"alice:pw").decode()
            conn.request("GET", "/", headers={"Authorization": basic})
            assert conn.getresponse().status == 200
            conn.close()
            # ... and the site answered while those reads still wait
            for sock in [live, *asking]:
                sock.setblocking(False)
                with pytest.raises(BlockingIOError):
                    sock.recv(4096)
        stats = admin.get("/api/stats?window=5m")
        assert stats.status == 503, stats
        assert b"statistics file" in stats.body
    finally:
        holder.close()


def test_referrers_are_kept_without_their_query(
    gateway: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page of the API opened with its key in the query sends that URL as the Referer
    of what it loads: the statistics count the page, never the key."""
    gw, admin = admin_gateway(gateway, tmp_path, monkeypatch)
    page = "https://api.example/docs"
    for referrer in (f"{page}?api_key=KEY-0123456789", f"{page}?api_key=KEY-9876543210#x"):
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
        conn.request("GET", "/", headers={"Referer": referrer})
        assert conn.getresponse().status == 200
        conn.close()
    deadline = time.monotonic() + 30
    while True:  # the top lists are written every few seconds
        stats = admin.get("/api/stats?window=5m")
        assert stats.status == 200, stats
        if stats.json()["top"]["referrers"] or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert stats.json()["top"]["referrers"] == [{"key": page, "requests": 2}]
    assert b"KEY-" not in stats.body


def test_login_through_a_tls_proxy_in_front(
    gateway: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy that ends TLS in front of a plain listener, under a name of `admin.hosts`:
    the browser's login form comes with the https origin of that name, and is let in;
    that origin under another Host, or an origin of another site, is still refused."""
    name = "admin.example.com"
    _, admin = admin_gateway(gateway, tmp_path, monkeypatch, admin={"hosts": [name]})
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    body = f"token={TOKEN}".encode()

    def login(host: str, origin: str) -> int:
        answer = admin.ask("POST", "/login", {**form, "Host": host, "Origin": origin}, body)
        assert (answer.status == 303) == (answer.header("set-cookie") is not None)
        return answer.status

    assert login(name, f"https://{name}") == 303
    assert login(name, f"http://{name}") == 303
    assert login(admin.host, f"https://{name}") == 403
    assert login(admin.host, f"https://{admin.host}") == 403  # not a name of admin.hosts
    assert login(name, "https://evil.example") == 403
