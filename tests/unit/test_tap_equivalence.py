"""The two request taps (`tap.RequestTap`, compiled build; `rows.RowTap`, pure build) fed
the same random requests through a `Recorder` each: the seconds they close, the open
second, the Prometheus counters and the 5xx details must be the same, and must match a
plain count of the requests by the wall-clock second they finished in (random routes,
methods, statuses, durations on and beside the histogram bounds, finish times crossing
second boundaries, stalls, scrapes at random points, a small cap)."""

from __future__ import annotations

import math
import random
from bisect import bisect_left
from collections import Counter
from typing import Any

import pytest

from bastion.clock import ManualClock
from bastion.http.request import Request
from bastion.observe.aggregate import DURATION_BUCKETS, UNION_BOUNDS
from bastion.observe.interval import MAX_ERRORS, STATS_BUCKETS, Interval
from bastion.observe.metrics import RequestMetrics
from bastion.observe.recorder import Recorder, Tap
from bastion.observe.rows import RowTap
from bastion.observe.tap import RequestTap

ROUTES = ["/api/", "/web/", "", "/static/"]
METHODS = ["GET", "POST", "HEAD"]
STATUSES = [200, 200, 200, 204, 304, 404, 404, 429, 500, 502, 503]
CACHES = ["", "", "HIT", "MISS"]
REFUSALS = ["", "", "", "rate_limits", "auth"]
PATHS = ["/a", "/b", "/c/d", "/missing"]
CLIENTS = ["192.0.2.1", "192.0.2.2", "2001:db8::1"]
AGENTS = [b"", b"curl/8.5.0", b"Mozilla/5.0 \xe9t\xe9"]  # latin-1 past ASCII
REFERRERS = [b"", b"https://example.org/"]
CONSUMERS = ["", "", "alice", "bob"]
TICK = 1 / 1024  # seconds, exact in a float at the wall clock's magnitude
# durations on every bound, either side of it
EDGES = [v for b in UNION_BOUNDS for v in (math.nextafter(b, 0.0), b, math.nextafter(b, 1e9))]


class JitteryClock(ManualClock):
    """A wall clock read a little late, by up to half a microsecond (as `time.time()`
    read after `time.monotonic()`): never past a TICK, so the second of every request
    stays plain; the same at the same time for both recorders."""

    def time(self) -> float:
        return self.now + (int(self.mono * 1024) * 2_654_435_761 % 1000) * 5e-10


def copy(value: str) -> str:
    """An equal string that is another object (the taps compare some by identity)."""
    return "".join(list(value))


def duration(rng: random.Random) -> float:
    pick = rng.random()
    if pick < 0.4:
        return rng.choice(EDGES)
    if pick < 0.5:
        return rng.randrange(100) / 2000.0
    if pick < 0.9:
        return rng.uniform(0.0, 0.06)
    return rng.uniform(0.0, 90.0)


def request(rng: random.Random, now: float, seq: int, failing: bool) -> Request:
    req = Request()
    req.route_name = rng.choice(ROUTES)
    if rng.random() < 0.2:
        req.route_name = copy(req.route_name)
    req.method = rng.choice(METHODS)
    if rng.random() < 0.1:
        req.method = copy(req.method)
    req.status = rng.choice([500, 502, 503, 200] if failing else STATUSES)
    req.cache = rng.choice(CACHES)
    req.refused_by = rng.choice(REFUSALS)
    req.consumer = rng.choice(CONSUMERS)
    req.raw_path = rng.choice(PATHS)
    req.client_ip = rng.choice(CLIENTS)
    req.user_agent = rng.choice(AGENTS)
    req.referer = rng.choice(REFERRERS)
    req.request_id = f"{seq:032x}"
    req.upstream = rng.choice(["", "10.0.0.1:80"])
    req.upstream_time = duration(rng) if rng.random() < 0.6 else -1.0
    req.body_bytes = rng.randrange(1000)
    req.bytes_out = rng.randrange(10_000)
    req.start = now - duration(rng)
    req.ended = now
    return req


def rounded(value: Any) -> Any:
    """`value` with its floats rounded (the taps add the same sums in other orders)."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def shown(interval: Interval) -> dict[str, Any]:
    data = interval.to_json()
    for figures in data["routes"].values():
        figures["latency_sum"] = round(figures["latency_sum"], 6)
        figures["upstream_sum"] = round(figures["upstream_sum"], 6)
    data["top"] = {name: counts for name, counts in data["top"].items() if counts}
    return data


class Side:
    """A recorder with one kind of tap, its sink's seconds and its counters."""

    def __init__(self, kind: type, clock: JitteryClock, cap: int, detailed: bool, sink: bool):
        self.tap: Tap = kind(cap=cap, detailed=detailed)
        self.recorder = Recorder(self.tap, clock)
        self.recorder.metrics = RequestMetrics(consumers=10)
        self.seen: list[Interval] = []
        if sink:
            self.recorder.add_sink(self.seen.append)

    def result(self) -> dict[str, Any]:
        assert self.recorder.metrics is not None
        return {
            "seen": [shown(i) for i in self.seen],
            "current": shown(self.recorder.current),
            # the snapshot's lists in a fixed order (the routes come in the order first seen)
            "metrics": {
                name: sorted(map(repr, rounded(value))) if isinstance(value, list) else value
                for name, value in self.recorder.metrics.snapshot().items()
            },
            "by_consumer": dict(self.recorder.metrics.by_consumer),
        }


def run(seed: int) -> None:
    rng = random.Random(seed)
    # times in steps of TICK: the wall clock and the loop's agree exactly (the expected
    # second of a request is then that of its finish on either clock)
    clock = JitteryClock(1_800_000_000.0 + rng.randrange(1024) * TICK)
    # a busy second of failures: more 5xx answers in a second than an Interval keeps
    failing = rng.random() < 0.25
    cap = rng.choice([50, 10_000] if failing else [3, 50, 10_000])
    detailed = failing or rng.random() < 0.8
    sink = failing or rng.random() < 0.85
    ticks = [0, 0, 1, 3, 30] if failing else [0, 1, 10, 100, 300, 1023]
    sides = [Side(kind, clock, cap, detailed, sink) for kind in (RequestTap, RowTap)]
    # what each wall-clock second should hold: (second, route) -> requests, latencies
    expected: Counter[tuple[int, str]] = Counter()
    latencies: dict[tuple[int, str], list[int]] = {}
    errors: dict[int, list[str]] = {}
    tops: dict[int, dict[str, Counter[str]]] = {}
    durations: dict[str, list[int]] = {}  # route -> Prometheus buckets
    for seq in range(rng.randrange(1, 300)):
        step = rng.random() * (10.0 if failing else 1.0)
        if step < 0.05:
            clock.advance(rng.choice([1.0, 2.0, 3.5, 30.0]))  # a stall
        elif step < 0.15:  # onto the next second's first instant
            clock.advance(math.floor(clock.now) + 1 - clock.now)
            assert clock.now == math.floor(clock.now)
        else:
            clock.advance(rng.choice(ticks) * TICK)
        req = request(rng, clock.monotonic(), seq, failing)
        second = int(clock.now)
        name = req.route_name or "none"
        expected[(second, name)] += 1
        buckets = latencies.setdefault((second, name), [0] * (len(STATS_BUCKETS) + 1))
        buckets[bisect_left(STATS_BUCKETS, req.ended - req.start)] += 1
        if req.status >= 500:
            errors.setdefault(second, []).append(req.request_id)
        top = tops.setdefault(second, {})
        for dimension, value in (
            ("paths", req.raw_path),
            ("not_found", req.raw_path if req.status == 404 else None),
            ("clients", req.client_ip),
            ("agents", req.user_agent.decode("latin-1")),
            ("referrers", req.referer.decode("latin-1")),
        ):
            if value is not None:
                top.setdefault(dimension, Counter())[value] += 1
        prometheus = durations.setdefault(name, [0] * (len(DURATION_BUCKETS) + 1))
        prometheus[bisect_left(DURATION_BUCKETS, req.ended - req.start)] += 1
        for side in sides:
            side.tap.record(req)
        if rng.random() < (0.01 if failing else 0.1):
            if rng.random() < 0.5:
                clock.advance(rng.randrange(10) * TICK)
            for side in sides:  # a scrape, or the timer (on time or late)
                side.recorder.flush()
    clock.advance(rng.choice([0.0, 0.5, 1.002, 5.0]))
    for side in sides:
        side.recorder.flush()
    counting, rows = (side.result() for side in sides)
    assert counting == rows
    # against the plain count
    got: Counter[tuple[int, str]] = Counter()
    got_latency: dict[tuple[int, str], list[int]] = {}
    for interval in [*sides[0].seen, sides[0].recorder.current]:
        for name, figures in interval.routes.items():
            got[(interval.start, name)] += figures.requests
            got_latency[(interval.start, name)] = figures.latency
        if detailed and sink:
            want = errors.get(interval.start, [])[-MAX_ERRORS:]
            assert [e["request_id"] for e in interval.errors] == want
            assert {k: v for k, v in interval.top.items() if v} == tops.get(interval.start, {})
    metrics = sides[0].recorder.metrics
    assert metrics is not None
    assert {route: c.durations for route, c in metrics.routes.items()} == durations
    if sink:
        assert got == expected
        assert got_latency == latencies
        assert all(len(i.errors) <= MAX_ERRORS for i in sides[0].seen)


@pytest.mark.parametrize("block", range(4))
def test_both_taps_count_the_same_random_traffic(block: int) -> None:
    for seed in range(block * 12, (block + 1) * 12):
        run(seed)
