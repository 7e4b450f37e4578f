"""The writing side of the statistics: a sink for the recorder's Intervals and the thread
that writes them into the statistics file.

`StatsWriter.add` runs on the event loop once a second and only enqueues the Interval.
A daemon thread of the worker takes the queued Intervals, turns them into rows (`rows.py`:
route figures, User-Agent families, countries, top-K sketches) and writes them in one
transaction with upsert-add, so that every worker of an instance adds into the same rows.

What is written when:
- route figures: every second, into the `seconds`, `minutes` and `hours` rows the second
  belongs to (written through, so every window includes the last second written);
- top-K counts: at most every `TOP_FLUSH` seconds and when a minute closes, each
  dimension's reduced summary added into the minute's and the hour's rows;
- the 5xx answers of the second (at most 20 per worker and second);
- once a minute, retention and the reduction of grown summaries (`prune.py`);
- with ``state.redis``: the worker's minute rows and top-K counts to Redis every
  `stats.cluster_interval` seconds (`cluster.py`), in this thread, never on the loop.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from pathlib import Path

from bastion.clock import SYSTEM_CLOCK, Clock
from bastion.observe.interval import Interval
from bastion.observe.stats.agents import AgentFamilies
from bastion.observe.stats.cluster import ClusterPublisher
from bastion.observe.stats.countries import open_lookup
from bastion.observe.stats.prune import TOP_KEPT, prune
from bastion.observe.stats.rows import RouteRows, TopCounts
from bastion.observe.stats.schema import (
    FIGURES,
    MINUTES,
    RESOLUTIONS,
    TOP_TABLES,
    open_writer,
    stats_path,
)
from bastion.observe.stats.sketch import clip

__all__ = ["StatsWriter"]

log = logging.getLogger("bastion.stats")

TOP_FLUSH = 5  # seconds of top-K counts kept in memory before they are written
PRUNE_EVERY = 60.0  # seconds between two retention passes
WAIT = 1.0  # the thread wakes up at least this often (idle flushes, pruning)

_COLUMNS = ", ".join(FIGURES)
_UPSERTS = {
    resolution.table: (
        f"INSERT INTO {resolution.table} (t, route, {_COLUMNS}) "
        f"VALUES (?, ?, {', '.join('?' * len(FIGURES))}) "
        "ON CONFLICT (t, route) DO UPDATE SET "
        + ", ".join(f"{col} = {col} + excluded.{col}" for col in FIGURES)
    )
    for resolution in RESOLUTIONS
}
_TOP_UPSERTS = {
    table: (
        f"INSERT INTO {table} (dim, t, key, n, extra) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (dim, t, key) DO UPDATE SET n = n + excluded.n, extra = extra + excluded.extra"
    )
    for table, _ in TOP_TABLES
}
_ERROR_INSERT = (
    "INSERT INTO errors (time, route, method, path, status, request_id, upstream) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class _Flush:
    """A request to write everything held in memory, answered by setting `done`."""

    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


class StatsBook:
    """The statistics file as one writer thread sees it: batches of Intervals in, rows
    out. Not thread-safe: one thread owns it."""

    def __init__(
        self,
        path: Path,
        geoip: str | None = None,
        top_size: int = TOP_KEPT,
        cluster: ClusterPublisher | None = None,
    ) -> None:
        self.cluster = cluster
        self.db = open_writer(path)
        self.countries = open_lookup(geoip)
        self.top = TopCounts(top_size, AgentFamilies(), self.countries)
        self._opened: int | None = None  # start of the first Interval of the top counts

    def write(self, intervals: list[Interval]) -> None:
        """Add a batch of Intervals (one worker's, in order) to the file."""
        tables = [RouteRows(resolution) for resolution in RESOLUTIONS]
        tops: list[tuple[int, dict[str, list[tuple[str, int, int]]]]] = []
        errors: list[tuple[object, ...]] = []
        for interval in intervals:
            if self._opened is not None and (
                MINUTES.start(interval.start) != MINUTES.start(self._opened)
                or interval.start - self._opened >= TOP_FLUSH
            ):
                minute, counted = self._take_top()
                if counted:
                    tops.append((minute, counted))
            if self._opened is None:
                self._opened = interval.start
            for rows in tables:
                rows.add(interval)
            self.top.add(interval)
            errors.extend(_error_row(error) for error in interval.errors)
        if self.cluster is not None:
            self.cluster.book.add_rows(tables[RESOLUTIONS.index(MINUTES)].rows)
            for minute, counted in tops:
                self.cluster.book.add_top(minute, counted)
        self._commit(tables, tops, errors)

    def flush(self, now: float | None = None) -> None:
        """Write the top-K counts held in memory: all of them (now None), or those of a
        flush period that has ended by `now` (the clock's time)."""
        if self._opened is None:
            return
        if now is not None and now < self._opened + TOP_FLUSH + 1:
            return
        minute, counted = self._take_top()
        if counted:
            if self.cluster is not None:
                self.cluster.book.add_top(minute, counted)
            self._commit([], [(minute, counted)], [])

    def prune(self, now: float) -> None:
        prune(self.db, now)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self.countries is not None:
                self.countries.close()
            self.db.close()

    def _take_top(self) -> tuple[int, dict[str, list[tuple[str, int, int]]]]:
        assert self._opened is not None
        minute = MINUTES.start(self._opened)
        self._opened = None
        return minute, self.top.take()

    def _commit(
        self,
        tables: list[RouteRows],
        tops: list[tuple[int, dict[str, list[tuple[str, int, int]]]]],
        errors: list[tuple[object, ...]],
    ) -> None:
        if not (tops or errors or any(rows.rows for rows in tables)):
            return  # an idle second: no transaction, no lock taken from the other workers
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for rows in tables:
                if rows.rows:
                    db.executemany(_UPSERTS[rows.resolution.table], rows.params())
            for minute, dims in tops:
                for table, resolution in TOP_TABLES:
                    t = resolution.start(minute)
                    db.executemany(
                        _TOP_UPSERTS[table],
                        (
                            (dim, t, key, n, extra)
                            for dim, counted in dims.items()
                            for key, n, extra in counted
                        ),
                    )
            if errors:
                db.executemany(_ERROR_INSERT, errors)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise


def _error_row(error: dict[str, object]) -> tuple[object, ...]:
    return (
        error.get("time", 0.0),
        error.get("route"),
        error.get("method"),
        clip(str(error.get("path", ""))),
        error.get("status"),
        error.get("request_id"),
        error.get("upstream"),
    )


class StatsWriter:
    """The recorder's sink for the statistics file of `data_dir`.

    `add` is called on the event loop once a second and only enqueues; `flush` waits
    until everything added was written; `close` writes the rest and stops the thread.
    `clock` decides retention (its wall-clock time), so tests can age the file."""

    def __init__(
        self,
        data_dir: Path,
        clock: Clock = SYSTEM_CLOCK,
        geoip: str | None = None,
        *,
        top_size: int = TOP_KEPT,
        cluster: ClusterPublisher | None = None,
    ) -> None:
        self.path = stats_path(data_dir)
        self._cluster = cluster
        self.clock = clock
        self._geoip = geoip
        self._top_size = top_size
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._put = self._queue.put
        self._closed = False
        self._failed = False
        self._error_logged = -PRUNE_EVERY
        self._thread = threading.Thread(target=self._run, name="bastion-stats", daemon=True)
        self._thread.start()

    def add(self, interval: Interval) -> None:
        """Queue one Interval (the recorder's sink; cheap: runs on the event loop)."""
        if not self._closed:
            self._put(interval)

    __call__ = add

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything added so far is in the file; False if it was not written
        in time (or the file cannot be written)."""
        if self._closed or not self._thread.is_alive():
            return False
        request = _Flush()
        self._put(request)
        return request.done.wait(timeout) and not self._failed

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._put(_STOP)
        self._thread.join(timeout)

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        try:
            book = StatsBook(self.path, self._geoip, self._top_size, self._cluster)
        except (sqlite3.Error, OSError, ValueError) as exc:
            log.error("stats: cannot open %s: %s; no statistics are kept", self.path, exc)
            self._failed = True
            self._closed = True
            self._answer_waiting()
            return
        next_prune = 0.0
        while True:
            batch: list[Interval] = []
            flushes: list[_Flush] = []
            stop = False
            try:
                item: object = self._queue.get(timeout=WAIT)
                while True:
                    if isinstance(item, Interval):
                        batch.append(item)
                    elif isinstance(item, _Flush):
                        flushes.append(item)
                    elif item is _STOP:
                        stop = True
                    item = self._queue.get_nowait()
            except queue.Empty:
                pass
            now = self.clock.time()
            try:
                if batch:
                    book.write(batch)
                book.flush(None if (flushes or stop) else now)
                if now >= next_prune:
                    book.prune(now)
                    next_prune = now + PRUNE_EVERY
            except sqlite3.Error as exc:
                self._log_error(now, exc)
            if self._cluster is not None:
                # after the file: a Redis that does not answer delays no local figure
                self._cluster.tick(now, force=stop)
            for request in flushes:
                request.done.set()
            if stop:
                try:
                    book.close()
                except sqlite3.Error as exc:
                    self._log_error(now, exc)
                return

    def _log_error(self, now: float, exc: Exception) -> None:
        # a full disk or a file locked for long fails every second: say it once a minute
        if now - self._error_logged >= PRUNE_EVERY:
            self._error_logged = now
            log.warning(
                "stats: cannot write %s: %s; figures of this second are lost", self.path, exc
            )

    def _answer_waiting(self) -> None:
        """Release the callers of `flush` who queued before the writer gave up."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Flush):
                item.done.set()
