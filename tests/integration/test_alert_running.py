"""Alerts in a running gateway (one worker, and two): a dead upstream pool and a rejected
reload fire once and resolve once on a real webhook receiver (one notifier for the
instance), and the states are published in the data dir for every worker to show."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from test_alert_channels import Receiver, receivers  # noqa: F401 (a fixture)

from bastion.state.snapshots import FileSnapshots
from conftest import Gateway, free_port


def states_of(hook: Receiver) -> list[tuple[str, str]]:
    return [(n["alert"], n["state"]) for n in (json.loads(b) for _, _, b in hook.got)]


def wait_for(hook: Receiver, count: int, timeout: float = 30.0) -> list[tuple[str, str]]:
    deadline = time.monotonic() + timeout
    while len(hook.got) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(hook.got)} notifications, expected {count}: {hook.got}")
        time.sleep(0.05)
    return states_of(hook)


@contextmanager
def listening(port: int) -> Iterator[None]:
    """A TCP server on ``port`` accepting (and closing) every connection: a healthy
    endpoint for a tcp health check."""
    server = socket.create_server(("127.0.0.1", port))

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield
    finally:
        server.close()


def config(
    port: int, upstream: int, hook: Receiver, data_dir: Path, workers: int
) -> dict[str, Any]:
    return {
        "listen": {"http": f"127.0.0.1:{port}"},
        "workers": workers,
        "data_dir": str(data_dir),
        "access_log": {"format": "off"},
        "sites": [
            {
                "routes": [
                    {
                        "path": "/",
                        "proxy": {
                            "upstreams": [f"http://127.0.0.1:{upstream}"],
                            "health": {"type": "tcp", "interval": 0.2, "rise": 1, "fall": 1},
                        },
                    }
                ]
            }
        ],
        "alerts": {
            "instance": "gw-e2e",
            "channels": {"hook": {"webhook": {"url": f"{hook.url}/e2e"}}},
            "rules": {
                "pool-down": {"kind": "pool_unhealthy", "down_for": 0, "period": 1},
                "reload": {"kind": "reload_failed", "period": 1},
            },
        },
    }


@pytest.mark.parametrize("workers", [1, 2])
def test_pool_and_reload_alerts_fire_and_resolve_once(
    workers: int,
    tmp_path: Path,
    gateway: Callable[..., Gateway],
    receivers: Callable[..., Receiver],  # noqa: F811
) -> None:
    hook = receivers()
    upstream = free_port()  # nothing listens: the pool has no healthy endpoint
    data_dir = tmp_path / "data"
    good = config(free_port(), upstream, hook, data_dir, workers)
    gw = gateway(good)

    assert wait_for(hook, 1) == [("pool-down", "firing")]
    with listening(upstream):  # the upstream comes back
        assert wait_for(hook, 2)[1] == ("pool-down", "resolved")

        gw.reload({**good, "sites": []}, wait_for="reload rejected")
        assert wait_for(hook, 3)[2] == ("reload", "firing")
        gw.reload(good, wait_for="configuration reloaded")
        assert wait_for(hook, 4)[3] == ("reload", "resolved")
        time.sleep(2.5)  # two more periods: nothing is repeated, by either worker
        assert len(hook.got) == 4

        published = [s for s in FileSnapshots(data_dir).read("alerts") if "states" in s]
        assert len(published) == 1  # one worker evaluates
        states = {s["name"]: s for s in published[0]["states"]}
        assert (states["pool-down"]["state"], states["reload"]["state"]) == ("OK", "OK")
    assert "must not be empty" in json.loads(hook.got[2][2])["summary"]
