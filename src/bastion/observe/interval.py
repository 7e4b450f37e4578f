"""One worker's traffic during one wall-clock second, in the form every consumer reads.

The request path counts each finished request into its route's tally (`observe/tap.py`);
once a second the recorder adds the tallies up into an `Interval`. The Prometheus counters, the
statistics store, the live view and the alerts all read Intervals, never requests. An
Interval is plain data: `to_json` / `from_json` carry it between workers and into storage,
and `merge` adds several up (the workers of an instance, the seconds of a minute).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# Upper bounds (seconds) of the latency buckets of statistics; a last bucket holds the
# rest. Finer than the Prometheus buckets: percentiles are interpolated within a bucket, so
# the width of a bucket is the error bound of a percentile (at most a third of the value
# from 2 ms up).
STATS_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
    0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0,
)  # fmt: skip
BUCKET_COUNT = len(STATS_BUCKETS) + 1

# the top-K dimensions an Interval counts exactly (the store keeps bounded sketches of them)
TOP_DIMENSIONS = ("paths", "not_found", "clients", "agents", "referrers")
MAX_ERRORS = 20  # 5xx answers an Interval keeps the details of


def _add(into: dict[Any, int], other: dict[Any, int]) -> None:
    for key, n in other.items():
        into[key] = into.get(key, 0) + n


@dataclass
class RouteFigures:
    """One route's requests in an interval."""

    requests: int = 0
    status: dict[str, int] = field(default_factory=dict)  # "1xx" .. "5xx"
    codes: dict[int, int] = field(default_factory=dict)  # exact status codes
    methods: dict[str, int] = field(default_factory=dict)
    cache: dict[str, int] = field(default_factory=dict)  # HIT, MISS, STALE, …
    refusals: dict[str, int] = field(default_factory=dict)  # refusing policy's config key
    latency: list[int] = field(default_factory=lambda: [0] * BUCKET_COUNT)
    latency_sum: float = 0.0
    upstream: list[int] = field(default_factory=lambda: [0] * BUCKET_COUNT)
    upstream_sum: float = 0.0
    bytes_in: int = 0  # request body bytes
    bytes_out: int = 0  # response bytes, head and body

    def add(self, other: RouteFigures) -> None:
        self.requests += other.requests
        _add(self.status, other.status)
        _add(self.codes, other.codes)
        _add(self.methods, other.methods)
        _add(self.cache, other.cache)
        _add(self.refusals, other.refusals)
        self.latency = [a + b for a, b in zip(self.latency, other.latency, strict=True)]
        self.latency_sum += other.latency_sum
        self.upstream = [a + b for a, b in zip(self.upstream, other.upstream, strict=True)]
        self.upstream_sum += other.upstream_sum
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "status": self.status,
            "codes": {str(code): n for code, n in self.codes.items()},
            "methods": self.methods,
            "cache": self.cache,
            "refusals": self.refusals,
            "latency": self.latency,
            "latency_sum": self.latency_sum,
            "upstream": self.upstream,
            "upstream_sum": self.upstream_sum,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RouteFigures:
        latency = list(data.get("latency") or [0] * BUCKET_COUNT)
        upstream = list(data.get("upstream") or [0] * BUCKET_COUNT)
        if len(latency) != BUCKET_COUNT or len(upstream) != BUCKET_COUNT:
            raise ValueError("latency buckets of another layout")
        return cls(
            requests=int(data.get("requests", 0)),
            status=dict(data.get("status", {})),
            codes={int(code): n for code, n in data.get("codes", {}).items()},
            methods=dict(data.get("methods", {})),
            cache=dict(data.get("cache", {})),
            refusals=dict(data.get("refusals", {})),
            latency=latency,
            latency_sum=float(data.get("latency_sum", 0.0)),
            upstream=upstream,
            upstream_sum=float(data.get("upstream_sum", 0.0)),
            bytes_in=int(data.get("bytes_in", 0)),
            bytes_out=int(data.get("bytes_out", 0)),
        )


@dataclass
class Interval:
    """One worker's requests finished during the wall-clock second `start`."""

    start: int  # epoch second
    routes: dict[str, RouteFigures] = field(default_factory=dict)
    # exact counts per dimension (see TOP_DIMENSIONS): raw paths as requested (no query),
    # paths answered 404, client addresses, User-Agent and Referer values ("" absent)
    top: dict[str, Counter[str]] = field(
        default_factory=lambda: {name: Counter() for name in TOP_DIMENSIONS}
    )
    consumers: dict[str, list[int]] = field(default_factory=dict)  # name -> [requests, 429s]
    # the 5xx answers (at most MAX_ERRORS): time (epoch), route, method, path, status,
    # request_id, upstream
    errors: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0  # requests in progress at the end of the second

    @property
    def requests(self) -> int:
        return sum(figures.requests for figures in self.routes.values())

    def merge(self, others: list[Interval]) -> Interval:
        """A new Interval holding this one and `others` added up (same `start` as this)."""
        total = Interval(self.start)
        for interval in (self, *others):
            for route, figures in interval.routes.items():
                held = total.routes.get(route)
                if held is None:
                    held = total.routes[route] = RouteFigures()
                held.add(figures)
            for name, counts in interval.top.items():
                total.top.setdefault(name, Counter()).update(counts)
            for consumer, (requests, limited) in interval.consumers.items():
                into = total.consumers.setdefault(consumer, [0, 0])
                into[0] += requests
                into[1] += limited
            total.errors.extend(interval.errors)
            total.in_flight += interval.in_flight
        total.errors.sort(key=lambda error: error.get("time", 0.0))
        del total.errors[:-MAX_ERRORS]
        return total

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "routes": {route: figures.to_json() for route, figures in self.routes.items()},
            "top": {name: dict(counts) for name, counts in self.top.items()},
            "consumers": self.consumers,
            "errors": self.errors,
            "in_flight": self.in_flight,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Interval:
        top: dict[str, Counter[str]] = {name: Counter() for name in TOP_DIMENSIONS}
        for name, counts in data.get("top", {}).items():
            top[name] = Counter({str(key): int(n) for key, n in counts.items()})
        return cls(
            start=int(data["start"]),
            routes={
                str(route): RouteFigures.from_json(figures)
                for route, figures in data.get("routes", {}).items()
            },
            top=top,
            consumers={
                str(name): [int(pair[0]), int(pair[1])]
                for name, pair in data.get("consumers", {}).items()
            },
            errors=list(data.get("errors", [])),
            in_flight=int(data.get("in_flight", 0)),
        )
