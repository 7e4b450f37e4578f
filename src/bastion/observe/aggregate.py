"""A drained batch of rows (`tap.py`), counted once for every reader: the second's
`Interval` and the Prometheus counters.

The batch's work counts in the cost of a request as surely as the tap's, so it is done by
C-level loops over whole columns (a column is a slice of the flat row list), shaped for
the common case of a busy second: few routes, few outcomes. A column of one value is
found with `list.count` (identity compares, nothing hashed) and needs no `Counter`;
latencies are sorted (a C sort of floats) and each histogram bound is one bisection of
the sorted values, instead of one bucket search per request. Per route and per distinct
outcome the Python loops that follow are negligible.

The histograms count per bucket of the union of the statistics' bounds (`STATS_BUCKETS`)
and Prometheus' (`DURATION_BUCKETS`): a bucket of the union lies within exactly one
bucket of each layout, so both are exact.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import eq, ge
from typing import Any, Final

from bastion.observe.interval import MAX_ERRORS, TOP_DIMENSIONS, Interval, RouteFigures
from bastion.observe.interval import STATS_BUCKETS as STATS_BUCKETS
from bastion.observe.tap import (
    BODY_BYTES,
    BYTES_OUT,
    CACHE,
    CLIENT_IP,
    CONSUMER,
    END,
    FIELDS,
    METHOD,
    RAW_PATH,
    REFERER,
    REFUSED_BY,
    REQUEST_ID,
    ROUTE,
    STATUS,
    TOOK,
    UPSTREAM,
    UPSTREAM_TIME,
    USER_AGENT,
)

# upper bounds in seconds of the Prometheus histograms (`le`), the last bucket is +Inf
DURATION_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
UNROUTED: Final = "none"  # the route of requests no route answered (404, 405, refusals)
_STATUS_CLASSES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx")

# the bounds searched once per row; index len(_UNION) is +Inf
_UNION: Final = tuple(sorted({*STATS_BUCKETS, *DURATION_BUCKETS}))
# a bucket of the union -> its bucket in each layout
TO_STATS: Final = (*(bisect_left(STATS_BUCKETS, b) for b in _UNION), len(STATS_BUCKETS))
TO_PROMETHEUS: Final = (*(bisect_left(DURATION_BUCKETS, b) for b in _UNION), len(DURATION_BUCKETS))

# (method, status, cache, refused_by) -> requests: a route's outcomes in a batch
Outcome = tuple[str, int, str, str]


def status_class(status: int) -> str:
    return _STATUS_CLASSES[status // 100 - 1] if 100 <= status < 600 else "other"


@dataclass
class RouteBatch:
    """One route's requests in a batch."""

    outcomes: dict[Outcome, int]
    # bucket of the union of bounds (see the module's doc; len(_UNION): +Inf) -> count,
    # only the buckets with requests
    latency: dict[int, int]
    upstream: dict[int, int]  # proxied requests only
    latency_sum: float
    upstream_sum: float
    bytes_in: int
    bytes_out: int


@dataclass
class Batch:
    """The requests of one drained batch, counted."""

    requests: int = 0
    routes: dict[str, RouteBatch] = field(default_factory=dict)  # UNROUTED: no route
    codes: set[int] = field(default_factory=set)  # the status codes answered
    consumers: dict[tuple[str, int], int] = field(default_factory=dict)  # (name, status)
    top: dict[str, Counter[str]] = field(default_factory=dict)  # see TOP_DIMENSIONS
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
            interval.top.setdefault(name, Counter()).update(values)
        for (consumer, status), n in self.consumers.items():
            pair = interval.consumers.setdefault(consumer, [0, 0])
            pair[0] += n
            if status == 429:
                pair[1] += n
        if self.errors:
            interval.errors.extend(self.errors)
            del interval.errors[:-MAX_ERRORS]


def count(rows: list[Any], wall_offset: float, top: bool = True, fields: int = FIELDS) -> Batch:
    """Count a drained batch (flat rows of `fields` items, see `tap.py`). `wall_offset`
    turns the loop's times into epoch seconds (the 5xx answers' times). The top-K
    dimensions are counted with `top` (else left empty: nobody reads them); they and the
    5xx answers need detailed rows."""
    n = len(rows) // fields
    batch = Batch(requests=n)
    if not n:
        return batch
    detailed = fields == FIELDS
    routes = rows[ROUTE::fields]
    statuses = rows[STATUS::fields]
    columns = [
        rows[METHOD::fields],
        statuses,
        rows[CACHE::fields],
        rows[REFUSED_BY::fields],
        rows[TOOK::fields],
        rows[UPSTREAM_TIME::fields],
        rows[BODY_BYTES::fields],
        rows[BYTES_OUT::fields],
    ]
    first = routes[0]
    if routes.count(first) == n:  # one route: no partition (a C loop, by identity first)
        batch.routes[first or UNROUTED] = _route(*columns)
    else:
        # several: the row numbers of each route, then each column's items per route
        index: dict[str, list[int]] = {route: [] for route in set(routes)}
        for i, route in enumerate(routes):
            index[route].append(i)
        for route, numbers in index.items():
            picked = [list(map(column.__getitem__, numbers)) for column in columns]
            batch.routes[route or UNROUTED] = _route(*picked)
    codes = batch.codes
    for figures in batch.routes.values():
        codes.update(key[1] for key in figures.outcomes)

    consumers = rows[CONSUMER::fields]
    if any(consumers):
        batch.consumers = Counter(compress(zip(consumers, statuses, strict=True), consumers))
    if detailed and max(codes) >= 500:
        batch.errors = _errors(rows, statuses, wall_offset)
    if detailed and top:
        paths = rows[RAW_PATH::fields]
        batch.top = {
            "paths": _counted(paths),
            "not_found": Counter(compress(paths, map(eq, statuses, repeat(404))))
            if 404 in codes
            else Counter(),
            "clients": _counted(rows[CLIENT_IP::fields]),
        }
        batch.top["agents"] = _decoded(rows[USER_AGENT::fields])
        batch.top["referrers"] = _decoded(rows[REFERER::fields])
        assert set(batch.top) == set(TOP_DIMENSIONS)
    return batch


def _counted(column: list[Any]) -> Counter[Any]:
    """`Counter(column)`, with a shortcut for a column of one value (one route's, one
    client's, one path's batch): `list.count` compares by identity first and hashes
    nothing."""
    first = column[0]
    if column.count(first) == len(column):
        return Counter({first: len(column)})
    return Counter(column)


def _route(
    methods: list[str],
    statuses: list[int],
    caches: list[str],
    refusals: list[str],
    took: list[float],
    upstream: list[float],
    body: list[int],
    out: list[int],
) -> RouteBatch:
    n = len(methods)
    outcomes: dict[Outcome, int]
    method, status, cache, refused = methods[0], statuses[0], caches[0], refusals[0]
    if (
        methods.count(method) == n
        and statuses.count(status) == n
        and caches.count(cache) == n
        and refusals.count(refused) == n
    ):
        outcomes = {(method, status, cache, refused): n}
    else:
        outcomes = Counter(zip(methods, statuses, caches, refusals, strict=True))
    # histograms: sorted values (a C sort with float compares), then one bisection per
    # bound instead of one per value. (A binary search of the bounds per value, compiled,
    # cost 2.7x the sort: mypyc's loop boxes and checks every step.)
    took.sort()
    upstream.sort()
    proxied = bisect_left(upstream, 0.0)  # the first proxied one (not proxied: -1.0)
    if proxied:
        upstream = upstream[proxied:]
    return RouteBatch(
        outcomes,
        _buckets(took),
        _buckets(upstream),
        sum(took),
        sum(upstream),
        sum(body),
        sum(out),
    )


def _buckets(ordered: list[float]) -> dict[int, int]:
    """Counts per bucket of the union of bounds, of sorted values: one bisection per
    bound between the smallest value's bucket and the largest's."""
    if not ordered:
        return {}
    first = bisect_left(_UNION, ordered[0])
    last = bisect_left(_UNION, ordered[-1])
    counts = {}
    below = 0
    for i in range(first, last):
        upto = bisect_right(ordered, _UNION[i])  # the values <= bound (Prometheus' `le`)
        if upto > below:
            counts[i] = upto - below
            below = upto
    counts[last] = len(ordered) - below
    return counts


def _decoded(column: list[bytes]) -> Counter[str]:
    """A column of field values counted, the values as text ("": the request sent none)."""
    return Counter({value.decode("latin-1"): n for value, n in _counted(column).items()})


def _errors(rows: list[Any], statuses: list[int], wall_offset: float) -> list[dict[str, Any]]:
    """The batch's last MAX_ERRORS 5xx answers, oldest first."""
    found = list(compress(range(len(statuses)), map(ge, statuses, repeat(500))))
    errors = []
    for i in found[-MAX_ERRORS:]:
        row = rows[i * FIELDS : (i + 1) * FIELDS]
        errors.append(
            {
                "time": row[END] + wall_offset,
                "route": row[ROUTE] or UNROUTED,
                "method": row[METHOD],
                "path": row[RAW_PATH],
                "status": row[STATUS],
                "request_id": row[REQUEST_ID],
                "upstream": row[UPSTREAM] or None,
            }
        )
    return errors
