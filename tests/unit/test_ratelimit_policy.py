"""The rate-limit policy: the single-limit fast path answers exactly like the general one,
store keys separate consumers, addresses and header values, and its tables stay bounded."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from bastion.clock import ManualClock
from bastion.config.policy_traffic import Quota, RateLimit
from bastion.http.request import Request
from bastion.policies import ratelimit
from bastion.policies.ratelimit import OneRateLimitPolicy, RateLimitPolicy, build_policy
from bastion.state.limits import MemoryLimitStore

T0 = 1_790_000_000.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


def request(ip: str = "10.0.0.1", consumer: str = "", tenant: bytes | None = None) -> Request:
    req = Request()
    req.client_ip = ip
    req.consumer = consumer
    if tenant is not None:
        req.headers = [(b"x-tenant", b"X-Tenant", tenant)]
    return req


def answer(policy: RateLimitPolicy, req: Request) -> tuple[int, bytes]:
    """(status, the header lines the policy adds) of one request."""
    denied = policy.on_request(req)
    if denied is None:
        return 200, req.extra_head
    assert denied.status == 429
    return 429, denied.headers


@pytest.mark.parametrize(
    "spec",
    [
        RateLimit(rate="3/3s", name="api"),
        RateLimit(rate="5/s", burst=3, key="client_ip"),
        RateLimit(rate="7/10s", key="header:x-tenant"),
        RateLimit(rate="2/h", key="consumer"),
        RateLimit(rate="1000000/s", key="consumer"),
        RateLimit(rate="4/s", key="route", advertise=False),
    ],
)
def test_the_single_limit_path_answers_like_the_general_one(
    spec: RateLimit, clock: ManualClock
) -> None:
    fast = build_policy("s", [spec], MemoryLimitStore(clock=clock), None)
    general = RateLimitPolicy("s", [spec], MemoryLimitStore(clock=clock), None)
    assert isinstance(fast, OneRateLimitPolicy) and type(general) is RateLimitPolicy
    rnd = random.Random(7)
    seen: dict[int, set[bytes]] = {200: set(), 429: set()}
    for i in range(600):
        clock.advance(rnd.choice([0.0] * 6 + [1e-6, 0.01, 0.1, 0.3, 0.7, 1.0, 2.5, 700.0]))
        made = [
            answer(p, request(f"10.0.0.{i % 3}", ["", "alice"][i % 2], [None, b"a", b"b"][i % 3]))
            for p in (fast, general)
        ]
        assert made[0] == made[1], (i, made)
        seen[made[0][0]].add(made[0][1])
    if spec.rate != "1000000/s":
        assert seen[429], "the sequence never reached the limit"
    if spec.advertise:
        assert len(seen[200]) > 1, "remaining and reset never changed"


def test_a_store_key_for_each_consumer_address_and_header_value(clock: ManualClock) -> None:
    by_consumer = build_policy(
        "s", [RateLimit(rate="1/h", key="consumer")], MemoryLimitStore(clock=clock), None
    )
    # a consumer named like an address has a bucket of its own
    assert by_consumer.on_request(request("10.0.0.2", consumer="10.0.0.1")) is None
    assert by_consumer.on_request(request("10.0.0.1")) is None
    assert by_consumer.on_request(request("10.0.0.3", consumer="10.0.0.1")) is not None
    assert by_consumer.on_request(request("10.0.0.1")) is not None
    by_header = build_policy(
        "s", [RateLimit(rate="1/h", key="header:x-tenant")], MemoryLimitStore(clock=clock), None
    )
    # a tenant named like an address, and a request without the header from that address
    assert by_header.on_request(request("10.0.0.1", tenant=b"10.0.0.1")) is None
    assert by_header.on_request(request("10.0.0.1")) is None
    assert by_header.on_request(request("10.0.0.2", tenant=b"10.0.0.1")) is not None


def test_the_real_client_is_counted_behind_a_trusted_proxy(clock: ManualClock) -> None:
    trusted: Callable[[str], bool] = lambda ip: ip == "192.0.2.1"  # noqa: E731
    policy = build_policy(
        "s", [RateLimit(rate="1/h", key="client_ip")], MemoryLimitStore(clock=clock), trusted
    )

    def via_proxy(client: bytes) -> Request:
        req = request("192.0.2.1")
        req.xff = client
        return req

    assert policy.on_request(via_proxy(b"203.0.113.5")) is None
    assert policy.on_request(via_proxy(b"203.0.113.6")) is None
    assert policy.on_request(via_proxy(b"203.0.113.5")) is not None


def test_tables_stay_bounded_under_a_flood_of_clients(clock: ManualClock) -> None:
    policy = build_policy(
        "s", [RateLimit(rate="100000/s", key="client_ip")], MemoryLimitStore(clock=clock), None
    )
    assert isinstance(policy, OneRateLimitPolicy)
    for i in range(3 * ratelimit.KEY_CACHE):
        clock.advance(1e-5 * (i % 7))  # busy: the TAT ahead of now takes many values
        req = request(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
        assert policy.on_request(req) is None
        assert b'RateLimit: "client-ip-100000-per-s";r=' in req.extra_head
    assert 0 < len(policy.limit.by_ip) <= ratelimit.KEY_CACHE
    assert len(policy.by_ahead) <= ratelimit.LINE_CACHE


def test_several_limits_and_quotas_take_the_general_path(clock: ManualClock) -> None:
    specs = [RateLimit(rate="2/s", name="fast"), Quota(limit=3, per="day", name="daily")]
    policy = build_policy("s", specs, MemoryLimitStore(clock=clock), None)
    assert type(policy) is RateLimitPolicy
    statuses = []
    for _ in range(5):
        clock.advance(1.0)
        statuses.append(answer(policy, request())[0])
    assert statuses == [200, 200, 200, 429, 429]
