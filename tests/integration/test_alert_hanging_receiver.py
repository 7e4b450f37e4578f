"""A webhook receiver that accepts and never answers, in a running gateway: the
deliveries waiting for it take threads of their own, never those the requests need
(the password checks of basic auth, DNS lookups of upstreams run in the loop's pool), nor
threads a stopping gateway waits for."""

from __future__ import annotations

import base64
import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest

from conftest import Gateway, free_port

CHANNELS = 8  # more than the loop's default pool has threads on a small machine


class HangingReceiver:
    """Accepts connections and holds them open without a byte of answer."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.held.append(conn)

    def still_open(self) -> int:
        """How many of the held connections the gateway has not closed."""
        count = 0
        for conn in self.held:
            conn.setblocking(False)
            try:
                while conn.recv(65536):
                    pass  # the request (read and dropped); b"": closed
            except BlockingIOError:
                count += 1
        return count

    def close(self) -> None:
        self.server.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def hanging() -> Iterator[HangingReceiver]:
    receiver = HangingReceiver()
    yield receiver
    receiver.close()


def test_hanging_webhooks_do_not_delay_requests(
    tmp_path: Path, gateway: Callable[..., Gateway], hanging: HangingReceiver
) -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    dead = free_port()  # nothing listens: the pool is down, the alert fires at once
    channels = {
        f"hook{i}": {"webhook": {"url": f"http://127.0.0.1:{hanging.port}/{i}", "timeout": 60}}
        for i in range(CHANNELS)
    }
    gw = gateway(
        {
            "data_dir": str(tmp_path / "data"),
            "access_log": {"format": "off"},
            "sites": [
                {
                    "routes": [
                        {
                            "path": "/dead/",
                            "proxy": {
                                "upstreams": [f"http://127.0.0.1:{dead}"],
                                "health": {"type": "tcp", "interval": 0.2, "rise": 1, "fall": 1},
                            },
                        },
                        {
                            "path": "/",
                            "respond": {"status": 200, "body": "in"},
                            "auth": {"basic": {"users": {"alice": hashed}}},
                        },
                    ]
                }
            ],
            "alerts": {
                "channels": channels,
                "rules": {"pool-down": {"kind": "pool_unhealthy", "down_for": 0, "period": 1}},
            },
        }
    )
    deadline = time.monotonic() + 30
    while len(hanging.held) < 2:  # the notifications are under way (and wait)
        assert time.monotonic() < deadline, gw.stderr
        time.sleep(0.05)
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
    conn.request(
        "GET", "/", headers={"Authorization": "Basic " + base64.b64encode(b"alice:pw").decode()}
    )
    answer = conn.getresponse()
    assert answer.status == 200 and answer.read() == b"in"
    conn.close()
    # answered while every delivery still waits for the receiver
    assert hanging.still_open() == len(hanging.held)
    # and the gateway stops at once, not after the deliveries' timeout
    assert gw.stop() == 0
