"""A batch of finished requests as the tap counted them (`tap.py`), in the form every
reader takes it from: the second's `Interval` (`Batch.add_to`) and the Prometheus
counters (`metrics.RequestMetrics.add`).

The histograms count per bucket of the union of the statistics' bounds (`STATS_BUCKETS`)
and Prometheus' (`DURATION_BUCKETS`): a bucket of the union lies within exactly one
bucket of each layout, so both are exact.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

from bastion.observe.interval import MAX_ERRORS, Interval, RouteFigures
from bastion.observe.interval import STATS_BUCKETS as STATS_BUCKETS

# upper bounds in seconds of the Prometheus histograms (`le`), the last bucket is +Inf
DURATION_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
UNROUTED: Final = "none"  # the route of requests no route answered (404, 405, refusals)
_STATUS_CLASSES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx")

# the bounds the tap counts durations by; bucket len(UNION_BOUNDS) is +Inf
UNION_BOUNDS: Final = tuple(sorted({*STATS_BUCKETS, *DURATION_BUCKETS}))
# a bucket of the union -> its bucket in each layout
TO_STATS: Final = (*(bisect_left(STATS_BUCKETS, b) for b in UNION_BOUNDS), len(STATS_BUCKETS))
TO_PROMETHEUS: Final = (
    *(bisect_left(DURATION_BUCKETS, b) for b in UNION_BOUNDS),
    len(DURATION_BUCKETS),
)

# (method, status, cache, refused_by) -> requests: a route's outcomes in a batch
Outcome = tuple[str, int, str, str]


def status_class(status: int) -> str:
    return _STATUS_CLASSES[status // 100 - 1] if 100 <= status < 600 else "other"


@dataclass
class RouteBatch:
    """One route's requests in a batch."""

    outcomes: dict[Outcome, int]
    # bucket of the union of bounds (see the module's doc; len(UNION_BOUNDS): +Inf) -> count,
    # only the buckets with requests
    latency: dict[int, int]
    upstream: dict[int, int]  # proxied requests only
    latency_sum: float
    upstream_sum: float
    bytes_in: int
    bytes_out: int


@dataclass
class Batch:
    """The requests of one batch, counted."""

    requests: int = 0
    routes: dict[str, RouteBatch] = field(default_factory=dict)  # UNROUTED: no route
    consumers: dict[tuple[str, int], int] = field(default_factory=dict)  # (name, status)
    # interval.TOP_DIMENSIONS, when counted (else empty: nobody reads them)
    top: dict[str, dict[str, int]] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)  # the last MAX_ERRORS 5xx

    def add_to(self, interval: Interval) -> None:
        """Add these requests to `interval` (the second they finished in)."""
        for route, batch in self.routes.items():
            figures = interval.routes.get(route)
            if figures is None:
                figures = interval.routes[route] = RouteFigures()
            for (method, status, cache, refused), n in batch.outcomes.items():
                figures.requests += n
                label = status_class(status)
                figures.status[label] = figures.status.get(label, 0) + n
                figures.codes[status] = figures.codes.get(status, 0) + n
                figures.methods[method] = figures.methods.get(method, 0) + n
                if cache:
                    figures.cache[cache] = figures.cache.get(cache, 0) + n
                if refused:
                    figures.refusals[refused] = figures.refusals.get(refused, 0) + n
            for histogram, buckets in (
                (figures.latency, batch.latency),
                (figures.upstream, batch.upstream),
            ):
                for i, n in buckets.items():
                    histogram[TO_STATS[i]] += n
            figures.latency_sum += batch.latency_sum
            figures.upstream_sum += batch.upstream_sum
            figures.bytes_in += batch.bytes_in
            figures.bytes_out += batch.bytes_out
        for name, values in self.top.items():
            counts = interval.top.get(name)
            if counts is None:
                counts = interval.top[name] = Counter()
            for value, n in values.items():
                counts[value] = counts.get(value, 0) + n
        for (consumer, status), n in self.consumers.items():
            pair = interval.consumers.setdefault(consumer, [0, 0])
            pair[0] += n
            if status == 429:
                pair[1] += n
        if self.errors:
            interval.errors.extend(self.errors)
            del interval.errors[:-MAX_ERRORS]
