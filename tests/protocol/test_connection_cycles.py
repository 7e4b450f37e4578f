"""A closed connection is freed when its last reference goes, not by the cycle collector.

httptools' parsers call back into the connection that owns them, so a connection holding its
parser is a reference cycle. Left in place, every closed connection (a client's, or a
backend's that closes after each answer) waits for the cycle collector, whose passes over all
young objects then cost a new-connection-per-request workload about a tenth of its time
(`bench/instructions.py --close`), and hold a TLS connection's memory until they run.

The check: with the collector off, a client connection and a backend connection are opened
and closed through the in-process harness; once the harness's references are dropped, neither
may still be alive.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.http1.server import HTTP1Connection
from bastion.proxy.pool import UpstreamConnection
from conftest import Backend
from protocolkit import InProcessGateway, parse_h1_responses

CONNECTION_TYPES = (HTTP1Connection, UpstreamConnection)


@pytest.fixture
def collector_off() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def live_connections() -> list[str]:
    """The connection objects still alive (every one is tracked by the collector)."""
    return sorted(
        type(obj).__name__ for obj in gc.get_objects() if isinstance(obj, CONNECTION_TYPES)
    )


def config(backend: Backend) -> str:
    return f"""
sites:
  - hosts: ["*"]
    routes:
      - path: /answer
        respond: {{body: "fixed"}}
      - path: /
        proxy: {{upstreams: ["{backend.url}"]}}
"""


def close_one(gateway: InProcessGateway, target: str, seen: set[str]) -> bytes:
    """One request with `Connection: close` on a new HTTP/1.1 connection, until the gateway
    has closed it; the answer's bytes. `seen` gets the kinds of connection objects alive
    while it was open (the check that the test sees them at all)."""
    conn = gateway.connect("h1")
    seen.update(live_connections())
    conn.send(f"GET {target} HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n".encode())

    def closed() -> bool:
        seen.update(live_connections())
        return conn.transport.lost

    conn.settle(closed)
    assert conn.transport.lost, "the gateway did not close the connection"
    gateway.connections.remove(conn)  # the harness's reference, the last but ours
    return conn.transport.output


@pytest.mark.parametrize(
    "target, answer",
    [
        ("/answer", b"fixed"),  # the client's connection alone
        ("/headers?close=1", b"ok"),  # and the backend's, closed by the backend
    ],
)
def test_a_closed_connection_is_no_reference_cycle(
    backend: Backend, tmp_path: Path, collector_off: None, target: str, answer: bytes
) -> None:
    with InProcessGateway(config(backend), tmp_path) as gateway:
        before = live_connections()  # (none, unless an earlier test left some behind)
        seen: set[str] = set()
        output = close_one(gateway, target, seen)
        (response,) = parse_h1_responses(output, ["GET"], closed=True)
        assert response.status == 200 and response.body == answer
        if target.startswith("/headers"):
            # the backend's connection: its close is seen once the loop runs again
            gateway.run(_settle_loop())
        assert live_connections() == before
    # the objects were there to be seen: the client's, and the backend's when proxied
    assert "HTTP1Connection" in seen
    if target.startswith("/headers"):
        assert seen & {"UpstreamConnection", "FieldsUpstreamConnection"}


async def _settle_loop() -> None:
    for _ in range(20):
        await asyncio.sleep(0.01)
