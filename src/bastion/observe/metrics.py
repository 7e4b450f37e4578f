"""Request metrics: per-worker counters and fixed-bucket histograms, fed once a second
(and at each scrape) with a counted batch of finished requests (`aggregate.Batch`).

Nothing here runs per request: the request path only counts into the tap
(`observe/tap.py`), and the recorder hands each batch it takes to `add`. `snapshot()`
turns the counters into plain data (JSON-ready) for the other workers; `merge` adds the
snapshots of every worker up, so a scrape of any worker reports the totals of all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bastion.observe.aggregate import DURATION_BUCKETS, TO_PROMETHEUS, UNROUTED, status_class

if TYPE_CHECKING:
    from bastion.observe.aggregate import Batch

__all__ = ["DURATION_BUCKETS", "UNROUTED", "RequestMetrics", "merge", "status_label"]

OTHER_CONSUMERS = "_other"  # the consumer label of every consumer outside the top N
# distinct consumers a worker counts apart; beyond it they are counted as OTHER_CONSUMERS
# (a bound on memory: consumers are authenticated names, but a JWT issuer can mint many)
MAX_TRACKED_CONSUMERS = 10_000


def status_label(status: int, exact: bool) -> str:
    return str(status) if exact else status_class(status)


class RouteCounters:
    """One route's counters since the worker started."""

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
    """The worker's counters. `add(batch)` counts a batch of finished requests."""

    def __init__(self, exact_status: bool = False, consumers: int = 0) -> None:
        self.exact_status = exact_status
        self.consumers = consumers  # the top N consumers labelled; 0: no consumer metric
        self.routes: dict[str, RouteCounters] = {}
        self.by_consumer: dict[tuple[str, int], int] = {}  # (consumer, status) -> requests
        self._consumer_names: set[str] = set()
        self.in_flight = 0  # requests in progress, set by the reader before a snapshot

    def add(self, batch: Batch) -> None:
        routes = self.routes
        for route, figures in batch.routes.items():
            counters = routes.get(route)
            if counters is None:
                counters = routes[route] = RouteCounters()
            requests = counters.requests
            for (method, status, cache, refused), n in figures.outcomes.items():
                key = (method, status, cache)
                requests[key] = requests.get(key, 0) + n
                if refused:
                    counters.refusals[refused] = counters.refusals.get(refused, 0) + n
            for into, counts in (
                (counters.durations, figures.latency),
                (counters.upstream, figures.upstream),
            ):
                for i, n in counts.items():
                    into[TO_PROMETHEUS[i]] += n
            counters.duration_sum += figures.latency_sum
            counters.upstream_sum += figures.upstream_sum
            counters.received += figures.bytes_in
            counters.sent += figures.bytes_out
        if self.consumers and batch.consumers:
            self._add_consumers(batch.consumers)

    def _add_consumers(self, counts: dict[tuple[str, int], int]) -> None:
        names = self._consumer_names
        table = self.by_consumer
        for (consumer, status), n in counts.items():
            if consumer not in names:
                if len(names) >= MAX_TRACKED_CONSUMERS:
                    consumer = OTHER_CONSUMERS
                else:
                    names.add(consumer)
            key = (consumer, status)
            table[key] = table.get(key, 0) + n

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
        consumers: dict[tuple[str, str], int] = {}
        for (consumer, status), count in self.by_consumer.items():
            labels = (consumer, status_label(status, exact))
            consumers[labels] = consumers.get(labels, 0) + count
        return {
            "requests": [[*key, count] for key, count in requests.items()],
            "bytes": sizes,
            "durations": durations,
            "upstream": upstream,
            "refusals": refusals,
            "consumers": [[*key, count] for key, count in consumers.items()],
            "in_flight": self.in_flight,
        }


def merge(snapshots: list[dict[str, Any]], consumers: int = 0) -> dict[str, Any]:
    """The sum of several workers' snapshots, in the same form; the consumer counts
    capped to the `consumers` busiest (by requests, all workers together), the others
    summed as OTHER_CONSUMERS (0: none)."""
    requests: dict[tuple[str, ...], int] = {}
    sizes: dict[str, list[int]] = {}
    histograms: dict[str, dict[str, list[Any]]] = {"durations": {}, "upstream": {}}
    refusals: dict[tuple[str, str], int] = {}
    by_consumer: dict[tuple[str, str], int] = {}
    in_flight = 0
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
        for consumer, status, count in snap.get("consumers", ()):
            by_consumer[(consumer, status)] = by_consumer.get((consumer, status), 0) + count
        in_flight += int(snap.get("in_flight", 0))
    return {
        "requests": [[*key, count] for key, count in requests.items()],
        "bytes": [[route, a, b] for route, (a, b) in sizes.items()],
        "durations": [[r, c, t] for r, (c, t) in histograms["durations"].items()],
        "upstream": [[r, c, t] for r, (c, t) in histograms["upstream"].items()],
        "refusals": [[route, policy, n] for (route, policy), n in refusals.items()],
        "consumers": _top_consumers(by_consumer, consumers),
        "in_flight": in_flight,
    }


def _top_consumers(counts: dict[tuple[str, str], int], top: int) -> list[list[Any]]:
    """(consumer, status, requests) rows: the `top` consumers with the most requests
    under their name (ties: by name), every other one under OTHER_CONSUMERS."""
    if top <= 0 or not counts:
        return []
    totals: dict[str, int] = {}
    for (consumer, _), n in counts.items():
        totals[consumer] = totals.get(consumer, 0) + n
    named = sorted((c for c in totals if c != OTHER_CONSUMERS), key=lambda c: (-totals[c], c))[:top]
    kept = set(named)
    rows: dict[tuple[str, str], int] = {}
    for (consumer, status), n in counts.items():
        key = (consumer if consumer in kept else OTHER_CONSUMERS, status)
        rows[key] = rows.get(key, 0) + n
    return [[consumer, status, n] for (consumer, status), n in rows.items()]
