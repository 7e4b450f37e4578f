"""The pure balancing logic: smooth weighted round robin, rendezvous hashing,
peak-EWMA latency and the retry budget."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from typing import Any

import pytest

from bastion.balance.balancer import Member, RetryBudget
from bastion.balance.endpoint import EWMA_DECAY, Endpoint, endpoint_of
from bastion.balance.policies import Hash, PeakEwma, RoundRobin, rendezvous_score
from bastion.config.addresses import parse_upstream
from bastion.http.request import Request
from bastion.proxy.pool import Pool

# Endpoints on real pools, as the plan builds them: in the compiled build `Endpoint(pool:
# Pool)` refuses any other object (docs/compiled.md). Nothing connects, so the pools keep a
# loop that is closed at once.
_LOOP = asyncio.new_event_loop()
_LOOP.close()


def endpoint(name: str) -> Endpoint:
    """The endpoint of `http://{name}` (its label is that URL)."""
    return endpoint_of(Pool(parse_upstream(f"http://{name}"), _LOOP, 0, 1.0))


def name(m: Member | None) -> str:
    """The name a test gave a member's endpoint."""
    assert m is not None
    return m.ep.label.removeprefix("http://")


def member(label: str, weight: int = 1, backup: bool = False) -> Member:
    return Member(endpoint(label), weight, None, backup)


def test_smooth_weighted_round_robin_interleaves() -> None:
    a, b, c = member("a", 5), member("b", 1), member("c", 1)
    policy = RoundRobin()
    names = "".join(name(policy.choose([a, b, c], None, 0.0)) for _ in range(14))
    # nginx's sequence for 5:1:1, twice: the heavy endpoint never gets 5 in a row
    assert names == "aabacaa" * 2


def test_round_robin_with_equal_weights_takes_turns() -> None:
    members = [member(n) for n in "xyz"]
    policy = RoundRobin()
    names = "".join(name(policy.choose(members, None, 0.0)) for _ in range(6))
    assert names == "xyzxyz"


def _req(user: str) -> Request:
    req = Request()
    req.headers = [(b"x-user", b"X-User", user.encode())]
    return req


@pytest.mark.parametrize("n", [3, 5, 10])
def test_rendezvous_moves_only_the_keys_of_a_leaving_member(n: int) -> None:
    members = [member(f"10.0.0.{i}:80") for i in range(n)]
    policy = Hash("header:x-user")
    keys = [f"user-{i}" for i in range(3000)]

    def owners(ms: list[Member]) -> dict[str, str]:
        return {k: name(policy.choose(ms, _req(k), 0.0)) for k in keys}

    before = owners(members)
    counts = Counter(before.values())
    assert min(counts.values()) > len(keys) / n * 0.8  # spread evenly
    leaving = members[1]
    after = owners([m for m in members if m is not leaving])
    moved = [k for k in keys if before[k] != after[k]]
    assert len(moved) <= len(keys) * (1 / n + 0.05)
    assert all(before[k] == name(leaving) for k in moved)


def test_rendezvous_respects_weights() -> None:
    wins: Counter[str] = Counter()
    for i in range(4000):
        key = f"k{i}".encode()
        heavy = rendezvous_score(key, b"heavy", 3.0)
        light = rendezvous_score(key, b"light", 1.0)
        wins["heavy" if heavy > light else "light"] += 1
    assert 0.70 < wins["heavy"] / 4000 < 0.80  # 3:1 → 75%


def test_ewma_takes_a_peak_at_once_and_decays_with_time() -> None:
    ep = endpoint("e")
    ep.observe(0.001, 1.0)
    assert ep.ewma == pytest.approx(0.001)
    ep.observe(0.050, 1.1)  # slower: taken as is
    assert ep.ewma == pytest.approx(0.050)
    ep.observe(0.001, 1.1 + EWMA_DECAY)  # faster, one time constant later
    keep = math.exp(-1)
    assert ep.ewma == pytest.approx(0.050 * keep + 0.001 * (1 - keep))
    # without samples, the cost fades after a while so the endpoint is tried again
    at = ep.ewma_at
    assert ep.latency(at + 1.0) == ep.ewma
    assert ep.latency(at + 4 * EWMA_DECAY) < ep.ewma * 0.1


def test_peak_ewma_prefers_the_fast_endpoint() -> None:
    fast, slow = member("fast"), member("slow")
    fast.ep.observe(0.002, 1.0)
    slow.ep.observe(0.050, 1.0)
    policy = PeakEwma()
    picks = Counter(name(policy.choose([fast, slow], None, 1.5)) for _ in range(100))
    assert picks == {"fast": 100}
    fast.ep.inflight = 30  # but not at any load: cost is latency x (in flight + 1)
    assert name(policy.choose([fast, slow], None, 1.5)) == "slow"


def test_retry_budget_is_a_share_of_recent_requests_with_a_floor() -> None:
    budget = RetryBudget(0.2, floor=10)
    for _ in range(10):
        assert budget.try_retry(100.0)  # the floor: a quiet pool may retry a little
    assert not budget.try_retry(100.0)
    for _ in range(100):
        budget.request(100.5)
    allowed = sum(budget.try_retry(100.5) for _ in range(50))
    assert allowed == 10  # 20% of 100 = 20 retries in the window, 10 already spent
    # ten seconds later the window has moved on
    for _ in range(10):
        budget.request(111.0)
    assert sum(budget.try_retry(111.0) for _ in range(50)) == 10


def balancer(members: list[Member], **kw: Any) -> Any:
    from bastion.balance.balancer import Balancer
    from bastion.config.balancing import PassiveHealth

    return Balancer(
        "test",
        members,
        RoundRobin(),
        "round_robin",
        PassiveHealth(**kw.pop("passive", {})),
        kw.pop("slow_start", 0.0),
        kw.pop("max_connections", 0),
        0,
        kw.pop("health_interval", 5.0),
    )


def test_backups_serve_only_when_no_primary_is_usable() -> None:
    a, b = member("a"), member("b")
    spare = member("spare", backup=True)
    pool = balancer([a, b, spare])
    assert {name(pool.pick(None, 1.0)) for _ in range(4)} == {"a", "b"}
    a.ep.set_healthy(False, 1.0)
    assert {name(pool.pick(None, 1.0)) for _ in range(4)} == {"b"}
    b.ep.set_healthy(False, 1.0)
    assert name(pool.pick(None, 1.0)) == "spare"
    spare.ep.set_healthy(False, 1.0)
    assert pool.pick(None, 1.0) is None
    assert pool.retry_after(1.0) == 5  # the health check interval


def test_passive_ejection_backs_off_and_never_exceeds_max_ejected() -> None:
    members = [member(n) for n in "abcd"]
    pool = balancer(members, passive={"failures": 2, "ejection": 10, "max_ejected": "50%"})
    for m in members:
        pool.failed(m, 1.0)
        pool.failed(m, 1.0)
    ejected = [name(m) for m in members if m.ep.ejected_until > 1.0]
    assert ejected == ["a", "b"]  # 50% of 4: the other two stay in, failing or not
    assert {name(pool.pick(None, 1.0)) for _ in range(4)} == {"c", "d"}
    a = members[0].ep
    assert a.ejected_until == 11.0
    # back after 10s; failing again at once doubles the ejection time
    pool.failed(members[0], 11.5)
    pool.failed(members[0], 11.5)
    assert a.ejected_until == 31.5 and a.ejections == 2


def test_slow_start_ramps_the_weight_of_an_endpoint_that_comes_back() -> None:
    a, b = member("a"), member("b")
    pool = balancer([a, b], slow_start=10.0)
    b.ep.set_healthy(False, 0.0)
    b.ep.set_healthy(True, 100.0)

    def share(now: float) -> float:
        picks = [name(pool.pick(None, now)) for _ in range(1000)]
        return picks.count("b") / 1000

    assert share(100.0) < 0.12  # 10% of its weight at first
    assert 0.3 < share(105.0) < 0.4  # half its weight: 0.5 / 1.5
    assert share(111.0) == 0.5  # full weight once the ramp is over


def test_a_full_endpoint_is_passed_over_for_one_with_room() -> None:
    a, b = member("a"), member("b")
    pool = balancer([a, b], max_connections=2)
    a.ep.inflight = 2
    assert {name(pool.pick(None, 1.0)) for _ in range(4)} == {"b"}
