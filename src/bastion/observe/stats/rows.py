"""Intervals to the rows of the statistics file: route figures per period, and the top-K
counts of a flush period.

Pure data work, no I/O: the writer thread calls it with a batch of Intervals and writes
what it returns.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping

from bastion.observe.interval import Interval, RouteFigures
from bastion.observe.stats.agents import AgentFamilies
from bastion.observe.stats.countries import CountryLookup
from bastion.observe.stats.schema import COUNTERS, INTERESTING_CODES, Resolution
from bastion.observe.stats.sketch import TopSketch

__all__ = ["DIMENSIONS", "RouteRows", "TopCounts", "figures_row"]

# the top-K dimensions of the statistics, in the order of the summary
DIMENSIONS = (
    "paths",
    "not_found",
    "clients",
    "consumers",
    "browsers",
    "os",
    "devices",
    "bots",
    "referrers",
    "countries",
)
_WIDTH = len(COUNTERS)
_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
HIT_OUTCOMES = ("HIT", "STALE", "REVALIDATED")  # answered from the cache
_QUERY_START = re.compile(r"[?#;]")


def figures_row(figures: RouteFigures) -> list[float]:
    """One route's figures as the values of `COUNTERS`, in order."""
    status = figures.status
    codes = figures.codes
    cache = figures.cache
    hits = sum(cache.get(outcome, 0) for outcome in HIT_OUTCOMES)
    return [
        figures.requests,
        *(status.get(name, 0) for name in _CLASSES),
        *(codes.get(code, 0) for code in INTERESTING_CODES),
        hits,
        hits + cache.get("MISS", 0),
        sum(figures.refusals.values()),
        figures.bytes_in,
        figures.bytes_out,
        figures.latency_sum,
        figures.upstream_sum,
        *figures.latency,
        *figures.upstream,
    ]


class RouteRows:
    """Route figures added up per (period start, route) at one resolution."""

    def __init__(self, resolution: Resolution) -> None:
        self.resolution = resolution
        self.rows: dict[tuple[int, str], list[float]] = {}

    def add(self, interval: Interval) -> None:
        t = self.resolution.start(interval.start)
        for route, figures in interval.routes.items():
            if not figures.requests:
                continue
            values = figures_row(figures)
            held = self.rows.get((t, route))
            if held is None:
                self.rows[(t, route)] = values
            else:
                self.rows[(t, route)] = [a + b for a, b in zip(held, values, strict=True)]

    def params(self) -> Iterable[tuple[object, ...]]:
        return ((t, route, *values) for (t, route), values in self.rows.items())


def referrer_pages(referrers: Mapping[str, int]) -> Counter[str]:
    """Referrers counted by page: without their query, fragment or path parameters, which
    carry what the statistics must not keep (an API key in the query of a page of the
    API itself, a session id, a reset token) and would split one page into many keys."""
    pages: Counter[str] = Counter()
    for referrer, n in referrers.items():
        if referrer:
            cut = _QUERY_START.search(referrer)
            pages[referrer if cut is None else referrer[: cut.start()]] += n
    return pages


class TopCounts:
    """The top-K counts of every dimension since the last flush, bounded (`TopSketch`).

    User-Agent strings become browser / OS / device / bot families here, client
    addresses countries (when a database is configured): in the writer's thread, once per
    distinct value of a batch."""

    def __init__(
        self, capacity: int, agents: AgentFamilies, countries: CountryLookup | None
    ) -> None:
        self.capacity = capacity
        self.agents = agents
        self.countries = countries
        self.sketches = {name: TopSketch(capacity) for name in DIMENSIONS}

    def add(self, interval: Interval) -> None:
        sketches = self.sketches
        top = interval.top
        for name in ("paths", "not_found", "clients"):
            counts = top.get(name)
            if counts:
                sketches[name].add(counts)
        referrers = top.get("referrers")
        if referrers:
            sketches["referrers"].add(referrer_pages(referrers))
        for consumer, (requests, limited) in interval.consumers.items():
            sketches["consumers"].add_one(consumer, requests, limited)
        agents = top.get("agents")
        if agents:
            for families, n in self.agents.count(agents).items():
                if families.bot is not None:
                    sketches["bots"].add_one(families.bot, n)
                    continue
                sketches["browsers"].add_one(families.browser, n)
                sketches["os"].add_one(families.os, n)
                sketches["devices"].add_one(families.device, n)
        clients = top.get("clients")
        if clients and self.countries is not None:
            sketches["countries"].add(self.countries.count(clients))

    def __bool__(self) -> bool:
        return any(self.sketches.values())

    def take(self) -> dict[str, list[tuple[str, int, int]]]:
        """Every dimension's reduced summary, and start afresh."""
        return {name: sketch.take() for name, sketch in self.sketches.items() if sketch}
