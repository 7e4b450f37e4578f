"""The balancing logic in-process, on a manual clock: the real Balancer, endpoints, policies
and health checks (against real backends where a check needs one). What the gateway would
have to wait for in real time (check intervals, ejection times, a latency average that
decays) happens here when the test moves the clock; test_balancing.py keeps the gateway
tests that prove the same parts are wired in."""

from __future__ import annotations

import asyncio
import heapq
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from lbkit import Controlled, controlled_backends

from bastion.balance.balancer import Balancer, Member
from bastion.balance.endpoint import endpoint_of
from bastion.balance.health import HealthCheck
from bastion.balance.policies import PeakEwma, Policy, RoundRobin
from bastion.clock import ManualClock
from bastion.config.addresses import parse_upstream
from bastion.config.balancing import ActiveHealth, PassiveHealth
from bastion.proxy.pool import Pool

controlled = pytest.fixture(controlled_backends, name="controlled")


class Upstreams:
    """A pool of endpoints as the plan builds it, named like the backends behind them."""

    def __init__(
        self,
        urls: dict[str, str],
        policy: Policy,
        passive: dict[str, Any] | None = None,
        health_interval: float | None = None,
    ) -> None:
        loop = asyncio.new_event_loop()  # only kept by the pools: nothing connects through it
        loop.close()
        self.names: dict[str, str] = {}
        members = []
        for name, url in urls.items():
            address = parse_upstream(url)
            self.names[address.text] = name
            members.append(Member(endpoint_of(Pool(address, loop, 0, 1.0)), 1, None, False))
        self.balancer = Balancer(
            "test",
            members,
            policy,
            "test",
            PassiveHealth.model_validate(passive or {}),
            0.0,
            0,
            0,
            health_interval,
        )
        self.members = {self.names[m.ep.label]: m for m in members}

    def who(self, n: int, now: float) -> Counter[str]:
        """Which endpoints the next `n` requests go to."""
        seen: Counter[str] = Counter()
        for _ in range(n):
            member = self.balancer.pick(None, now)
            assert member is not None, "no endpoint is usable"
            seen[self.names[member.ep.label]] += 1
        return seen


# ------------------------------------------------------------------ active health
def test_flapping_health_respects_rise_and_fall(
    controlled: Callable[[str], Controlled],
) -> None:
    a, b = controlled("a"), controlled("b")
    clock = ManualClock()
    config = ActiveHealth.model_validate(
        {"path": "/healthz", "interval": "100ms", "rise": 2, "fall": 2}
    )
    pool = Upstreams({"a": a.url, "b": b.url}, RoundRobin(), health_interval=config.interval)
    checks = [HealthCheck(m.ep, config, clock) for m in pool.members.values()]

    async def rounds(n: int) -> None:
        """`n` check intervals: every endpoint is probed once per interval."""
        for _ in range(n):
            clock.advance(config.interval)
            for check in checks:
                await check.check()

    def who(n: int) -> Counter[str]:
        return pool.who(n, clock.monotonic())

    async def scenario() -> None:
        # failing every other check never makes two failures in a row: b stays in
        b.set(health="flap")
        await rounds(8)
        assert who(20)["b"] == 10
        # failing for good: out after `fall` checks, not before (the last flapping
        # check passed: b's checks are counted from its first)
        b.set(health="fail")
        await rounds(config.fall - 1)
        assert who(4)["b"] == 2
        await rounds(1)
        assert who(4)["b"] == 0
        # flapping again never makes two successes in a row: b stays out
        b.set(health="flap")
        await rounds(8)
        assert who(20)["b"] == 0
        # passing again: back after `rise` checks at the most
        b.set(health="ok")
        await rounds(config.rise)
        assert who(4)["b"] > 0

    asyncio.run(scenario())
    assert b.server.checks >= 2 * 8 + config.fall + config.rise  # type: ignore[attr-defined]


def test_a_check_that_cannot_connect_counts_as_a_failure(
    controlled: Callable[[str], Controlled],
) -> None:
    a, b = controlled("a"), controlled("b")
    clock = ManualClock()
    config = ActiveHealth.model_validate({"type": "tcp", "interval": "1s", "fall": 1, "rise": 1})
    url = b.url
    pool = Upstreams({"a": a.url, "b": url}, RoundRobin(), health_interval=config.interval)
    check = HealthCheck(pool.members["b"].ep, config, clock)

    async def scenario() -> None:
        await check.check()
        assert pool.who(4, clock.monotonic()) == {"a": 2, "b": 2}
        b.stop()  # nothing listens there any more
        clock.advance(1.0)
        await check.check()
        assert pool.who(4, clock.monotonic()) == {"a": 4}

    asyncio.run(scenario())


# ----------------------------------------------------------------- passive health
def test_passive_ejection_expires_and_backs_off() -> None:
    clock = ManualClock()
    pool = Upstreams(
        {"a": "http://127.0.0.1:1", "b": "http://127.0.0.1:2"},
        RoundRobin(),
        passive={"failures": 3, "ejection": "30s"},
    )
    b = pool.members["b"]

    def fail(times: int) -> None:
        for _ in range(times):
            pool.balancer.failed(b, clock.monotonic())

    assert pool.who(4, clock.monotonic()) == {"a": 2, "b": 2}
    fail(2)
    assert pool.who(4, clock.monotonic()) == {"a": 2, "b": 2}  # not yet
    fail(1)  # three in a row: set aside for 30 s
    assert pool.who(4, clock.monotonic()) == {"a": 4}
    clock.advance(29.5)
    assert pool.who(4, clock.monotonic()) == {"a": 4}
    clock.advance(1.0)
    assert pool.who(4, clock.monotonic()) == {"a": 2, "b": 2}  # back after its time
    # failing again soon after: twice as long
    fail(3)
    clock.advance(59.5)
    assert pool.who(4, clock.monotonic()) == {"a": 4}
    clock.advance(1.0)
    assert pool.who(4, clock.monotonic()) == {"a": 2, "b": 2}
    # well for a long time (over 4x the base since the last ejection ended): 30 s again
    clock.advance(200.0)
    fail(3)
    clock.advance(30.5)
    assert pool.who(4, clock.monotonic()) == {"a": 2, "b": 2}
    assert b.ep.ejections == 3


# ------------------------------------------------------------------- peak EWMA
class Traffic:
    """Clients sending requests back to back through the balancer, as the proxy does:
    the endpoint's in-flight count while it is busy, its latency at the response head,
    and health checks every `check_interval` that measure the same latency. Latencies
    vary by ±25% around the backend's (seeded: the same run every time)."""

    def __init__(
        self,
        pool: Upstreams,
        clock: ManualClock,
        clients: int,
        latency: dict[str, float],
        check_interval: float,
    ) -> None:
        self.pool = pool
        self.clock = clock
        self.latency = latency  # seconds per request, by backend name: the test changes it
        self.check_interval = check_interval
        self.seen: list[tuple[float, str]] = []
        now = clock.monotonic()
        # (when, order, what): a client ready to send, a response due, a check due
        self.events: list[tuple[float, int, str, Any]] = []
        self.order = 0
        self.jitter = random.Random(11)
        for i in range(clients):
            self._at(now + i * 0.0001, "send", None)
        self._at(now, "check", None)

    def _at(self, when: float, kind: str, what: Any) -> None:
        self.order += 1
        heapq.heappush(self.events, (when, self.order, kind, what))

    def run(self, seconds: float) -> None:
        clock = self.clock
        until = clock.monotonic() + seconds
        while self.events[0][0] < until:
            when, _, kind, what = heapq.heappop(self.events)
            clock.advance(when - clock.monotonic())
            now = clock.monotonic()
            if kind == "send":
                member = self.pool.balancer.pick(None, now)
                assert member is not None
                name = self.pool.names[member.ep.label]
                member.ep.inflight += 1
                member.ep.requests += 1
                self._at(now + self._latency(name), "answer", (member, name, now))
            elif kind == "answer":
                member, name, sent = what
                member.ep.observe(now - sent, now)
                member.ep.release_slot()
                self.seen.append((now, name))
                self._at(now + 0.0005, "send", None)  # the client reads it, sends the next
            else:
                for name, member in self.pool.members.items():
                    member.ep.observe(self._latency(name), now)
                self._at(now + self.check_interval, "check", None)
        clock.advance(until - clock.monotonic())

    def _latency(self, name: str) -> float:
        return self.latency[name] * self.jitter.uniform(0.75, 1.25)

    def share(self, name: str, start: float, end: float) -> float:
        window = [n for t, n in self.seen if start <= t < end]
        return window.count(name) / max(1, len(window))


def test_peak_ewma_moves_away_from_a_slow_backend_and_back() -> None:
    clock = ManualClock()
    urls = {n: f"http://127.0.0.1:{port}" for n, port in zip("abc", (1, 2, 3), strict=True)}
    pool = Upstreams(urls, PeakEwma(random.Random(7).random), health_interval=0.3)
    latency = {"a": 0.002, "b": 0.002, "c": 0.002}
    traffic = Traffic(pool, clock, clients=4, latency=latency, check_interval=0.3)
    traffic.run(3.0)
    t0 = clock.monotonic()
    baseline = traffic.share("b", t0 - 2.0, t0)
    assert baseline > 0.15
    latency["b"] = 0.052  # b turns slow
    traffic.run(5.0)
    t1 = clock.monotonic()
    # within 5 seconds the slow backend has lost at least 90% of its share
    assert traffic.share("b", t1 - 2.0, t1) <= 0.1 * baseline
    latency["b"] = 0.002  # and recovers
    deadline = clock.monotonic() + 30.0
    while True:
        traffic.run(1.0)
        now = clock.monotonic()
        if traffic.share("b", now - 2.0, now) >= 0.5 * baseline:
            break
        assert now < deadline, "the recovered backend never got its share back"
