"""The statistics file through its writer and its reader: real SQLite files fed real
Intervals (what the recorder hands the writer once a second), time from a ManualClock."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from bastion.clock import ManualClock
from bastion.observe.stats import StatsStore, StatsWriter
from bastion.observe.stats.percentiles import percentile
from bastion.observe.stats.schema import STATS_FILE, open_writer
from statskit import buckets, figures, interval

T0 = 1_800_000_000  # a whole hour (and minute)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


def write(data_dir: Path, clock: ManualClock, intervals: list, **kwargs: object) -> None:
    writer = StatsWriter(data_dir, clock, **kwargs)  # type: ignore[arg-type]
    try:
        for item in intervals:
            writer.add(item)
        assert writer.flush()
    finally:
        writer.close()


def rows(data_dir: Path, table: str) -> int:
    with sqlite3.connect(data_dir / STATS_FILE) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_summary_totals_series_routes_and_errors(tmp_path: Path, clock: ManualClock) -> None:
    error = {
        "time": T0 + 30.25,
        "route": "api",
        "method": "POST",
        "path": "/api/orders",
        "status": 502,
        "request_id": "a1b2c3",
        "upstream": "10.0.0.9:8000",
    }
    batch = [
        interval(
            T0 + i,
            {
                "api": figures(
                    10,
                    status={200: 6, 401: 1, 403: 1, 429: 1, 502: 1},
                    cache={"HIT": 2, "STALE": 1, "MISS": 3, "BYPASS": 4},
                    refusals={"auth": 2, "rate_limits": 1},
                    bytes_in=100,
                    bytes_out=2000,
                ),
                "web": figures(5, status={200: 4, 404: 1}, latency=0.05, upstream=None),
            },
            errors=[error] if i == 30 else [],
        )
        for i in range(120)
    ]
    write(tmp_path, clock, batch)
    clock.advance(120)
    summary = StatsStore(tmp_path, clock).summary("1h")

    assert summary["window"] == "1h" and summary["step"] == 60
    assert summary["until"] == T0 + 120
    totals = summary["totals"]
    assert totals["requests"] == 1800
    assert totals["status"] == {"1xx": 0, "2xx": 1200, "3xx": 0, "4xx": 480, "5xx": 120}
    assert totals["rate_4xx"] == pytest.approx(480 / 1800, abs=1e-6)
    assert totals["rate_5xx"] == pytest.approx(120 / 1800, abs=1e-6)
    assert totals["refusals"] == {"401": 120, "403": 120, "429": 120}
    assert totals["cache"] == {"hits": 360, "lookups": 720, "ratio": 0.5}
    assert (totals["bytes_in"], totals["bytes_out"]) == (12000, 240000)
    # 2/3 of the requests took 4 ms (bucket 3..5 ms), 1/3 took 50 ms (bucket 30..50 ms)
    assert 0.003 < totals["latency"]["p50"] <= 0.005
    assert 0.03 < totals["latency"]["p95"] <= 0.05
    # the api route's upstream time: 3 ms of its 4 ms, the web route is not proxied
    share = 1200 * 0.003 / (1200 * 0.004 + 600 * 0.05)
    assert totals["upstream_share"] == pytest.approx(share, abs=1e-6)
    assert totals["rps"] == pytest.approx(1800 / (summary["until"] - summary["since"]))

    series = summary["series"]
    assert len(series["t"]) == 60 and series["t"][-1] == T0 + 120
    assert series["t"][-3:] == [T0, T0 + 60, T0 + 120]
    assert series["requests"][-3:] == [900, 900, 0]
    assert series["status"]["5xx"][-3:] == [60, 60, 0]
    assert series["refusals"]["429"][-3:] == [60, 60, 0]
    assert series["p95"][-1] is None and series["p95"][-2] is not None
    assert sum(series["bytes_out"]) == 240000

    assert summary["routes"] == [
        {"route": "api", "requests": 1200, "error_rate": 0.1, "p95": pytest.approx(0.0049)},
        {"route": "web", "requests": 600, "error_rate": 0.0, "p95": pytest.approx(0.049)},
    ]
    assert summary["recent_errors"] == [error]


def test_restart_keeps_the_figures(tmp_path: Path, clock: ManualClock) -> None:
    write(tmp_path, clock, [interval(T0 + i) for i in range(10)])
    store = StatsStore(tmp_path, clock)
    clock.advance(10)
    assert store.summary("1h")["totals"]["requests"] == 100
    # the gateway restarts: a new writer on the same data dir adds to what is there
    write(tmp_path, clock, [interval(T0 + 10 + i) for i in range(5)])
    clock.advance(5)
    assert store.summary("1h")["totals"]["requests"] == 150
    assert store.summary("5m")["totals"]["requests"] == 150
    assert store.summary("30d")["totals"]["requests"] == 150


def test_workers_writing_the_same_file_add_up(tmp_path: Path, clock: ManualClock) -> None:
    """Several workers each write their own share of the same seconds: every row holds
    the instance's totals."""
    writers = [StatsWriter(tmp_path, clock) for _ in range(3)]
    try:

        def feed(writer: StatsWriter, share: int) -> None:
            for i in range(60):
                writer.add(
                    interval(
                        T0 + i,
                        {"api": figures(share)},
                        paths={"/a": share},
                        consumers={"alice": [share, 1]},
                    )
                )

        threads = [
            threading.Thread(target=feed, args=(writer, n + 1)) for n, writer in enumerate(writers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert all(writer.flush() for writer in writers)
    finally:
        for writer in writers:
            writer.close()
    clock.advance(60)
    store = StatsStore(tmp_path, clock)
    summary = store.summary("1h")
    assert summary["totals"]["requests"] == 60 * (1 + 2 + 3)
    assert summary["top"]["paths"] == [{"key": "/a", "requests": 360}]
    assert summary["top"]["consumers"] == [{"key": "alice", "requests": 360, "limited": 180}]
    assert store.live(now=T0 + 30.9)["requests"] == 6
    assert store.period(T0, T0 + 60)["requests"] == 360


def test_live_is_the_last_complete_second(tmp_path: Path, clock: ManualClock) -> None:
    write(
        tmp_path,
        clock,
        [
            interval(T0 + i, {"api": figures(i + 1, cache={"HIT": 1}, status={200: i, 429: 1})})
            for i in range(10)
        ],
    )
    store = StatsStore(tmp_path, clock)
    live = store.live(now=T0 + 10.6)  # second T0+9 ended 1.6 s ago
    assert live["time"] == T0 + 9
    assert (live["requests"], live["rps"]) == (10, 10.0)
    assert live["status"]["2xx"] == 9
    # the live refusals chart and the upstream share tile move each second too
    assert live["refusals"] == {"401": 0, "403": 0, "429": 1}
    assert 0 < live["upstream_share"] <= 1
    assert (live["cache_hits"], live["cache_lookups"]) == (1, 1)
    assert live["p95"] is not None and live["upstream_p95"] is not None
    three = store.live(seconds=3, now=T0 + 10.6)
    assert (three["requests"], three["rps"]) == (8 + 9 + 10, 9.0)
    # a second that has only just ended is not reported yet
    assert store.live(now=T0 + 10.2)["time"] == T0 + 8


def test_period_for_one_route_and_from_the_finest_table(tmp_path: Path, clock: ManualClock) -> None:
    two_routes = {"api": figures(3, status={500: 1, 200: 2}), "web": figures(1)}
    old = [interval(T0 - 3 * 3600 + i, two_routes) for i in range(60)]
    recent = [interval(T0 - 120 + i, two_routes) for i in range(60)]
    write(tmp_path, clock, old + recent)
    store = StatsStore(tmp_path, clock)
    last_5m = store.period(T0 - 300, T0, route="api")
    assert last_5m["requests"] == 180
    assert last_5m["status"]["5xx"] == 60
    assert last_5m["rate_5xx"] == pytest.approx(1 / 3, abs=1e-6)
    assert store.period(T0 - 300, T0)["requests"] == 240
    assert store.period(T0 - 4 * 3600, T0)["requests"] == 480  # from the minutes
    assert store.period(T0 - 4 * 3600, T0 - 3600, route="web")["requests"] == 60
    assert store.period(T0 - 60, T0, route="nope")["requests"] == 0


def test_minutes_roll_up_into_hours(tmp_path: Path, clock: ManualClock) -> None:
    # two hours of traffic, one interval every 7 seconds, growing
    batch = [interval(T0 + i, {"api": figures(1 + i % 5)}) for i in range(0, 7200, 7)]
    write(tmp_path, clock, batch, geoip=None)
    expected = sum(1 + i % 5 for i in range(0, 7200, 7))
    with sqlite3.connect(tmp_path / STATS_FILE) as db:
        minutes = dict(
            db.execute("SELECT t / 3600 * 3600, sum(requests) FROM minutes GROUP BY 1").fetchall()
        )
        quarters = dict(
            db.execute("SELECT t / 3600 * 3600, sum(requests) FROM quarters GROUP BY 1").fetchall()
        )
        hours = dict(db.execute("SELECT t, requests FROM hours").fetchall())
        lat_minutes = db.execute("SELECT sum(lat_4) FROM minutes").fetchone()[0]
        lat_hours = db.execute("SELECT sum(lat_4) FROM hours").fetchone()[0]
    assert hours == minutes == quarters and set(hours) == {T0, T0 + 3600}
    assert sum(hours.values()) == expected
    assert lat_hours == lat_minutes == expected  # 4 ms: the 3..5 ms bucket
    clock.advance(7200)
    store = StatsStore(tmp_path, clock)
    assert store.summary("24h")["totals"]["requests"] == expected
    week = store.summary("7d")
    assert week["totals"]["requests"] == expected
    assert week["series"]["requests"][-3:-1] == [hours[T0], hours[T0 + 3600]]


def test_retention(tmp_path: Path, clock: ManualClock) -> None:
    writer = StatsWriter(tmp_path, clock)
    try:
        writer.add(
            interval(
                T0,
                paths={"/x": 10},
                errors=[{"time": T0 + 0.5, "route": "api", "status": 500, "path": "/x"}],
            )
        )
        assert writer.flush()
        counts = {
            table: rows(tmp_path, table)
            for table in (
                "seconds",
                "minutes",
                "quarters",
                "hours",
                "top_minutes",
                "top_hours",
                "top_days",
                "errors",
            )
        }
        assert counts == dict.fromkeys(counts, 1)

        clock.advance(16 * 60)  # seconds are kept 15 minutes
        assert writer.flush()  # the writer prunes once a minute of its clock
        assert rows(tmp_path, "seconds") == 0
        assert rows(tmp_path, "minutes") == 1

        clock.advance(48 * 3600)  # minutes, minute top-K and 5xx answers 48 hours
        assert writer.flush()
        gone = ("minutes", "quarters", "top_minutes", "errors")
        assert [rows(tmp_path, t) for t in gone] == [0, 0, 0, 0]
        assert [rows(tmp_path, t) for t in ("hours", "top_hours", "top_days")] == [1, 1, 1]
        store = StatsStore(tmp_path, clock)
        assert store.summary("7d")["totals"]["requests"] == 10
        assert store.summary("7d")["top"]["paths"] == [{"key": "/x", "requests": 10}]
        assert store.summary("30d")["top"]["paths"] == [{"key": "/x", "requests": 10}]

        clock.advance(90 * 86400)  # hours 90 days
        assert writer.flush()
        assert [rows(tmp_path, t) for t in ("hours", "top_hours", "top_days")] == [0, 0, 0]
    finally:
        writer.close()


def test_no_file_yet_gives_zeros(tmp_path: Path, clock: ManualClock) -> None:
    store = StatsStore(tmp_path / "nothing", clock)
    summary = store.summary("24h")
    assert summary["totals"]["requests"] == 0
    assert summary["totals"]["latency"] == {"p50": None, "p95": None, "p99": None}
    assert len(summary["series"]["t"]) == 96 and set(summary["series"]["requests"]) == {0}
    assert summary["routes"] == [] and summary["recent_errors"] == []
    assert all(rows == [] for rows in summary["top"].values())
    assert store.live()["requests"] == 0
    assert not (tmp_path / "nothing").exists()  # reading creates nothing


@pytest.mark.parametrize(
    ("window", "step", "points"),
    [("5m", 5, 60), ("1h", 60, 60), ("24h", 900, 96), ("7d", 3600, 168), ("30d", 21600, 120)],
)
def test_windows_and_their_steps(
    tmp_path: Path, clock: ManualClock, window: str, step: int, points: int
) -> None:
    write(tmp_path, clock, [interval(T0 - 1)])
    summary = StatsStore(tmp_path, clock).summary(window, now=T0 + 0.5)
    assert summary["step"] == step
    assert len(summary["series"]["t"]) == points
    assert summary["totals"]["requests"] == 10
    assert sum(summary["series"]["requests"]) == 10


def test_unknown_window_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown window '2h'"):
        StatsStore(tmp_path).summary("2h")


def test_percentiles_are_interpolated_within_buckets() -> None:
    # 100 requests between 10 and 15 ms: spread evenly, the median is 12.5 ms
    assert percentile(buckets(0.012, 100), 0.5) == pytest.approx(0.0125)
    assert percentile(buckets(0.012, 100), 0.99) == pytest.approx(0.01495)
    # 90 fast (under 0.5 ms) and 10 slow (2..3 s): p90 at the top of the first bucket
    mixed = [a + b for a, b in zip(buckets(0.0001, 90), buckets(2.5, 10), strict=True)]
    assert percentile(mixed, 0.9) == pytest.approx(0.0005)
    assert percentile(mixed, 0.95) == pytest.approx(2.5)
    assert percentile(buckets(120.0, 5), 0.5) == 60.0  # beyond the last bound
    assert percentile(buckets(0.01, 0), 0.5) is None


def test_a_damaged_file_stops_the_statistics_not_the_worker(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / STATS_FILE).write_bytes(b"not a database" * 500)
    writer = StatsWriter(tmp_path, clock)
    writer.add(interval(T0))  # the sink never raises into the recorder
    assert writer.flush() is False
    writer.add(interval(T0 + 1))
    writer.close()
    assert f"cannot open {tmp_path / STATS_FILE}" in caplog.text


def test_summary_has_the_shape_the_api_and_dashboard_read(
    tmp_path: Path, clock: ManualClock
) -> None:
    write(tmp_path, clock, [interval(T0 - 2)])
    summary = StatsStore(tmp_path, clock).summary("5m")
    assert set(summary) == {
        "window", "since", "until", "step", "totals", "series", "routes", "top", "recent_errors"
    }  # fmt: skip
    assert set(summary["totals"]) == {
        "requests", "rps", "status", "rate_4xx", "rate_5xx", "latency", "upstream_latency",
        "upstream_share", "bytes_in", "bytes_out", "cache", "refusals",
    }  # fmt: skip
    assert set(summary["totals"]["status"]) == {"1xx", "2xx", "3xx", "4xx", "5xx"}
    assert set(summary["totals"]["latency"]) == {"p50", "p95", "p99"}
    assert set(summary["totals"]["upstream_latency"]) == {"p50", "p95", "p99"}
    assert set(summary["totals"]["cache"]) == {"hits", "lookups", "ratio"}
    assert set(summary["totals"]["refusals"]) == {"401", "403", "429"}
    series = summary["series"]
    assert set(series) == {
        "t", "requests", "status", "p50", "p95", "p99", "bytes_in", "bytes_out", "refusals"
    }  # fmt: skip
    lengths = {len(series[k]) for k in ("t", "requests", "p50", "p95", "p99", "bytes_in")}
    lengths |= {len(v) for v in (*series["status"].values(), *series["refusals"].values())}
    assert lengths == {60}
    assert set(summary["top"]) == {
        "paths", "not_found", "clients", "consumers", "browsers", "os", "devices", "bots",
        "referrers", "countries",
    }  # fmt: skip
    assert set(summary["routes"][0]) == {"route", "requests", "error_rate", "p95"}
    assert set(StatsStore(tmp_path, clock).live()) == {
        "time", "requests", "rps", "status", "p50", "p95", "p99", "upstream_p95",
        "upstream_share", "refusals", "bytes_in", "bytes_out", "cache_hits", "cache_lookups",
    }  # fmt: skip


def test_the_kept_read_connection_follows_a_removed_and_new_file(
    tmp_path: Path, clock: ManualClock
) -> None:
    """The store keeps its read connection between calls; a file removed (a reset by
    hand) reads as nothing, and a new one is read, not the old one's deleted pages."""
    write(tmp_path, clock, [interval(T0 + i, {"api": figures(2)}) for i in range(3)])
    store = StatsStore(tmp_path, clock)
    assert store.period(T0, T0 + 3)["requests"] == 6
    assert store.period(T0, T0 + 3)["requests"] == 6  # the same connection, again
    for name in (STATS_FILE, STATS_FILE + "-wal", STATS_FILE + "-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    assert store.period(T0, T0 + 3)["requests"] == 0
    write(tmp_path, clock, [interval(T0 + i, {"api": figures(5)}) for i in range(3)])
    assert store.period(T0, T0 + 3)["requests"] == 15


def test_workers_opening_a_new_file_at_once_all_get_it(tmp_path: Path) -> None:
    """Workers start together: the switch of a new file to WAL is refused at once ("database
    is locked", without SQLite's busy wait) to all but one of them, and each must try again
    rather than run without statistics (before, a round of four failed about one time in
    fifteen)."""
    for round_ in range(100):
        path = tmp_path / f"r{round_}" / "stats.sqlite3"
        errors: list[Exception] = []

        def open_one(path: Path = path, errors: list[Exception] = errors) -> None:
            try:
                open_writer(path).close()
            except Exception as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_one) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [], (round_, errors)
