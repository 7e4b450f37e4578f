"""`RedisLimitStore` against a real redis-server, without a gateway: the script's calendar,
its GCRA answers, key expiry and the refusals remembered without a round trip."""

from __future__ import annotations

import asyncio
import calendar
from collections.abc import Callable

import pytest
import redis as redis_py

from bastion.config.state_models import State
from bastion.state.limits import Check, StoreUnavailable, quota_window
from bastion.state.redis_limits import LUA_CALENDAR, RedisLimitStore
from rediskit import RedisServer
from rediskit import redis_server as redis_server  # the fixture

pytestmark = pytest.mark.timeout(60)

WINDOW = LUA_CALENDAR + "local s, e = window(ARGV[1], tonumber(ARGV[2]))\nreturn {s, e}"


def test_the_scripts_calendar_is_the_gateways(redis_server: Callable[[], RedisServer]) -> None:
    """Quota periods computed in Lua from Redis's clock match `quota_window` on month
    ends, leap days and century years."""
    server = redis_server()
    client = redis_py.Redis(port=server.port)
    moments = []
    for year in (1999, 2000, 2024, 2025, 2026, 2100, 2400):
        for month in range(1, 13):
            start = calendar.timegm((year, month, 1, 0, 0, 0))
            moments += [start, start + 0.000001, start - 0.000001, start + 86399.5]
    moments += [
        calendar.timegm((2024, 2, 29, 23, 59, 59)),
        calendar.timegm((2100, 2, 28, 12, 0, 0)),
    ]
    for now in moments:
        for per in ("day", "month"):
            _, start, end = quota_window(per, now)
            got = client.eval(WINDOW, 0, per, repr(now))
            assert [int(v) for v in got] == [int(start), int(end)], (per, now)  # type: ignore[union-attr]


def store(server: RedisServer, **state: object) -> RedisLimitStore:
    return RedisLimitStore(State.model_validate({"redis": server.url, "timeout": "2s", **state}))


def test_gcra_and_quota_answers_and_key_expiry(redis_server: Callable[[], RedisServer]) -> None:
    server = redis_server()
    limits = store(server)
    rate = Check(3, 60.0, 3)  # 3/m, burst 3
    quota = Check(5, 0.0, 0, "day")

    async def run() -> list[tuple[bool, list[tuple[bool, int]] | None]]:
        got = []
        for _ in range(4):
            allowed, outcomes = await limits.take([rate, quota], ["r|a", "r|b"], 0.0, True)
            got.append((allowed, [(o.allowed, o.remaining) for o in outcomes or []]))
        return got

    answers = asyncio.run(run())
    assert answers == [
        (True, [(True, 2), (True, 4)]),
        (True, [(True, 1), (True, 3)]),
        (True, [(False, 0), (True, 2)]),  # the last unit of the rate limit went
        (False, [(False, 0), (True, 2)]),  # refused: the quota was not consumed
    ]
    client = redis_py.Redis(port=server.port)
    keys = sorted(k.decode() for k in client.keys("bastion:*"))
    assert len(keys) == 2 and all(k.startswith("bastion:{") for k in keys)
    rate_key, quota_key = (
        (k for k in keys if k.endswith("r|a")),
        (k for k in keys if k.endswith("r|b")),
    )
    rate_ttl = client.pttl(next(rate_key))
    assert 0 < rate_ttl <= 60_001  # an idle bucket is a full one: the key goes
    now = float(client.time()[0])
    _, _, end = quota_window("day", now)
    assert client.pexpiretime(next(quota_key)) == int(end) * 1000  # the day's end


def test_a_refusal_is_remembered_until_it_would_pass(
    redis_server: Callable[[], RedisServer],
) -> None:
    server = redis_server()
    limits = store(server, timeout="100ms", breaker={"failures": 1, "open_for": "10s"})
    checks = [Check(1, 60.0, 1)]  # one list, as a route's policy passes it every time

    async def run() -> tuple[bool, bool, bool]:
        first, _ = await limits.take(checks, ["k|1"], 0.0)
        second, _ = await limits.take(checks, ["k|1"], 0.0)
        server.pause()
        try:
            # Redis frozen: a remembered refusal needs no round trip
            again, outcomes = await limits.take(checks, ["k|1"], 1.0)
            assert outcomes is not None and 58 <= outcomes[0].retry_after <= 60
            with pytest.raises(StoreUnavailable):
                await limits.take(checks, ["k|other"], 1.0)
        finally:
            server.resume()
        return first, second, again

    assert asyncio.run(run()) == (True, False, False)
    assert limits.connection.breaker.open
