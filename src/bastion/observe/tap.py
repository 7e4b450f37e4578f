"""The only per-request code of the traffic figures, on the compiled build: each finished
request is counted at once into its route's tally, a compiled object of plain numbers
(this module is in setup.py's HOT list). The pure-Python build keeps a row per request
instead (`rows.py`, which says why); `recorder.request_tap` picks the tap of the build.
Once a second (and at each scrape) the recorder takes the tallies as `aggregate.Batch`es,
which the Prometheus counters and the second's `Interval` read.

Why count here rather than keep a row per request and count the batch once a second: a
row costs its allocations (the floats, the list's growth, the frees when the batch dies)
and the batch's column slices and sorts, some 2.7 k compiled instructions a request;
counting costs about 1 k, because the common case is cheap:
- the last route of the tap is remembered (no dict lookup while one route is busy);
- a route remembers its last outcome (method, status, cache, refusal: compared by
  identity, these are shared objects) and counts a run of equal outcomes in one C integer;
- under 50 ms a duration's bucket is read from a table and checked by two float compares
  (C doubles); slower ones search from the bucket counted last; each count is a C
  integer (`Cell`);
- sums are C doubles and integers.
The top-K dimensions (paths, clients, user agents, referrers) are runs too: a value equal
to the previous one bumps a count, a new one folds the run into a dict.

Second boundaries: the recorder sets `boundary`, the request clock's time at which the
open second ends. A request that finishes at or after it closes the tallies (they keep
the boundary they were counted under) and opens new ones, so every request is counted in
the second it finished in, even when the recorder's timer runs a little late.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from bastion.http.context import request_clock
from bastion.observe.aggregate import UNION_BOUNDS, UNROUTED, Batch, Outcome, RouteBatch
from bastion.observe.interval import MAX_ERRORS

if TYPE_CHECKING:
    from bastion.http.request import Request

# requests counted before an early take is asked for (`on_full`): the distinct values of
# the top-K dimensions and the 5xx details of a stalled second stay bounded
DEFAULT_CAP: Final = 10_000
_INF: Final = float("inf")
# bucket i holds the values in (_LOWER[i], _UPPER[i]]; the last one is +Inf
_UPPER: Final = (*UNION_BOUNDS, _INF)
_LOWER: Final = (-_INF, *UNION_BOUNDS)
_LAST_BUCKET: Final = len(UNION_BOUNDS)
# Below 50 ms every bound is a multiple of 0.5 ms: the bucket of a value there is read from
# a table by its 0.5 ms step (the bucket of the step's inside; a value exactly on a bound
# is one bucket higher in the table, and so is one a float rounding put past a step), then
# checked with two compares. Slower requests search from the bucket counted last.
_STEPS_PER_SECOND: Final = 2000.0
_TABLE_LIMIT: Final = 0.05
_TABLE: Final = tuple(
    bisect_left(UNION_BOUNDS, (step + 0.5) / _STEPS_PER_SECOND)
    for step in range(int(_TABLE_LIMIT * _STEPS_PER_SECOND))
)
# (end, route, method, raw path, status, request id, upstream) of a 5xx answer
ErrorRow = tuple[float, str, str, str, int, str, str]


def _bucket(value: float, hint: int) -> int:
    """The bucket of `value`, searched from `hint` (the last bucket counted into: the
    next value is most often there or next to it)."""
    i = hint
    while value > _UPPER[i]:
        i += 1
    while value <= _LOWER[i]:
        i -= 1
    return i


class Cell:
    """A count in a C integer: `list[int]` items are Python ints, and `counts[i] += 1`
    would allocate a new one past 256 (compiled, a generic in-place add besides)."""

    def __init__(self) -> None:
        self.n = 0


class Histogram:
    """Counts per bucket of `aggregate.UNION_BOUNDS` (the last one +Inf), and the sum."""

    def __init__(self) -> None:
        self.cells = [Cell() for _ in range(_LAST_BUCKET + 1)]
        self.total = 0.0
        self.hint = 0

    def add(self, value: float) -> None:
        """Count `value` (`RequestTap.record` does the common case inline)."""
        self.total += value
        # the table's bucket, else (slow, or no duration: negative) the last one
        i = _TABLE[int(value * _STEPS_PER_SECOND)] if 0.0 <= value < _TABLE_LIMIT else self.hint
        if value > _UPPER[i] or value <= _LOWER[i]:
            i = _bucket(value, i)
        self.hint = i
        self.cells[i].n += 1

    def reset(self) -> None:
        for cell in self.cells:
            cell.n = 0
        self.total = 0.0

    def buckets(self) -> dict[int, int]:
        """The buckets with values, as `aggregate.RouteBatch` holds them."""
        return {i: cell.n for i, cell in enumerate(self.cells) if cell.n}


class RouteTally:
    """One route's requests in the open second."""

    def __init__(self) -> None:
        self.outcomes: dict[Outcome, int] = {}
        # the run of equal outcomes being counted (folded into `outcomes` when it ends)
        self.method = ""
        self.status = 0
        self.cache = ""
        self.refused = ""
        self.run = 0
        self.latency = Histogram()
        self.upstream = Histogram()  # proxied requests only
        self.bytes_in = 0
        self.bytes_out = 0

    def fold(self) -> None:
        """Add the current run of outcomes to `outcomes`."""
        if self.run:
            key = (self.method, self.status, self.cache, self.refused)
            self.outcomes[key] = self.outcomes.get(key, 0) + self.run
            self.run = 0

    def reset(self) -> None:
        """Empty, to count another second."""
        self.outcomes = {}
        self.run = 0
        self.latency.reset()
        self.upstream.reset()
        self.bytes_in = self.bytes_out = 0

    def batch(self) -> RouteBatch:
        self.fold()
        return RouteBatch(
            self.outcomes,
            self.latency.buckets(),
            self.upstream.buckets(),
            self.latency.total,
            self.upstream.total,
            self.bytes_in,
            self.bytes_out,
        )


class TextRun:
    """A top-K dimension of text values: a run of equal values is counted in one
    integer, and folded into `counts` when the value changes. (Typed twice, here and in
    `BytesRun`: compiled, a typed compare checks identity and then the characters, a
    generic one goes through rich comparison.)"""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.last = ""
        self.n = 0

    def add(self, value: str) -> None:
        if value == self.last:
            self.n += 1
        else:
            if self.n:
                self.counts[self.last] = self.counts.get(self.last, 0) + self.n
            self.last = value
            self.n = 1

    def folded(self) -> dict[str, int]:
        if self.n:
            self.counts[self.last] = self.counts.get(self.last, 0) + self.n
            self.n = 0
        return self.counts


class BytesRun:
    """`TextRun` of field values as sent (bytes); `folded` gives them as text."""

    def __init__(self) -> None:
        self.counts: dict[bytes, int] = {}
        self.last = b""
        self.n = 0

    def add(self, value: bytes) -> None:
        if value == self.last:
            self.n += 1
        else:
            if self.n:
                self.counts[self.last] = self.counts.get(self.last, 0) + self.n
            self.last = value
            self.n = 1

    def folded(self) -> dict[str, int]:
        if self.n:
            self.counts[self.last] = self.counts.get(self.last, 0) + self.n
            self.n = 0
        decoded: dict[str, int] = {}
        for value, n in self.counts.items():
            text = value.decode("latin-1")
            decoded[text] = decoded.get(text, 0) + n
        return decoded


class Tallies:
    """Everything counted under one boundary: the routes, consumers, top-K dimensions
    and 5xx details."""

    def __init__(self, boundary: float) -> None:
        self.boundary = boundary
        self.requests = 0
        self.routes: dict[str, RouteTally] = {}
        self.consumers: dict[tuple[str, int], int] = {}
        self.paths = TextRun()
        self.not_found = TextRun()
        self.clients = TextRun()
        self.agents = BytesRun()
        self.referrers = BytesRun()
        self.errors: list[ErrorRow] = []

    def batch(self, wall_offset: float, top: bool) -> Batch:
        """These counts as a Batch; `wall_offset` turns the request clock's times into
        epoch seconds (the 5xx answers' times)."""
        batch = Batch(requests=self.requests, consumers=self.consumers)
        for name, tally in self.routes.items():
            batch.routes[name or UNROUTED] = tally.batch()
        if top:
            batch.top = {
                "paths": self.paths.folded(),
                "not_found": self.not_found.folded(),
                "clients": self.clients.folded(),
                "agents": self.agents.folded(),
                "referrers": self.referrers.folded(),
            }
        batch.errors = [
            {
                "time": end + wall_offset,
                "route": route or UNROUTED,
                "method": method,
                "path": path,
                "status": status,
                "request_id": request_id,
                "upstream": upstream or None,
            }
            for end, route, method, path, status, request_id, upstream in self.errors[-MAX_ERRORS:]
        ]
        return batch


class RequestTap:
    """The request-finish observer: `record(req)` counts a finished request; `take()`
    hands the counts over as batches and starts afresh.

    Without `detailed` only what the Prometheus counters need is counted (no 5xx details,
    no top-K dimensions); with it, both, and `take` hands the top-K dimensions over while
    `top` is set (the recorder sets it while a sink reads them). Past `cap` requests since
    the last take, `record` calls `on_full` (the recorder schedules an early take).
    """

    def __init__(self, cap: int = DEFAULT_CAP, detailed: bool = True) -> None:
        self.cap = cap
        self.detailed = detailed
        self.top = detailed
        self.on_full: Callable[[], None] = _nothing
        # the request clock's time the open second ends at (+inf: no seconds, the recorder
        # sets it); requests finishing at or after it go to new tallies
        self.boundary = _INF
        self.open = Tallies(_INF)
        self.closed: list[Tallies] = []  # earlier seconds', not yet taken
        self.size = 0  # requests counted since the last take
        # the route counted last, and its name (compared by identity: a route's name is
        # one object, shared by its requests)
        self.last_name: str | None = None
        self.last_route = RouteTally()
        # the tallies of the routes taken last, emptied, to count their next second with
        # (a route's tally is some 90 objects: made once, not each second)
        self.spare: dict[str, RouteTally] = {}

    def record(self, req: Request) -> None:
        end = req.ended or request_clock()
        if end >= self.boundary:
            self._roll(end)
        tallies = self.open
        tallies.requests += 1
        name = req.route_name
        if name is self.last_name:
            route = self.last_route
        else:
            found = tallies.routes.get(name)
            if found is None:
                # (taken out of `spare`: a tally counts for one Tallies only)
                found = self.spare.pop(name) if name in self.spare else RouteTally()
                tallies.routes[name] = found
            route = self.last_route = found
            self.last_name = name
        method = req.method
        status = req.status
        cache = req.cache
        refused = req.refused_by
        if (
            method is route.method
            and status == route.status
            and cache is route.cache
            and refused is route.refused
        ):
            route.run += 1
        else:
            route.fold()
            route.method = method
            route.status = status
            route.cache = cache
            route.refused = refused
            route.run = 1
        # the histograms, inline (a method call costs more than the rest on the pure
        # build): a table's bucket checked by two compares, else `Histogram.add`
        took = end - req.start
        latency = route.latency
        if 0.0 <= took < _TABLE_LIMIT:
            i = _TABLE[int(took * _STEPS_PER_SECOND)]
            if _LOWER[i] < took <= _UPPER[i]:
                latency.total += took
                latency.cells[i].n += 1
            else:
                latency.add(took)
        else:
            latency.add(took)
        took = req.upstream_time
        if took >= 0.0:  # proxied
            latency = route.upstream
            if took < _TABLE_LIMIT:
                i = _TABLE[int(took * _STEPS_PER_SECOND)]
                if _LOWER[i] < took <= _UPPER[i]:
                    latency.total += took
                    latency.cells[i].n += 1
                else:
                    latency.add(took)
            else:
                latency.add(took)
        route.bytes_in += req.body_bytes
        route.bytes_out += req.bytes_out
        consumer = req.consumer
        if consumer:
            key = (consumer, status)
            tallies.consumers[key] = tallies.consumers.get(key, 0) + 1
        if self.detailed:
            if status >= 500:
                tallies.errors.append(
                    (end, name, method, req.raw_path, status, req.request_id, req.upstream)
                )
                if len(tallies.errors) > 2 * MAX_ERRORS:
                    del tallies.errors[:-MAX_ERRORS]
            # the runs, inline: a call only when a value changes (counted whether or not a
            # reader wants them now: `take` decides, as `rows.RowTap` does)
            text = req.raw_path
            run = tallies.paths
            if text == run.last:
                run.n += 1
            else:
                run.add(text)
            if status == 404:
                tallies.not_found.add(text)
            text = req.client_ip
            run = tallies.clients
            if text == run.last:
                run.n += 1
            else:
                run.add(text)
            value = req.user_agent
            field = tallies.agents
            if value == field.last:
                field.n += 1
            else:
                field.add(value)
            value = req.referer
            field = tallies.referrers
            if value == field.last:
                field.n += 1
            else:
                field.add(value)
        self.size += 1
        if self.size > self.cap:
            self.on_full()

    def _roll(self, end: float) -> None:
        """A request finished past the open second: close its tallies, open the next
        second's (the one `end` falls in)."""
        self.closed.append(self.open)
        boundary = self.boundary
        self.boundary = boundary + float(int(end - boundary)) + 1.0
        self.open = Tallies(self.boundary)
        self.last_name = None

    def take(self, wall_offset: float) -> list[tuple[float, Batch]]:
        """What was counted since the last take, as (boundary, batch) pairs in order:
        every request of a batch finished before its boundary (a request clock time) and
        at or after the boundary of the batch before it. The last batch is the open
        second's. The tap starts afresh."""
        top = self.detailed and self.top
        taken = [(t.boundary, t.batch(wall_offset, top)) for t in (*self.closed, self.open)]
        for name, route in self.open.routes.items():
            route.reset()
            self.spare[name] = route
        self.closed = []
        self.open = Tallies(self.boundary)
        self.last_name = None
        self.size = 0
        return taken

    def set_boundary(self, boundary: float) -> None:
        """The open second ends at `boundary` (a request clock time)."""
        self.boundary = self.open.boundary = boundary

    def __len__(self) -> int:
        return self.size


def _nothing() -> None:
    pass
