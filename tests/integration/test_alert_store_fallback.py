"""The store_fallback alert in a running gateway: when the shared limit store (a real
redis-server) goes away, requests take their limits' on_store_down and the alert fires on
a real webhook receiver; when Redis is back, it resolves. Once each."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from test_alert_channels import Receiver, receivers  # noqa: F401 (a fixture)
from test_alert_running import wait_for

from conftest import Backend, Gateway
from rediskit import RedisServer
from rediskit import redis_server as redis_server  # the fixture

pytestmark = pytest.mark.timeout(90)


def config(redis: RedisServer, backend: Backend, hook: Receiver) -> dict[str, Any]:
    return {
        "access_log": {"format": "off"},
        "state": {
            "redis": redis.url,
            "timeout": "500ms",
            "breaker": {"failures": 1, "open_for": "300ms"},
        },
        "sites": [
            {
                "routes": [
                    {
                        "path": "/",
                        "proxy": {"upstreams": [backend.url]},
                        "rate_limits": [{"rate": "1000/m", "on_store_down": "local"}],
                    }
                ]
            }
        ],
        "alerts": {
            "channels": {"hook": {"webhook": {"url": f"{hook.url}/fallback"}}},
            "rules": {"redis-fallback": {"kind": "store_fallback", "period": 1}},
        },
    }


def test_the_fallback_alert_fires_while_redis_is_gone_and_resolves_when_it_is_back(
    redis_server: Callable[[], RedisServer],
    backend: Backend,
    gateway: Callable[..., Gateway],
    receivers: Callable[..., Receiver],  # noqa: F811
) -> None:
    redis = redis_server()
    hook = receivers()
    gw = gateway(config(redis, backend, hook))
    assert gw.status_of("/ok") == 200
    time.sleep(2.5)  # two evaluations with Redis answering: nothing to say
    assert hook.got == []

    redis.stop()
    deadline = time.monotonic() + 30
    while not hook.got and time.monotonic() < deadline:
        assert gw.status_of("/while-down") == 200  # served: the limit falls back to local
        time.sleep(0.2)
    assert wait_for(hook, 1) == [("redis-fallback", "firing")]
    firing = json.loads(hook.got[0][2])
    assert "unavailable" in firing["summary"] and "on_store_down" in firing["summary"]

    redis.start()
    deadline = time.monotonic() + 30
    while len(hook.got) < 2 and time.monotonic() < deadline:
        assert gw.status_of("/back") == 200  # a request after open_for tries Redis again
        time.sleep(0.2)
    assert wait_for(hook, 2) == [("redis-fallback", "firing"), ("redis-fallback", "resolved")]
    time.sleep(2.5)
    assert len(hook.got) == 2  # once each
