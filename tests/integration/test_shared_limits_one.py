"""The single rate limit's fast path in Redis (`OneSharedRateLimitPolicy`, `LUA_ONE`)
against the general one (`SharedRateLimitPolicy`, `LUA`), with a real redis-server: for
the same sequence of requests the same statuses, ``Retry-After``, ``RateLimit-Policy``
and ``RateLimit`` fields byte for byte (admitted, admitted with none left, refused,
refusal remembered), through the policies and through a real gateway; and the fast path
after the server forgot its script (NOSCRIPT)."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from bastion.config.policy_traffic import Quota, RateLimit
from bastion.config.state_models import State
from bastion.http.request import Request
from bastion.policies.base import Denied
from bastion.policies.shared_limits import (
    OneSharedRateLimitPolicy,
    SharedRateLimitPolicy,
    shared_policy,
)
from bastion.state.limits import Check
from bastion.state.redis_limits import LUA_ONE, RedisLimitStore
from conftest import Backend, Gateway
from rediskit import REDIS_CLI, RedisServer
from rediskit import redis_server as redis_server  # the fixture

pytestmark = pytest.mark.timeout(120)

# rates whose fields do not depend on the few milliseconds between two requests: whole
# seconds between units (or a microsecond: every request finds its key idle), and
# bursts that end admitted with none left, then refused
RATES = [
    {"rate": "5/m"},
    {"rate": "5/m", "burst": 2},
    {"rate": "10/10s", "burst": 3},
    {"rate": "1/s"},
    {"rate": "1000000/s"},
    {"rate": "4/m", "advertise": False},
]


def request(ip: str = "192.0.2.7", headers: dict[bytes, bytes] | None = None) -> Request:
    req = Request()
    req.client_ip = ip
    req.headers = [(name, name, value) for name, value in (headers or {}).items()]
    return req


async def answer(policy: SharedRateLimitPolicy, req: Request) -> tuple[int, bytes]:
    """What the chain does with the policy's `begin` (`policies/chain.py`): the status
    and the header lines of the answer."""
    req.extra_head = b""
    outcome: Any = policy.begin(req)
    while type(outcome) is tuple:
        future, then = outcome
        await asyncio.wait([future])
        outcome = then(future)
    if outcome is None:
        return 200, req.extra_head
    assert isinstance(outcome, Denied)
    return outcome.status, outcome.headers


@pytest.mark.parametrize("spec", RATES, ids=[str(sorted(r.items())) for r in RATES])
@pytest.mark.parametrize("key", ["client_ip", "header:x-key", "route", "consumer"])
def test_the_fast_path_answers_as_the_general_path(
    redis_server: Callable[[], RedisServer], spec: dict[str, Any], key: str
) -> None:
    server = redis_server()
    store = RedisLimitStore(State.model_validate({"redis": server.unix_url, "timeout": "2s"}))
    limit = RateLimit.model_validate({**spec, "key": key})
    # two routes (scopes), so two counters: the same history on each
    fast = shared_policy("fast.test /", [limit], store, None, 1)
    general = SharedRateLimitPolicy("general.test /", [limit], store, None, 1)
    assert isinstance(fast, OneSharedRateLimitPolicy)
    assert type(general) is SharedRateLimitPolicy

    async def run() -> list[tuple[tuple[int, bytes], tuple[int, bytes]]]:
        await store.take([Check(1, 1.0, 1)], ["warm"], 0.0)  # connected: the steady path
        pairs = []
        for i in range(12):
            # with and without the header, two addresses, a consumer on some
            req = request(
                "192.0.2.1" if i % 3 else "192.0.2.2", {b"x-key": b"k"} if i % 2 else None
            )
            req.consumer = "ann" if i % 4 == 1 else ""
            other = request(req.client_ip, {name: value for name, _, value in req.headers})
            other.consumer = req.consumer
            pairs.append((await answer(fast, req), await answer(general, other)))
        return pairs

    pairs = asyncio.run(run())
    for got, expected in pairs:
        assert got == expected, pairs
    if not limit.rate.startswith("1000000/"):
        assert any(got[0] == 429 for got, _ in pairs)  # refusals were compared too
    if limit.advertise:
        assert all(b"RateLimit: " in got[1] for got, _ in pairs), pairs
    else:
        assert not any(b"RateLimit" in got[1] for got, _ in pairs), pairs


def test_a_quota_or_two_limits_take_the_general_path(
    redis_server: Callable[[], RedisServer],
) -> None:
    server = redis_server()
    store = RedisLimitStore(State.model_validate({"redis": server.unix_url}))
    rate = RateLimit.model_validate({"rate": "5/m"})
    quota = Quota.model_validate({"limit": 5, "per": "day"})
    assert type(shared_policy("s /", [quota], store, None, 1)) is SharedRateLimitPolicy
    assert type(shared_policy("s /", [rate, rate], store, None, 1)) is SharedRateLimitPolicy


def get(
    gw: Gateway, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        fields = ("retry-after", "ratelimit-policy", "ratelimit")
        return resp.status, {k.lower(): v for k, v in resp.getheaders() if k.lower() in fields}
    finally:
        conn.close()


def test_a_gateway_answers_the_same_on_the_fast_and_the_general_path(
    redis_server: Callable[[], RedisServer], backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    """Two routes with the same advertised limit, one with nothing else (the fast path),
    one with a second limit that neither binds nor is advertised (the general path):
    the same answers, request after request, through real sockets."""
    redis = redis_server()
    limit = {"rate": "5/m", "key": "header:x-key"}
    never = {"rate": "1000000/s", "key": "route", "advertise": False}
    upstream = {"proxy": {"upstreams": [backend.url]}}
    gw = gateway({
        "access_log": {"format": "off"},
        "state": {"redis": redis.unix_url, "timeout": "2s"},
        "sites": [{"hosts": ["*"], "routes": [
            {"path": "/fast/", "rate_limits": [limit], **upstream},
            {"path": "/general/", "rate_limits": [limit, never], **upstream},
        ]}],
    })  # fmt: skip
    answers = []
    for i in range(13):
        headers = {"X-Key": "one"} if i % 2 else {}
        answers.append((get(gw, f"/fast/{i}", headers), get(gw, f"/general/{i}", headers)))
    for fast, general in answers:
        assert fast == general, answers
    statuses = [fast[0] for fast, _ in answers]
    assert statuses.count(200) == 13 - statuses.count(429) and 429 in statuses, answers
    assert all("ratelimit" in fast[1] for fast, _ in answers), answers


def test_the_fast_path_after_the_server_forgot_its_script(
    redis_server: Callable[[], RedisServer], backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    """SCRIPT FLUSH between two requests: the next EVALSHA is answered NOSCRIPT and the
    script is sent whole; the count goes on (nothing was counted twice or lost)."""
    redis = redis_server()
    gw = gateway({
        "access_log": {"format": "off"},
        "state": {"redis": redis.unix_url, "timeout": "2s"},
        "sites": [{"hosts": ["*"], "routes": [
            {"path": "/", "rate_limits": [{"rate": "5/m", "name": "five"}],
             "proxy": {"upstreams": [backend.url]}},
        ]}],
    })  # fmt: skip
    digest = hashlib.sha1(LUA_ONE.encode()).hexdigest()
    first = get(gw, "/a")
    assert first[0] == 200 and first[1]["ratelimit"] == '"five";r=4;t=12', first
    assert redis.command("SCRIPT", "FLUSH") == "+OK"
    second = get(gw, "/b")
    assert second[0] == 200 and second[1]["ratelimit"] == '"five";r=3;t=24', second
    exists = subprocess.run(
        [REDIS_CLI, "-p", str(redis.port), "SCRIPT", "EXISTS", digest],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    stats = subprocess.run(
        [REDIS_CLI, "-p", str(redis.port), "INFO", "commandstats"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert exists.stdout.split() == ["1"], stats.stdout
    assert [get(gw, f"/c{i}")[0] for i in range(4)] == [200, 200, 200, 429]
