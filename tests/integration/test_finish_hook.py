"""The request-finish hook: every finished request reaches the worker's observers once,
with its status, route, cache outcome and refusing policy, over HTTP/1.1 and HTTP/2.

The gateway runs in this process (a real worker with its listeners, plan and TLS) so that
a test can add an observer; its clients are real (httpx over HTTP/1.1 and HTTP/2)."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import struct
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult

import h2.config
import h2.connection
import httpx
import uvloop
import yaml

from bastion.config import load_config
from bastion.http.request import Request
from bastion.server.worker import Worker
from cachekit import RecordingOrigin
from conftest import free_port


class _Cacheable(RecordingOrigin):
    def answer(
        self, handler: BaseHTTPRequestHandler, url: SplitResult, headers: dict[str, str], count: int
    ) -> None:
        body = b'{"n": %d}' % count
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Cache-Control", "max-age=60")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


Seen = tuple[str, int, str, str, str, str, int, int]


def _record(seen: list[Seen]) -> Callable[[Request], None]:
    def observe(req: Request) -> None:
        # one of several observers (the statistics' tap is on): the hook set the time
        assert req.ended >= req.start > 0
        seen.append(
            (
                req.version,
                req.status,
                req.route_name,
                req.cache,
                req.refused_by,
                req.refusal,
                req.body_bytes,
                req.bytes_out,
            )
        )

    return observe


def _serve(tmp_path: Path, clients: Callable[[str, str, ssl.SSLContext], None]) -> list[Seen]:
    """Run a gateway in this process, add an observer, run `clients` (in a thread, with the
    plain and TLS base URLs), stop, and return what the observer saw."""
    origin = _Cacheable()
    data = tmp_path / "data"
    http, https = free_port(), free_port()
    routes = [
        {"path": "/ok", "respond": {"status": 200, "body": "fine"}},
        {
            "path": "/denied",
            "ip_rules": {"deny": ["0.0.0.0/0", "::/0"]},
            "respond": {"status": 200},
        },
        {"path": "/cached", "proxy": {"upstreams": [origin.url]}, "cache": {}},
    ]
    config = {
        "listen": {"http": f"127.0.0.1:{http}", "https": f"127.0.0.1:{https}"},
        "data_dir": str(data),
        "access_log": {"format": "off"},
        "sites": [
            {"hosts": ["localhost"], "routes": routes},
            {"hosts": ["*"], "tls": "off", "routes": routes},
        ],
    }
    path = tmp_path / "bastion.yaml"
    path.write_text(yaml.safe_dump(config))
    worker = Worker(load_config(path))
    seen: list[Seen] = []

    async def main() -> None:
        served = asyncio.create_task(worker.serve())
        try:
            while worker.ready is None:
                await asyncio.sleep(0.01)
            await asyncio.wait_for(worker.ready.wait(), 30)
            assert worker.ctx is not None
            worker.ctx.add_observer(_record(seen))
            tls = ssl.create_default_context(cafile=str(data / "ca" / "root.crt"))
            await asyncio.to_thread(
                clients, f"http://127.0.0.1:{http}", f"https://localhost:{https}", tls
            )
        finally:
            worker.stop()
            await served
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
                loop.remove_signal_handler(sig)

    try:
        uvloop.run(main())
    finally:
        origin.stop()
    return seen


def _requests(client: httpx.Client, base: str) -> list[int]:
    return [
        client.get(base + "/ok").status_code,
        client.get(base + "/denied").status_code,
        client.get(base + "/cached").status_code,
        client.get(base + "/cached").status_code,
        client.get(base + "/nowhere").status_code,
        client.post(base + "/cached", content=b"12345").status_code,
    ]


def _expected(version: str) -> list[tuple[Any, ...]]:
    refusal = "Requests from this address are not allowed on this route."
    return [
        (version, 200, "/ok", "", "", "", 0),
        (version, 403, "/denied", "", "ip_rules", refusal, 0),
        (version, 200, "/cached", "MISS", "", "", 0),
        (version, 200, "/cached", "HIT", "", "", 0),
        (version, 404, "", "", "", "", 0),
        (version, 200, "/cached", "BYPASS", "", "", 5),
    ]


def test_each_finished_request_reaches_the_observers(tmp_path: Path) -> None:
    statuses: dict[str, list[int]] = {}

    def clients(plain: str, secure: str, tls: ssl.SSLContext) -> None:
        with httpx.Client(timeout=30) as h1:
            statuses["1.1"] = _requests(h1, plain)
        with httpx.Client(http1=False, http2=True, verify=tls, timeout=30) as h2:
            statuses["2.0"] = _requests(h2, secure)

    seen = _serve(tmp_path, clients)
    assert statuses == {v: [200, 403, 200, 200, 404, 200] for v in ("1.1", "2.0")}
    # the cache is shared by both sites' routes of one plan only per site: the HTTP/2
    # requests go to the TLS site, whose cache starts empty too
    assert [s[:7] for s in seen] == _expected("1.1") + _expected("2.0")
    assert all(s[7] > 0 for s in seen)  # bytes out: every answer has a head at least


def test_a_request_its_client_abandons_is_finished_once_with_499(tmp_path: Path) -> None:
    def clients(plain: str, secure: str, tls: ssl.SSLContext) -> None:
        port = int(plain.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            # a body announced and never sent: the request is dispatched, its client leaves
            sock.sendall(b"POST /cached HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
            time.sleep(0.5)
            # a reset, not a half-close (after which the answer would still be owed)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        time.sleep(0.5)

    seen = _serve(tmp_path, clients)
    assert [s[:3] for s in seen] == [("1.1", 499, "/cached")]


def test_a_stream_its_client_resets_is_finished_once_with_499(tmp_path: Path) -> None:
    def clients(plain: str, secure: str, tls: ssl.SSLContext) -> None:
        port = int(secure.rsplit(":", 1)[1])
        tls.set_alpn_protocols(["h2"])
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        raw = socket.create_connection(("127.0.0.1", port))
        with raw, tls.wrap_socket(raw, server_hostname="localhost") as sock:
            conn.initiate_connection()
            headers = [
                (":method", "POST"),
                (":scheme", "https"),
                (":authority", "localhost"),
                (":path", "/cached"),
                ("content-length", "10"),
            ]
            conn.send_headers(1, headers)
            conn.send_data(1, b"12345")
            sock.sendall(conn.data_to_send())
            time.sleep(0.5)  # dispatched, its body still arriving
            conn.reset_stream(1)
            sock.sendall(conn.data_to_send())
            time.sleep(0.5)

    seen = _serve(tmp_path, clients)
    assert [s[:3] for s in seen] == [("2.0", 499, "/cached")]
