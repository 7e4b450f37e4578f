"""The cluster view's encoding and merge: rows survive the compact encoding, a worker's
repeated write of a minute replaces its previous one, and the merge sums counts and
histogram buckets (a percentile of all requests, not an average of percentiles)."""

from __future__ import annotations

import pytest

from bastion.observe.interval import STATS_BUCKETS
from bastion.observe.stats.cluster import MinuteBook, decode_row, encode_row
from bastion.observe.stats.merge import cluster_summary
from bastion.observe.stats.schema import FIGURES, LATENCY

NOW = 1_800_000_030.0  # 30 s into a minute
MINUTE = 1_800_000_000


def row(requests: int, s2xx: int = 0, s5xx: int = 0, bucket: int = 0) -> list[float]:
    values = [0.0] * len(FIGURES)
    values[FIGURES.index("requests")] = requests
    values[FIGURES.index("s2xx")] = s2xx
    values[FIGURES.index("s5xx")] = s5xx
    values[FIGURES.index(LATENCY[bucket])] = requests
    values[FIGURES.index("latency_sum")] = 0.0125 * requests
    return values


class Minutes:
    """A ClusterReader over minutes the test writes (what Redis would hold)."""

    def __init__(self) -> None:
        self.beats: dict[str, dict[str, float]] = {}
        self.held: dict[tuple[str, int], dict[str, str]] = {}

    def write(self, instance: str, book: MinuteBook, pid: int, seen: float = NOW) -> None:
        for minute in book.dirty:
            self.held.setdefault((instance, minute), {}).update(book.fields(minute, pid))
        book.dirty.clear()
        self.beats[instance] = {"seen": seen, "every": 1.0}

    def instances(self, now: float) -> dict[str, dict[str, float]]:
        return dict(self.beats)

    def read(
        self, instances: list[str], minutes: list[int]
    ) -> dict[tuple[str, int], dict[str, str]]:
        return {
            (i, m): self.held[(i, m)] for i in instances for m in minutes if (i, m) in self.held
        }


def test_a_row_survives_the_encoding_and_zeros_cost_nothing() -> None:
    values = row(30, s2xx=28, s5xx=2, bucket=5)
    text = encode_row(values)
    assert decode_row(text) == values
    assert len(text) < 120  # 60-odd columns, mostly empty
    assert decode_row(encode_row([0.0] * len(FIGURES))) == [0.0] * len(FIGURES)
    with pytest.raises(ValueError):
        decode_row(",".join("1" * (len(FIGURES) + 1)))


def test_a_worker_rewrites_its_minute_whole_so_nothing_counts_twice() -> None:
    redis = Minutes()
    book = MinuteBook(100)
    book.add_rows({(MINUTE, "/"): row(3, s2xx=3)})
    book.add_top(MINUTE, {"paths": [("/a", 3, 0)]})
    redis.write("a", book, pid=1)
    book.add_rows({(MINUTE, "/"): row(2, s2xx=2)})
    book.add_top(MINUTE, {"paths": [("/a", 2, 0)]})
    redis.write("a", book, pid=1)
    redis.write("a", book, pid=1)  # nothing new: the same fields again

    summary = cluster_summary(redis, "5m", NOW)

    assert summary["totals"]["requests"] == 5
    assert summary["top"]["paths"] == [{"key": "/a", "requests": 5}]


def test_instances_and_workers_add_up_and_percentiles_come_from_the_buckets() -> None:
    redis = Minutes()
    fast, slow, other = MinuteBook(100), MinuteBook(100), MinuteBook(100)
    fast.add_rows({(MINUTE, "/"): row(95, s2xx=95, bucket=0)})
    slow.add_rows({(MINUTE - 60, "/"): row(10, s5xx=10, bucket=len(STATS_BUCKETS) - 1)})
    other.add_rows({(MINUTE, "/api/"): row(200, s2xx=200, bucket=0)})
    redis.write("a", fast, pid=1)
    redis.write("a", slow, pid=2)  # a second worker of the same instance
    redis.write("b", other, pid=1, seen=NOW - 60)  # stopped writing a minute ago

    summary = cluster_summary(redis, "5m", NOW)

    totals = summary["totals"]
    assert totals["requests"] == 305
    assert totals["status"]["5xx"] == 10 and totals["status"]["2xx"] == 295
    rows = {r["instance"]: r for r in summary["instances"]}
    assert rows["a"]["requests"] == 105 and rows["b"]["requests"] == 200
    # a's p95 is among its slow requests (10 of 105), b's among its fast ones; of all 305
    # requests 10 are slow, so the cluster's p95 is a fast one: an average of the two
    # instances' p95s would say half a minute
    assert rows["a"]["p95"] > STATS_BUCKETS[-2] and rows["b"]["p95"] <= STATS_BUCKETS[0]
    assert totals["latency"]["p95"] <= STATS_BUCKETS[0]
    assert summary["missing"] == ["b"] and rows["b"]["missing"] and not rows["a"]["missing"]
    assert {r["route"]: r["requests"] for r in summary["routes"]} == {"/": 105, "/api/": 200}
    assert sum(summary["series"]["requests"]) == 305


def test_windows_beyond_the_minutes_kept_are_refused() -> None:
    with pytest.raises(ValueError, match="per instance"):
        cluster_summary(Minutes(), "7d", NOW)
