"""The traffic recorder: what a finished request counts in the tap, what a batch it takes
puts in a second's Interval, how the tap and the recorder split requests at wall-clock
second boundaries (an injected clock), and the capped consumer metric."""

from __future__ import annotations

import asyncio
import bisect
import json
import math
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bastion.clock import ManualClock
from bastion.http.request import Request
from bastion.observe.aggregate import UNION_BOUNDS, Batch
from bastion.observe.exposition import exposition
from bastion.observe.interval import BUCKET_COUNT, MAX_ERRORS, STATS_BUCKETS, Interval
from bastion.observe.metrics import OTHER_CONSUMERS, RequestMetrics, merge
from bastion.observe.recorder import Recorder, Tap
from bastion.observe.rows import RowTap
from bastion.observe.tap import DEFAULT_CAP, Histogram, RequestTap

START = 1000.0  # the loop's time requests start at in these tests

# Each build has its own tap (`recorder.request_tap`): every test here runs with both
TAPS: list[Callable[..., Tap]] = [RequestTap, RowTap]
_tap_kind: list[Callable[..., Tap]] = [RequestTap]


@pytest.fixture(autouse=True, params=TAPS, ids=["counting", "rows"])
def tap_kind(request: pytest.FixtureRequest) -> Iterator[None]:
    _tap_kind[0] = request.param
    yield
    _tap_kind[0] = RequestTap


def new_tap(cap: int = DEFAULT_CAP, detailed: bool = True) -> Tap:
    return _tap_kind[0](cap=cap, detailed=detailed)


def finished(
    route: str = "/api/",
    status: int = 200,
    *,
    method: str = "GET",
    path: str = "/api/x",
    cache: str = "",
    upstream: float = -1.0,
    body: int = 0,
    out: int = 100,
    refused: str = "",
    consumer: str = "",
    client: str = "192.0.2.1",
    headers: list[tuple[bytes, bytes, bytes]] | None = None,
    start: float = START,
    endpoint: str = "",
    request_id: str = "",
) -> Request:
    req = Request()
    req.route_name = route
    req.method = method
    req.status = status
    req.raw_path = path
    req.cache = cache
    req.upstream_time = upstream
    req.body_bytes = body
    req.bytes_out = out
    req.refused_by = refused
    req.consumer = consumer
    req.client_ip = client
    req.headers = headers or []
    for lname, _, value in req.headers:  # as the parsers keep them (http1/head.py, http2/)
        if lname == b"user-agent":
            req.user_agent = value
        elif lname == b"referer":
            req.referer = value
    req.start = start
    req.upstream = endpoint
    req.request_id = request_id
    return req


def finish(tap: Tap, req: Request, now: float) -> None:
    """What the finish hook does with a request that finished at `now`."""
    req.ended = now
    tap.record(req)


def taken(tap: Tap, wall_offset: float = 0.0) -> Batch:
    """The tap's one batch (no recorder: no second boundary)."""
    [(_, batch)] = tap.take(wall_offset)
    return batch


def interval_of(*finished_at: tuple[Request, float], wall_offset: float = 0.0) -> Interval:
    tap = new_tap()
    for req, now in finished_at:
        finish(tap, req, now)
    interval = Interval(1_800_000_000)
    taken(tap, wall_offset).add_to(interval)
    return interval


def bucket(seconds: float) -> int:
    return next((i for i, bound in enumerate(STATS_BUCKETS) if seconds <= bound), BUCKET_COUNT - 1)


def test_the_tap_counts_until_taken_and_starts_afresh() -> None:
    tap = new_tap()
    finish(tap, finished(), START + 0.01)
    finish(tap, finished(status=404), START + 0.02)
    assert len(tap) == 2
    assert taken(tap).requests == 2
    assert len(tap) == 0 and taken(tap).requests == 0 and taken(tap).routes == {}


def test_outcomes_per_route_status_class_code_method_cache_and_refusal() -> None:
    got = interval_of(
        (finished(cache="MISS"), START + 0.01),
        (finished(status=204, cache="HIT"), START + 0.01),
        (finished(method="POST", status=201), START + 0.01),
        (finished(status=429, refused="rate_limits", upstream=-1.0), START + 0.01),
        (finished(route="/web/", status=503), START + 0.01),
        (finished(route="", status=404, path="/missing"), START + 0.01),
    )
    api = got.routes["/api/"]
    assert api.requests == 4
    assert api.status == {"2xx": 3, "4xx": 1}
    assert api.codes == {200: 1, 204: 1, 201: 1, 429: 1}
    assert api.methods == {"GET": 3, "POST": 1}
    assert api.cache == {"MISS": 1, "HIT": 1}  # no entry for requests without a cache
    assert api.refusals == {"rate_limits": 1}
    assert got.routes["/web/"].status == {"5xx": 1}
    assert got.routes["none"].codes == {404: 1}  # no route answered
    assert got.requests == 6


def test_bytes_and_latency_buckets_with_upstream_only_for_proxied_requests() -> None:
    got = interval_of(
        (finished(upstream=0.004, body=10, out=200), START + 0.02),  # 20 ms, 4 ms upstream
        (finished(upstream=0.25, body=5, out=300), START + 0.4),  # 400 ms, 250 ms
        (finished(status=403, refused="auth"), START + 0.001),  # refused: not proxied
    )
    api = got.routes["/api/"]
    assert api.bytes_in == 15 and api.bytes_out == 600
    assert api.latency[bucket(0.02)] == 1
    assert api.latency[bucket(0.4)] == 1
    assert api.latency[bucket(0.001)] == 1
    assert sum(api.latency) == 3
    assert abs(api.latency_sum - 0.421) < 1e-9
    assert api.upstream[bucket(0.004)] == 1 and api.upstream[bucket(0.25)] == 1
    assert sum(api.upstream) == 2  # the refused request never went upstream
    assert abs(api.upstream_sum - 0.254) < 1e-9


def test_sums_are_kept_apart_when_routes_interleave() -> None:
    got = interval_of(
        (finished(route="/b/", body=1, out=10, upstream=0.1), START + 0.2),
        (finished(route="/a/", body=2, out=20), START + 0.3),
        (finished(route="/b/", body=4, out=40), START + 0.5),
        (finished(route="/a/", body=8, out=80, upstream=0.2), START + 0.7),
    )
    a, b = got.routes["/a/"], got.routes["/b/"]
    assert (a.bytes_in, a.bytes_out, b.bytes_in, b.bytes_out) == (10, 100, 5, 50)
    assert abs(a.latency_sum - 1.0) < 1e-9 and abs(b.latency_sum - 0.7) < 1e-9
    assert abs(a.upstream_sum - 0.2) < 1e-9 and abs(b.upstream_sum - 0.1) < 1e-9
    assert sum(a.upstream) == 1 and sum(b.upstream) == 1


def test_outcomes_are_exact_when_they_alternate_within_and_across_routes() -> None:
    # the tap counts runs of equal outcomes (route, then method, status, cache,
    # refusal): every change of any of them must end the run it interrupts
    seq = [
        ("/a/", "GET", 200, ""),
        ("/a/", "GET", 200, ""),
        ("/b/", "GET", 200, ""),
        ("/a/", "GET", 200, ""),
        ("/a/", "POST", 200, ""),
        ("/a/", "GET", 200, ""),
        ("/a/", "GET", 200, "HIT"),
        ("/a/", "GET", 429, ""),
        ("/a/", "GET", 200, ""),
        ("", "GET", 404, ""),
        ("/a/", "GET", 200, ""),
    ]
    got = interval_of(
        *[
            (finished(route=route, method=method, status=status, cache=cache), START + 0.01)
            for route, method, status, cache in seq
        ]
    )
    a = got.routes["/a/"]
    assert a.requests == 9
    assert a.methods == {"GET": 8, "POST": 1}
    assert a.codes == {200: 8, 429: 1}
    assert a.cache == {"HIT": 1}
    assert got.routes["/b/"].requests == 1 and got.routes["none"].codes == {404: 1}
    # equal strings that are distinct objects are the same outcome
    twins = interval_of(
        (finished(method="GET"), START + 0.01), (finished(method="".join("GET")), START + 0.02)
    )
    assert twins.routes["/api/"].methods == {"GET": 2}


def test_every_bound_and_its_neighbours_land_in_the_bucket_prometheus_le_says() -> None:
    # the tap finds buckets from a table under 50 ms and by a search above: check both
    # against a plain bisection, on each bound of the union and just either side of it
    values = [0.0, 5e-324, 0.049999, 0.05, 0.0500001, 1e9, math.inf]
    for bound in UNION_BOUNDS:
        values += [math.nextafter(bound, 0.0), bound, math.nextafter(bound, math.inf)]
    values += [step / 2000.0 + 1e-12 for step in range(100)]
    for order in (values, values[::-1]):  # the search starts from the last bucket
        histogram = Histogram()
        for value in order:
            histogram.add(value)
        expected = Counter(bisect.bisect_left(UNION_BOUNDS, v) for v in order)
        assert histogram.buckets() == dict(expected)


def test_latency_buckets_hold_their_upper_bound_and_the_extremes() -> None:
    # Prometheus' `le`: a value equal to a bound is in that bound's bucket; the tap's
    # bucket search starts where the last value fell, so jump up and down
    seconds = [0.001, 0.0005, 120.0, 0.001, 0.0, 0.0010001, 60.0]
    got = interval_of(*[(finished(start=START), START + s) for s in seconds])
    api = got.routes["/api/"]
    expected = [0] * BUCKET_COUNT
    for s in seconds:
        expected[bucket(s)] += 1
    assert api.latency == expected
    assert api.latency[BUCKET_COUNT - 1] == 1  # 120 s: the last bucket (+Inf)


def test_top_dimensions_paths_404s_clients_agents_and_referrers() -> None:
    firefox = [
        (b"host", b"Host", b"example.com"),
        (b"user-agent", b"User-Agent", b"Mozilla/5.0 Firefox/120.0"),
        (b"referer", b"Referer", b"https://example.org/"),
    ]
    curl = [(b"user-agent", b"user-agent", b"curl/8.5.0")]
    got = interval_of(
        (finished(path="/a", headers=firefox, client="192.0.2.1"), START + 0.01),
        (finished(path="/a", headers=firefox, client="192.0.2.1"), START + 0.01),
        (finished(path="/b", headers=curl, client="192.0.2.2"), START + 0.01),
        (finished(route="", status=404, path="/nope", client="2001:db8::1"), START + 0.01),
        (finished(path="/a", client="192.0.2.1"), START + 0.01),  # a value comes back
    )
    assert got.top["paths"] == {"/a": 3, "/b": 1, "/nope": 1}
    assert got.top["not_found"] == {"/nope": 1}
    assert got.top["clients"] == {"192.0.2.1": 3, "192.0.2.2": 1, "2001:db8::1": 1}
    assert got.top["agents"] == {"Mozilla/5.0 Firefox/120.0": 2, "curl/8.5.0": 1, "": 2}
    assert got.top["referrers"] == {"https://example.org/": 2, "": 3}


def test_consumers_with_their_429s() -> None:
    got = interval_of(
        (finished(consumer="alice"), START + 0.01),
        (finished(consumer="alice", status=429, refused="rate_limits"), START + 0.01),
        (finished(consumer="bob"), START + 0.01),
        (finished(status=401, refused="auth"), START + 0.01),  # no consumer: not counted
    )
    assert got.consumers == {"alice": [2, 1], "bob": [1, 0]}


def test_5xx_answers_are_kept_with_their_request_ids_and_capped() -> None:
    many = [
        (
            finished(status=502, request_id=f"id{i}", endpoint="10.0.0.1:80", path=f"/p{i}"),
            START + 0.01 * i,
        )
        for i in range(MAX_ERRORS + 5)
    ]
    got = interval_of(*many, (finished(status=200), START + 0.5), wall_offset=1_800_000_000.0)
    assert len(got.errors) == MAX_ERRORS
    last = got.errors[-1]
    assert last == {
        "time": 1_800_000_000.0 + START + 0.01 * (MAX_ERRORS + 4),
        "route": "/api/",
        "method": "GET",
        "path": f"/p{MAX_ERRORS + 4}",
        "status": 502,
        "request_id": f"id{MAX_ERRORS + 4}",
        "upstream": "10.0.0.1:80",
    }
    assert got.errors[0]["request_id"] == "id5"  # the latest ones are kept
    assert json.loads(json.dumps(got.to_json()))["errors"] == got.errors


# ----------------------------------------------------------------- the recorder


def recorder_on(clock: ManualClock) -> tuple[Recorder, Tap, list[Interval]]:
    tap = new_tap()
    recorder = Recorder(tap, clock)
    seen: list[Interval] = []
    recorder.add_sink(seen.append)
    return recorder, tap, seen


def test_each_request_lands_in_the_wall_clock_second_it_finished_in() -> None:
    clock = ManualClock(1_800_000_000.25)
    recorder, tap, seen = recorder_on(clock)
    finish(tap, finished(start=clock.monotonic()), clock.monotonic())  # in :00
    clock.advance(0.5)
    finish(tap, finished(start=clock.monotonic()), clock.monotonic())  # :00.75
    clock.advance(0.5)  # :01.25: the second :00 ended, the timer has not run yet
    finish(tap, finished(status=500, start=clock.monotonic()), clock.monotonic())  # in :01
    recorder.flush()
    assert [i.start for i in seen] == [1_800_000_000]
    assert seen[0].requests == 2 and "5xx" not in seen[0].routes["/api/"].status
    assert recorder.current.start == 1_800_000_001
    assert recorder.current.requests == 1  # counted, its second still open
    assert recorder.current.errors[0]["time"] == 1_800_000_001.25
    clock.advance(1.0)
    recorder.flush()
    assert [i.start for i in seen] == [1_800_000_000, 1_800_000_001]
    assert seen[1].requests == 1


def test_a_request_past_the_boundary_opens_its_own_second_before_the_timer_runs() -> None:
    clock = ManualClock(1_800_000_000.5)
    recorder, tap, seen = recorder_on(clock)
    finish(tap, finished(start=clock.monotonic()), clock.monotonic())  # in :00
    clock.advance(0.5)  # exactly :01.000: the first instant of the next second
    finish(tap, finished(status=404, start=clock.monotonic()), clock.monotonic())
    clock.advance(2.7)  # :03.7, the timer stalled since :00
    finish(tap, finished(status=500, start=clock.monotonic()), clock.monotonic())
    clock.advance(0.1)
    recorder.flush()
    assert [(i.start, i.requests) for i in seen] == [(1_800_000_000, 1), (1_800_000_001, 1)]
    assert seen[1].routes["/api/"].codes == {404: 1}
    assert recorder.current.start == 1_800_000_003
    assert recorder.current.routes["/api/"].codes == {500: 1}
    clock.advance(0.3)  # :04.1
    finish(tap, finished(start=clock.monotonic()), clock.monotonic())
    recorder.flush()
    assert [i.start for i in seen][2:] == [1_800_000_003]
    assert recorder.current.start == 1_800_000_004 and recorder.current.requests == 1


def test_a_route_counted_again_after_a_take_keeps_each_second_apart() -> None:
    # the tap reuses a route's emptied tally after a take: a second ending before the
    # next take must not share it with the one after
    clock = ManualClock(1_800_000_000.1)
    recorder, tap, seen = recorder_on(clock)
    finish(tap, finished(out=1, start=clock.monotonic()), clock.monotonic())
    clock.advance(0.2)
    recorder.flush()  # a scrape: taken, the second still open
    finish(tap, finished(out=10, start=clock.monotonic()), clock.monotonic())  # :00.3
    clock.advance(0.8)  # :01.1
    finish(tap, finished(out=100, start=clock.monotonic()), clock.monotonic())
    finish(tap, finished(out=1000, start=clock.monotonic()), clock.monotonic())
    recorder.flush()
    assert [(i.start, i.requests, i.routes["/api/"].bytes_out) for i in seen] == [
        (1_800_000_000, 2, 11)
    ]
    assert recorder.current.routes["/api/"].bytes_out == 1100
    assert recorder.current.requests == 2


def test_a_scrape_flush_counts_everything_without_closing_the_second() -> None:
    clock = ManualClock(1_800_000_000.1)
    recorder, tap, seen = recorder_on(clock)
    metrics = recorder.metrics = RequestMetrics()
    for _ in range(3):
        finish(tap, finished(start=clock.monotonic()), clock.monotonic())
    clock.advance(0.2)
    recorder.flush()  # what a scrape does
    assert seen == []
    requests = metrics.routes["/api/"].requests
    assert requests == {("GET", 200, ""): 3}
    finish(tap, finished(start=clock.monotonic()), clock.monotonic())
    clock.advance(0.8)
    recorder.flush()
    assert [i.requests for i in seen] == [4]  # the second holds both batches
    assert metrics.routes["/api/"].requests == {("GET", 200, ""): 4}


def test_idle_seconds_are_closed_empty_and_a_stall_closes_only_the_last() -> None:
    clock = ManualClock(1_800_000_000.5)
    recorder, tap, seen = recorder_on(clock)
    recorder.in_flight = lambda: 7
    clock.advance(1.0)
    recorder.flush()
    assert [(i.start, i.requests, i.in_flight) for i in seen] == [(1_800_000_000, 0, 7)]
    finish(tap, finished(start=clock.monotonic()), clock.monotonic())  # in :01
    clock.advance(30.0)  # the loop was stuck 30 s
    recorder.flush()
    assert [(i.start, i.requests) for i in seen[1:]] == [(1_800_000_001, 1), (1_800_000_030, 0)]
    assert recorder.current.start == 1_800_000_031


def test_without_sinks_only_the_counters_are_fed() -> None:
    clock = ManualClock(1_800_000_000.5)
    tap = new_tap(detailed=False)  # what the metrics alone need
    recorder = Recorder(tap, clock)
    metrics = recorder.metrics = RequestMetrics()
    finish(tap, finished(status=503, start=clock.monotonic()), clock.monotonic())
    clock.advance(2.0)
    recorder.flush()
    assert metrics.routes["/api/"].requests == {("GET", 503, ""): 1}
    assert recorder.current.requests == 0 and recorder.last is None  # no Interval built


def test_a_sink_that_fails_does_not_stop_the_others() -> None:
    clock = ManualClock(1_800_000_000.5)
    recorder, _, seen = recorder_on(clock)

    def broken(interval: Interval) -> None:
        raise RuntimeError("disk full")

    recorder.sinks.insert(0, broken)
    clock.advance(1.0)
    recorder.flush()
    assert len(seen) == 1


def test_a_full_tap_is_counted_at_the_loops_next_turn() -> None:
    loop = asyncio.new_event_loop()
    try:
        clock = ManualClock(1_800_000_000.5)
        tap = new_tap(cap=3)
        recorder = Recorder(tap, clock)
        recorder.add_sink(lambda interval: None)
        recorder.start(loop)
        for _ in range(5):
            finish(tap, finished(start=clock.monotonic()), clock.monotonic())
        assert len(tap) == 5  # never in the middle of a request
        loop.run_until_complete(asyncio.sleep(0))
        assert len(tap) == 0 and recorder.current.requests == 5
        recorder.close()
    finally:
        loop.close()


# -------------------------------------------------------- the consumer metric


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def consumer_counts(text: bytes) -> dict[tuple[str, str], float]:
    return {
        (dict(labels)["consumer"], dict(labels)["status"]): value
        for (name, labels), value in samples(text).items()
        if name == "bastion_consumer_requests_total"
    }


def counted(metrics: RequestMetrics, *reqs: Request) -> None:
    tap = new_tap()
    for req in reqs:
        finish(tap, req, START + 0.01)
    metrics.add(taken(tap))


def test_consumers_are_capped_to_the_busiest_across_workers() -> None:
    one, two = RequestMetrics(consumers=2), RequestMetrics(consumers=2)
    counted(one, *[finished(consumer="alice") for _ in range(3)])
    counted(one, finished(consumer="carol"), finished(consumer="dave", status=429))
    counted(two, *[finished(consumer="bob") for _ in range(2)])
    counted(two, finished(consumer="carol"), finished(consumer="carol", status=429))
    snapshots = [json.loads(json.dumps(m.snapshot())) for m in (one, two)]
    got = consumer_counts(exposition(merge(snapshots, consumers=2)))
    # alice 3 and carol 3 (one on each worker) are the top 2; bob and dave are "_other"
    assert got == {
        ("alice", "2xx"): 3,
        ("carol", "2xx"): 2,
        ("carol", "4xx"): 1,
        (OTHER_CONSUMERS, "2xx"): 2,
        (OTHER_CONSUMERS, "4xx"): 1,
    }


def test_no_consumer_metric_unless_asked_for() -> None:
    metrics = RequestMetrics()
    counted(metrics, finished(consumer="alice"))
    assert consumer_counts(exposition(merge([metrics.snapshot()]))) == {}
    assert metrics.by_consumer == {}  # not even counted


def test_a_busy_batch_counts_every_agent_exactly() -> None:
    curl = [(b"user-agent", b"User-Agent", b"curl/8.5.0")]
    firefox = [(b"user-agent", b"User-Agent", b"Firefox/120.0")]
    n = 601
    # two curl requests for each Firefox one, and one without a User-Agent
    reqs = [(finished(headers=firefox if i % 3 == 0 else curl), START + 0.01) for i in range(600)]
    got = interval_of(*reqs, (finished(), START + 0.01))
    assert got.top["agents"] == {"Firefox/120.0": 200, "curl/8.5.0": 400, "": 1}
    assert got.top["paths"] == {"/api/x": n}
