"""Request metrics: per-worker counters and fixed-bucket histograms, bumped by the
request-finish hook.

On the request path this costs a few dictionary updates and one `bisect` per histogram:
no label strings are built per request (the key is a tuple of values the request already
holds) and no exposition work is done. `snapshot()` turns the counters into plain data
(JSON-ready) once a second for the other workers; `merge` adds the snapshots of every
worker up, so a scrape of any worker reports the totals of all.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bastion.http.request import Request

# upper bounds in seconds (Prometheus `le`), the last bucket is +Inf
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
_STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
UNROUTED = "none"  # the route label of requests no route answered (404, 405, refusals)


def status_label(status: int, exact: bool) -> str:
    if exact:
        return str(status)
    return _STATUS_CLASSES[status // 100 - 1] if 100 <= status < 600 else "other"


class RouteCounters:
    """One route's counters in one object: a request costs one lookup of it."""

    __slots__ = (
        "duration_sum",
        "durations",
        "received",
        "refusals",
        "requests",
        "sent",
        "upstream",
        "upstream_sum",
    )

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int, str], int] = {}  # (method, status, cache)
        self.received = 0  # request body bytes
        self.sent = 0  # response bytes
        # per bucket of DURATION_BUCKETS, the last one +Inf; and the sum of the values
        self.durations = [0] * (len(DURATION_BUCKETS) + 1)
        self.duration_sum = 0.0
        self.upstream = [0] * (len(DURATION_BUCKETS) + 1)
        self.upstream_sum = 0.0
        self.refusals: dict[str, int] = {}  # refusing policy -> requests


class RequestMetrics:
    """The observer: `record(req, now)` is called for every finished request."""

    def __init__(self, exact_status: bool = False) -> None:
        self.exact_status = exact_status
        self.routes: dict[str, RouteCounters] = {}

    def record(self, req: Request, now: float) -> None:
        # per request: keep to plain dict, list and slot operations (measured with
        # bench/instructions.py `metrics`)
        route = req.route_name or UNROUTED
        counters = self.routes.get(route)
        if counters is None:
            counters = self.routes[route] = RouteCounters()
        key = (req.method, req.status, req.cache)
        requests = counters.requests
        requests[key] = requests.get(key, 0) + 1
        counters.received += req.body_bytes
        counters.sent += req.bytes_out
        took = now - req.start
        counters.durations[bisect_left(DURATION_BUCKETS, took)] += 1
        counters.duration_sum += took
        upstream = req.upstream_time
        if upstream >= 0.0:
            counters.upstream[bisect_left(DURATION_BUCKETS, upstream)] += 1
            counters.upstream_sum += upstream
        if req.refused_by:
            refusals = counters.refusals
            refusals[req.refused_by] = refusals.get(req.refused_by, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """The counters as plain data, with status codes folded into their labels."""
        exact = self.exact_status
        requests: dict[tuple[str, str, str, str], int] = {}
        sizes: list[list[Any]] = []
        durations: list[list[Any]] = []
        upstream: list[list[Any]] = []
        refusals: list[list[Any]] = []
        for route, c in self.routes.items():
            for (method, status, cache), count in c.requests.items():
                key = (route, method, status_label(status, exact), cache)
                requests[key] = requests.get(key, 0) + count
            sizes.append([route, c.received, c.sent])
            durations.append([route, list(c.durations), c.duration_sum])
            if any(c.upstream):
                upstream.append([route, list(c.upstream), c.upstream_sum])
            refusals.extend([route, policy, n] for policy, n in c.refusals.items())
        return {
            "requests": [[*key, count] for key, count in requests.items()],
            "bytes": sizes,
            "durations": durations,
            "upstream": upstream,
            "refusals": refusals,
        }


def merge(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """The sum of several workers' snapshots, in the same form."""
    requests: dict[tuple[str, ...], int] = {}
    sizes: dict[str, list[int]] = {}
    histograms: dict[str, dict[str, list[Any]]] = {"durations": {}, "upstream": {}}
    refusals: dict[tuple[str, str], int] = {}
    for snap in snapshots:
        for *labels, count in snap.get("requests", ()):
            requests[tuple(labels)] = requests.get(tuple(labels), 0) + count
        for route, received, sent in snap.get("bytes", ()):
            into = sizes.setdefault(route, [0, 0])
            into[0] += received
            into[1] += sent
        for kind, table in histograms.items():
            for route, counts, total in snap.get(kind, ()):
                held = table.setdefault(route, [[0] * len(counts), 0.0])
                held[0] = [a + b for a, b in zip(held[0], counts, strict=True)]
                held[1] += total
        for route, policy, count in snap.get("refusals", ()):
            refusals[(route, policy)] = refusals.get((route, policy), 0) + count
    return {
        "requests": [[*key, count] for key, count in requests.items()],
        "bytes": [[route, a, b] for route, (a, b) in sizes.items()],
        "durations": [[r, c, t] for r, (c, t) in histograms["durations"].items()],
        "upstream": [[r, c, t] for r, (c, t) in histograms["upstream"].items()],
        "refusals": [[route, policy, n] for (route, policy), n in refusals.items()],
    }
