"""The recorder: once a wall-clock second, the tap's rows become that second's `Interval`.

A task on the worker's loop wakes at each second boundary of the worker's clock, drains
the tap (`tap.py`), counts the batch (`aggregate.py`), adds it to the Prometheus counters
when metrics are on, and hands the closed second to every sink (`add_sink`: the
statistics store, the live view…). Sinks run on the loop: they should queue their work,
not do it.

Rows carry the time they finished at (`http.context.request_clock`, monotonic), in
order, so a batch drained a little after a boundary is cut at the boundary (a bisection):
every request lands in the second it finished in. A scrape calls `flush()` first, so the
counters it reads hold every request finished until then. A second with no requests is
still closed (a live view shows the zero), but after a stall only the last empty second is.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bastion.clock import SYSTEM_CLOCK, Clock
from bastion.observe.aggregate import count
from bastion.observe.interval import Interval
from bastion.observe.tap import END, RequestTap

if TYPE_CHECKING:
    from bastion.observe.metrics import RequestMetrics

log = logging.getLogger("bastion.observe")

Sink = Callable[[Interval], None]
# wake this long after the boundary: a timer a little early would find the second open
_LATE = 0.002


def _none_in_flight() -> int:
    return 0


class Recorder:
    """One worker's requests, counted per wall-clock second."""

    def __init__(
        self,
        tap: RequestTap,
        clock: Clock = SYSTEM_CLOCK,
        monotonic: Callable[[], float] | None = None,
        in_flight: Callable[[], int] = _none_in_flight,
    ) -> None:
        self.tap = tap
        self.clock = clock
        # the time base of the rows' `now`: `request_clock` (time.monotonic) in a worker,
        # which is the system clock's `monotonic`; a test's clock brings its own
        self.monotonic = monotonic or clock.monotonic
        self.in_flight = in_flight
        self.sinks: list[Sink] = []
        self._top_readers = 0  # sinks that read the top-K dimensions
        self.metrics: RequestMetrics | None = None  # the Prometheus counters, when on
        self.current = Interval(int(clock.time()))  # the open second
        self.last: Interval | None = None  # the last second closed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._flush_soon = False
        tap.on_full = self._full

    def add_sink(self, sink: Sink, top: bool = True) -> None:
        """`sink(interval)` is called with each closed second, on the loop. With
        `top=False` the sink promises not to read `interval.top`: while no sink reads
        it, the top-K dimensions (paths, clients, user agents, ...) are not counted."""
        self.sinks.append(sink)
        self._top_readers += top

    def remove_sink(self, sink: Sink, top: bool = True) -> None:
        if sink in self.sinks:
            self.sinks.remove(sink)
            self._top_readers -= top

    # ------------------------------------------------------------- the timer
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._schedule()

    def _schedule(self) -> None:
        assert self._loop is not None
        delay = self.current.start + 1 - self.clock.time()
        self._timer = self._loop.call_later(max(delay, 0.0) + _LATE, self._on_timer)

    def _on_timer(self) -> None:
        try:
            self.flush()
        finally:
            self._schedule()

    def _full(self) -> None:
        """The tap holds more rows than it should: count them at the loop's next turn."""
        if self._flush_soon:
            return
        self._flush_soon = True
        if self._loop is not None:
            self._loop.call_soon(self.flush)
        else:
            self.flush()

    def close(self) -> None:
        """Stop the timer; count what is left and hand the open second to the sinks
        (a worker that stops keeps its last requests)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()
        if self.current.routes:
            self._emit(self.current)
            self.current = Interval(self.current.start + 1)

    # ------------------------------------------------------------ the counting
    def flush(self) -> None:
        """Count what the tap holds; close (and hand to the sinks) every second that
        has ended by the clock."""
        self._flush_soon = False
        wall = self.clock.time()
        offset = wall - self.monotonic()  # row time + offset = epoch time
        rows = self.tap.drain()
        fields = self.tap.fields
        current = self.current
        if not self.sinks:  # nobody reads Intervals: the counters only
            self._count(rows, None, offset)
            current.start = max(current.start, int(wall))
            return
        while wall >= current.start + 1:
            boundary = current.start + 1 - offset
            cut = bisect_left(rows[END::fields], boundary) * fields
            self._count(rows[:cut], current, offset)
            rows = rows[cut:]
            current.in_flight = self.in_flight()
            self._emit(current)
            # the next second with requests, but never past the last second ended
            last_ended = int(wall) - 1
            first = int(rows[END] + offset) if rows else last_ended
            current = self.current = Interval(max(current.start + 1, min(first, last_ended)))
        self._count(rows, current, offset)

    def _count(self, rows: list[Any], interval: Interval | None, offset: float) -> None:
        if not rows:
            return
        batch = count(rows, offset, self._top_readers > 0, self.tap.fields)
        if interval is not None:
            batch.add_to(interval)
        if self.metrics is not None:
            self.metrics.add(batch)

    def _emit(self, interval: Interval) -> None:
        self.last = interval
        for sink in list(self.sinks):
            try:
                sink(interval)
            except Exception:  # a sink's failure must not stop the counting
                log.exception("a traffic figures sink failed")
