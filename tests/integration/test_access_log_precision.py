"""Request durations have sub-millisecond precision: the JSON access log of a real
`bastion run`, over HTTP/1.1 and HTTP/2, shows durations that are not whole milliseconds
(the loop's clock, which ticks in whole milliseconds, would make every one of them a
multiple of 1 ms), and a backend answering after 2.5 ms shows at least that much."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
from cacheorigin import CountingBackend, Reply

from conftest import Gateway, free_port, wait_for_port

DELAY = 0.0025  # seconds: between two whole milliseconds
REQUESTS = 8  # of each kind: all of them a whole millisecond by chance is out of reach


@pytest.fixture
def origin() -> Any:
    b = CountingBackend()
    yield b
    b.stop()


def _whole_ms(value: float) -> bool:
    return round(value * 1000) % 1000 == 0


@pytest.mark.parametrize("protocol", ["h1", "h2"])
def test_durations_below_a_millisecond(
    protocol: str, origin: CountingBackend, gateway: Any, tmp_path: Path
) -> None:
    origin.replies["/slow"] = Reply(body=b"slow", delay=DELAY)
    origin.replies["/fast"] = Reply(body=b"fast")
    https = free_port()
    data = tmp_path / "data"
    gw: Gateway = gateway(
        {
            "listen": {"http": f"127.0.0.1:{free_port()}", "https": f"127.0.0.1:{https}"},
            "data_dir": str(data),
            "access_log": {"format": "json"},
            "sites": [
                {"hosts": ["*"], "routes": [{"path": "/", "proxy": {"upstreams": [origin.url]}}]}
            ],
        }
    )
    wait_for_port(https)
    context = ssl.create_default_context(cafile=str(data / "ca" / "root.crt"))
    h2 = protocol == "h2"
    with httpx.Client(
        base_url=f"https://localhost:{https}", verify=context, http1=not h2, http2=h2, timeout=10
    ) as client:
        for _ in range(REQUESTS):
            assert client.get("/slow").text == "slow"
            assert client.get("/fast").text == "fast"
    gw.stop()
    lines = [json.loads(x) for x in gw.stdout.splitlines() if x.startswith("{")]
    slow = [line for line in lines if line["target"] == "/slow"]
    fast = [line for line in lines if line["target"] == "/fast"]
    assert len(slow) == len(fast) == REQUESTS
    for line in slow:
        # the backend took at least DELAY, and the whole request at least as long
        assert line["upstream_ms"] >= DELAY * 1000, line
        assert line["duration_ms"] >= line["upstream_ms"], line
    for name in ("duration_ms", "upstream_ms"):
        for kind in (slow, fast):
            values = [line[name] for line in kind]
            assert not all(_whole_ms(v) for v in values), (name, values)
