"""The recorder: once a wall-clock second, what the tap counted becomes that second's
`Interval`.

A task on the worker's loop wakes at each second boundary of the worker's clock, takes the
tap's batches (`tap.py`), adds them to the Prometheus counters when metrics are on, and
hands each closed second to every sink (`add_sink`: the statistics store, the live
view…). Sinks run on the loop: they should queue their work, not do it.

The recorder tells the tap when the open second ends (`RequestTap.set_boundary`, in the
request clock's time, `http.context.request_clock`), and the tap starts new counts for a
request that finishes later: every request lands in the second it finished in, even when
the timer runs late. A scrape calls `flush()` first, so the counters it reads hold every
request finished until then. A second with no requests is still closed (a live view shows
the zero), but after a stall only the last empty second is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from bastion.clock import SYSTEM_CLOCK, Clock
from bastion.observe.interval import Interval

if TYPE_CHECKING:
    from bastion.http.request import Request
    from bastion.observe.aggregate import Batch
    from bastion.observe.metrics import RequestMetrics

log = logging.getLogger("bastion.observe")

Sink = Callable[[Interval], None]
# wake this long after the boundary: a timer a little early would find the second open
_LATE = 0.002
_NO_BOUNDARY = float("inf")


def _none_in_flight() -> int:
    return 0


class Tap(Protocol):
    """What the recorder asks of a request tap (`tap.RequestTap`, `rows.RowTap`)."""

    top: bool  # hand the top-K dimensions over (when the tap keeps details)
    on_full: Callable[[], None]

    def record(self, req: Request) -> None: ...

    def take(self, wall_offset: float) -> list[tuple[float, Batch]]: ...

    def set_boundary(self, boundary: float) -> None: ...

    def __len__(self) -> int: ...


def request_tap(detailed: bool) -> Tap:
    """The tap that is cheap on the build that runs: counting at once when `tap.py` is
    compiled, a row per request counted once a second when it is Python (`rows.py`)."""
    from bastion.observe import tap

    if tap.__file__ is not None and not tap.__file__.endswith(".py"):
        return tap.RequestTap(detailed=detailed)
    from bastion.observe.rows import RowTap

    return RowTap(detailed=detailed)


class Recorder:
    """One worker's requests, counted per wall-clock second."""

    def __init__(
        self,
        tap: Tap,
        clock: Clock = SYSTEM_CLOCK,
        monotonic: Callable[[], float] | None = None,
        in_flight: Callable[[], int] = _none_in_flight,
    ) -> None:
        self.tap = tap
        self.clock = clock
        # the time base of the tap's times: `request_clock` (time.monotonic) in a worker,
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
        tap.top = False  # until a sink reads the top-K dimensions
        self._set_boundary(self.clock.time() - self.monotonic())

    def add_sink(self, sink: Sink, top: bool = True) -> None:
        """`sink(interval)` is called with each closed second, on the loop. With
        `top=False` the sink promises not to read `interval.top`: while no sink reads
        it, the top-K dimensions (paths, clients, user agents, ...) are not counted."""
        self.sinks.append(sink)
        self._top_readers += top
        self.tap.top = self._top_readers > 0

    def remove_sink(self, sink: Sink, top: bool = True) -> None:
        if sink in self.sinks:
            self.sinks.remove(sink)
            self._top_readers -= top
            self.tap.top = self._top_readers > 0

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
        """The tap counted more requests than it should hold: take them at the loop's
        next turn."""
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
        """Take what the tap counted; close (and hand to the sinks) every second that
        has ended by the clock."""
        self._flush_soon = False
        wall = self.clock.time()
        offset = wall - self.monotonic()  # request clock time + offset = epoch time
        taken = self.tap.take(offset)
        current = self.current
        if not self.sinks:  # nobody reads Intervals: the counters only
            for _, batch in taken:
                self._count(batch, None)
            current.start = max(current.start, int(wall))
            self._set_boundary(offset)
            return
        for boundary, batch in taken:
            if not batch.requests:
                continue
            # its requests finished in the second that ends at its boundary (+inf: the
            # tap counted them before this recorder set one)
            if boundary != _NO_BOUNDARY:
                second = round(boundary + offset) - 1
                if second > current.start:
                    current = self._close(current, second)
            self._count(batch, current)
        last_ended = int(wall) - 1
        while current.start <= last_ended:
            # the next second, or after a stall the last one ended (closed empty)
            current = self._close(current, max(current.start + 1, last_ended))
        self._set_boundary(offset)

    def _close(self, interval: Interval, following: int) -> Interval:
        """Hand `interval` to the sinks; the open second is now `following`."""
        interval.in_flight = self.in_flight()
        self._emit(interval)
        self.current = Interval(following)
        return self.current

    def _set_boundary(self, offset: float) -> None:
        self.tap.set_boundary(self.current.start + 1 - offset)

    def _count(self, batch: Batch, interval: Interval | None) -> None:
        if not batch.requests:
            return
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
