"""The reading side of the statistics: summaries of a window, the last seconds, the totals
of a period. Usable from any process (the admin API in a worker, `bastion stats`, the
alerts), while the workers write (WAL readers) and after they stopped.

Windows and their series steps:

| window | rows read | series step | points |
| --- | --- | --- | --- |
| 5m  | seconds | 5 s    | 60  |
| 1h  | minutes | 60 s   | 60  |
| 24h | quarter hours | 15 min | 96  |
| 7d  | hours   | 1 h    | 168 |
| 30d | hours   | 6 h    | 120 |

A window ends with the series step holding now (its figures so far) and reaches back
the window's length from the end of that step, leaving out the second in progress (its
rows are still being written).

Top-K tables come from the summaries of the periods the window overlaps: minutes for 5m
and 1h, hours for 24h and 7d, days (UTC) for 30d. A top table may thus reach back up to
one such period further than the window (a 24h window's top paths cover 24 to 25 hours):
the price of reading 24 hour summaries instead of 1440 minute ones.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from operator import add
from pathlib import Path
from typing import Any

from bastion.clock import SYSTEM_CLOCK, Clock
from bastion.observe.stats.percentiles import percentile, percentiles
from bastion.observe.stats.rows import DIMENSIONS
from bastion.observe.stats.schema import (
    DAYS,
    FIGURES,
    HOURS,
    LATENCY,
    MINUTES,
    QUARTERS,
    RESOLUTIONS,
    SECONDS,
    UPSTREAM,
    Resolution,
    open_reader,
    stats_path,
)

__all__ = ["WINDOWS", "StatsStore", "Window"]

TOP_SHOWN = 10  # rows of each top table in a summary
ERRORS_SHOWN = 20  # recent 5xx answers in a summary
LIVE_LAG = 0.5  # a second is reported once it ended this long ago (workers write it then)
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
REFUSAL_CODES = ("401", "403", "429")


@dataclass(frozen=True)
class Window:
    name: str
    resolution: Resolution
    span: int  # seconds
    step: int  # seconds per point of the series
    top: tuple[str, Resolution]  # the top-K table read, and its period

    def bounds(self, now: float) -> tuple[int, int, int]:
        """(since, end, until): the window's series steps cover [since, end); rows read
        start in [since, min(end, until)); until is now (the second in progress is left
        out: its rows are still being written)."""
        until = int(now)
        end = (until // self.step + 1) * self.step
        return end - self.span, end, until


WINDOWS = {
    window.name: window
    for window in (
        Window("5m", SECONDS, 300, 5, ("top_minutes", MINUTES)),
        Window("1h", MINUTES, 3600, 60, ("top_minutes", MINUTES)),
        Window("24h", QUARTERS, 86400, 900, ("top_hours", HOURS)),
        Window("7d", HOURS, 7 * 86400, 3600, ("top_hours", HOURS)),
        Window("30d", HOURS, 30 * 86400, 6 * 3600, ("top_days", DAYS)),
    )
}

# total(): a float sum (exact for counts below 2**53), twice as fast as sum() in SQLite
_SUMS = ", ".join(f"total({col})" for col in FIGURES)
_ROUTE_SUMS = ", ".join(f"total({col})" for col in ("requests", "s5xx", *LATENCY))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _share(part: float, whole: float) -> float:
    return round(part / whole, 6) if whole else 0.0


def totals(sums: Sequence[float], seconds: float) -> dict[str, Any]:
    """The "totals" object of a summary from the sums of `FIGURES`, in order."""
    figures = dict(zip(FIGURES, sums, strict=True))
    requests = int(figures["requests"])
    p50, p95, p99 = percentiles([figures[col] for col in LATENCY])
    u50, u95, u99 = percentiles([figures[col] for col in UPSTREAM])
    latency_sum = figures["latency_sum"]
    hits, lookups = int(figures["cache_hits"]), int(figures["cache_lookups"])
    return {
        "requests": requests,
        "rps": round(requests / seconds, 6) if seconds > 0 else 0.0,
        "status": {name: int(figures[f"s{name}"]) for name in CLASSES},
        "rate_4xx": _share(figures["s4xx"], requests),
        "rate_5xx": _share(figures["s5xx"], requests),
        "latency": {"p50": _round(p50), "p95": _round(p95), "p99": _round(p99)},
        "upstream_latency": {"p50": _round(u50), "p95": _round(u95), "p99": _round(u99)},
        "upstream_share": (
            round(min(figures["upstream_sum"] / latency_sum, 1.0), 6) if latency_sum > 0 else None
        ),
        "bytes_in": int(figures["bytes_in"]),
        "bytes_out": int(figures["bytes_out"]),
        "cache": {
            "hits": hits,
            "lookups": lookups,
            "ratio": round(hits / lookups, 6) if lookups else None,
        },
        "refusals": {code: int(figures[f"c{code}"]) for code in REFUSAL_CODES},
    }


_INDEX = {name: i for i, name in enumerate(FIGURES)}
_LATENCY_AT = slice(_INDEX[LATENCY[0]], _INDEX[LATENCY[-1]] + 1)


def _series(points: list[int], by_point: dict[int, Sequence[float]]) -> dict[str, Any]:
    empty: Sequence[float] = [0.0] * len(FIGURES)
    rows = [by_point.get(t, empty) for t in points]

    def column(name: str) -> list[int]:
        i = _INDEX[name]
        return [int(values[i]) for values in rows]

    def quantile(q: float) -> list[float | None]:
        return [_round(percentile(values[_LATENCY_AT], q)) for values in rows]

    return {
        "t": points,
        "requests": column("requests"),
        "status": {name: column(f"s{name}") for name in CLASSES},
        "p50": quantile(0.5),
        "p95": quantile(0.95),
        "p99": quantile(0.99),
        "bytes_in": column("bytes_in"),
        "bytes_out": column("bytes_out"),
        "refusals": {code: column(f"c{code}") for code in REFUSAL_CODES},
    }


class StatsStore:
    """Read-only access to the statistics file of `data_dir` (it may not exist yet: then
    every figure is zero)."""

    def __init__(self, data_dir: Path, clock: Clock = SYSTEM_CLOCK, top: int = TOP_SHOWN) -> None:
        self.path = stats_path(data_dir)
        self.clock = clock
        self.top = top
        # one read connection per thread, kept: opening one parses the schema again, which
        # cost more than the queries of the live view and the alerts it served
        self._local = threading.local()

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection | None]:
        try:
            st = os.stat(self.path)
        except OSError:
            yield None  # nothing recorded yet
            return
        file = (st.st_dev, st.st_ino)
        held: tuple[tuple[int, int], sqlite3.Connection] | None = getattr(self._local, "db", None)
        if held is not None and held[0] != file:  # the file was removed or replaced
            held[1].close()
            held = self._local.db = None
        if held is None:
            db = open_reader(self.path)
            if db is None:
                yield None
                return
            held = self._local.db = (file, db)
        try:
            yield held[1]
        except sqlite3.Error:
            self._local.db = None
            held[1].close()
            raise

    # ------------------------------------------------------------------ summary
    def summary(self, window: str, now: float | None = None) -> dict[str, Any]:
        """Everything about one window ("5m", "1h", "24h", "7d", "30d"): totals, series,
        routes, top tables, recent 5xx answers (see docs/observability.md)."""
        try:
            spec = WINDOWS[window]
        except KeyError:
            raise ValueError(f"unknown window {window!r} (one of {', '.join(WINDOWS)})") from None
        now = self.clock.time() if now is None else now
        since, end, until = spec.bounds(now)
        table = spec.resolution.table
        stop = min(end, until)
        with self._reader() as db:
            by_point = self._by_point(db, table, spec.step, since, stop)
            routes = self._routes(db, table, since, stop)
            top_table, top_period = spec.top
            top_since = top_period.start(since)
            top = {dim: self._top(db, top_table, dim, top_since, end) for dim in DIMENSIONS}
            errors = self._errors(db, since, until)
        everything = [0.0] * len(FIGURES)
        for values in by_point.values():
            everything[:] = map(add, everything, values)
        return {
            "window": spec.name,
            "since": since,
            "until": until,
            "step": spec.step,
            "totals": totals(everything, until - since),
            "series": _series(
                list(range(since // spec.step * spec.step, end, spec.step)), by_point
            ),
            "routes": routes,
            "top": top,
            "recent_errors": errors,
        }

    def _by_point(
        self, db: sqlite3.Connection | None, table: str, step: int, since: int, stop: int
    ) -> dict[int, Sequence[float]]:
        """The sums of FIGURES per series step (the totals add them up)."""
        if db is None:
            return {}
        query = (
            f"SELECT (t / {step}) * {step} AS point, {_SUMS} FROM {table} "
            "WHERE t >= ? AND t < ? GROUP BY point"
        )
        return {row[0]: row[1:] for row in db.execute(query, (since, stop))}

    def _routes(
        self, db: sqlite3.Connection | None, table: str, since: int, stop: int
    ) -> list[dict[str, Any]]:
        # a query of its own, of the few columns it needs: grouping by step and route at
        # once costs an aggregate of every column per group
        if db is None:
            return []
        query = (
            f"SELECT route, {_ROUTE_SUMS} FROM {table} WHERE t >= ? AND t < ? "
            "GROUP BY route ORDER BY 2 DESC, route"
        )
        return [
            {
                "route": route,
                "requests": int(requests),
                "error_rate": _share(errors, requests),
                "p95": _round(percentile(latency, 0.95)),
            }
            for route, requests, errors, *latency in db.execute(query, (since, stop))
        ]

    def _sums(
        self,
        db: sqlite3.Connection | None,
        table: str,
        since: int,
        end: int,
        route: str | None = None,
    ) -> list[float]:
        if db is None:
            return [0] * len(FIGURES)
        query = f"SELECT {_SUMS} FROM {table} WHERE t >= ? AND t < ?"
        params: tuple[object, ...] = (since, end)
        if route is not None:
            query += " AND route = ?"
            params += (route,)
        return list(db.execute(query, params).fetchone())

    def _top(
        self, db: sqlite3.Connection | None, table: str, dim: str, since: int, end: int
    ) -> list[dict[str, Any]]:
        if db is None:
            return []
        query = (
            f"SELECT key, sum(n) AS total, sum(extra) FROM {table} "
            "WHERE dim = ? AND t >= ? AND t < ? GROUP BY key ORDER BY total DESC, key LIMIT ?"
        )
        rows = db.execute(query, (dim, since, end, self.top)).fetchall()
        if dim == "consumers":
            return [
                {"key": key, "requests": int(n), "limited": min(int(extra), int(n))}
                for key, n, extra in rows
            ]
        return [{"key": key, "requests": int(n)} for key, n, _ in rows]

    def _errors(
        self, db: sqlite3.Connection | None, since: float, until: float
    ) -> list[dict[str, Any]]:
        if db is None:
            return []
        query = (
            "SELECT time, route, method, path, status, request_id, upstream FROM errors "
            "WHERE time >= ? AND time < ? ORDER BY time DESC LIMIT ?"
        )
        names = ("time", "route", "method", "path", "status", "request_id", "upstream")
        return [
            dict(zip(names, row, strict=True))
            for row in db.execute(query, (since, until + 1, ERRORS_SHOWN))
        ]

    # ------------------------------------------------------------------ live, period
    def live(self, seconds: int = 1, now: float | None = None) -> dict[str, Any]:
        """The last complete `seconds` seconds (the last one ended at least LIVE_LAG ago)."""
        seconds = max(1, int(seconds))
        now = self.clock.time() if now is None else now
        last = int(now - LIVE_LAG) - 1
        with self._reader() as db:
            sums = self._sums(db, SECONDS.table, last - seconds + 1, last + 1)
        figures = totals(sums, seconds)
        return {
            "time": last,
            "requests": figures["requests"],
            "rps": figures["rps"],
            "status": figures["status"],
            "p50": figures["latency"]["p50"],
            "p95": figures["latency"]["p95"],
            "p99": figures["latency"]["p99"],
            "upstream_p95": figures["upstream_latency"]["p95"],
            "upstream_share": figures["upstream_share"],
            "refusals": figures["refusals"],
            "bytes_in": figures["bytes_in"],
            "bytes_out": figures["bytes_out"],
            "cache_hits": figures["cache"]["hits"],
            "cache_lookups": figures["cache"]["lookups"],
        }

    def period(
        self, since: float, until: float, route: str | None = None, now: float | None = None
    ) -> dict[str, Any]:
        """The totals of the rows starting in [since, until), for one route or all, from
        the finest table still holding `since` (seconds for the last 15 minutes, then
        minutes for 48 hours, then hours)."""
        now = self.clock.time() if now is None else now
        resolution = next(
            (r for r in RESOLUTIONS if since >= r.start(now) - r.keep + r.step), HOURS
        )
        with self._reader() as db:
            sums = self._sums(db, resolution.table, math.ceil(since), math.ceil(until), route)
        return totals(sums, until - since)
