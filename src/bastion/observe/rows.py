"""The request tap of the pure-Python build: a row of values per finished request, counted
once a second with C-level loops over whole columns.

The compiled build counts each request at once (`tap.py`): a few hundred instructions of C,
against some 2.7 k for a row and its share of the batch count. Interpreted, the same
counting is some 10 k instructions a request (every line of Python costs dozens), while a
row is one `list.extend` and the count of a batch runs in C: so each build uses the tap
that is cheap for it (`recorder.request_tap`), and both hand the recorder the same
batches (`take`). Both are tested in either build (tests/unit/test_recorder.py).

A row is `FIELDS` consecutive items of one flat list rather than a tuple per request:
`list.extend` copies the values out of a tuple that dies at once, so no container
outlives the call (a tuple kept per request would be tracked by the cycle collector
until the batch is counted, and the young-generation collections it causes cost more
than the append). The batch reads a column as one slice: `rows[ROUTE::FIELDS]`. A column
of one value is found with `list.count` (identity compares, nothing hashed) and needs no
`Counter`; latencies are sorted (a C sort of floats) and each histogram bound is one
bisection of the sorted values, instead of one bucket search per request.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable
from itertools import compress, repeat
from operator import eq, ge, indexOf
from typing import TYPE_CHECKING, Any, Final

from bastion.http.context import request_clock
from bastion.observe.aggregate import UNION_BOUNDS, UNROUTED, Batch, Outcome, RouteBatch
from bastion.observe.interval import MAX_ERRORS, TOP_DIMENSIONS

if TYPE_CHECKING:
    from bastion.http.request import Request

# the row: positions of the fields in it, FIELDS items a request
ROUTE: Final = 0  # req.route_name ("" no route answered)
METHOD: Final = 1
STATUS: Final = 2
CACHE: Final = 3  # "" without a cache
END: Final = 4  # when it finished (`req.ended`, else `http.context.request_clock()` read then)
TOOK: Final = 5  # seconds from its head to its end (END - `req.start`)
UPSTREAM_TIME: Final = 6  # -1.0 when not proxied
BODY_BYTES: Final = 7
BYTES_OUT: Final = 8
REFUSED_BY: Final = 9  # the refusing policy's config key, ""
CONSUMER: Final = 10  # ""
COUNTS_FIELDS: Final = 11  # a row of counts only (Prometheus) ends here; the details follow
RAW_PATH: Final = 11  # as requested, no query
CLIENT_IP: Final = 12
# User-Agent and Referer as sent (b"" absent), kept by the parsers as the fields pass:
# two bytes objects, never a container (no copy of the header list, no work for the
# cycle collector, no scan of every field in the batch)
USER_AGENT: Final = 13
REFERER: Final = 14
REQUEST_ID: Final = 15
UPSTREAM: Final = 16  # the upstream endpoint ("")
FIELDS: Final = 17


# rows kept before an early count is asked for: the memory of a stalled second stays
# bounded (10,000 rows: about 1.3 MB of row items plus what they refer to)
DEFAULT_CAP: Final = 10_000
_NO_BOUNDARY: Final = float("inf")


class RowTap:
    """The request-finish observer: `record(req)` adds a row; `take()` counts them.

    With `detailed` a row has FIELDS items; without, only the first COUNTS_FIELDS (what
    the Prometheus counters need): no path, client, user agent, referrer, request id or
    upstream is kept.

    `record` is a closure over the row list (fewer instructions a call than a bound
    method reading `self.rows`); `drain` hands that list over whole and starts a new one
    (no copy). Past `cap` rows `record` calls `on_full` (the recorder schedules an early
    count); until then it checks one length per request.
    """

    def __init__(self, cap: int = DEFAULT_CAP, detailed: bool = True) -> None:
        self.cap = cap
        self.detailed = detailed
        self.top = detailed  # count the top-K dimensions (the recorder sets it)
        # the request clock's time the open second ends at (`tap.RequestTap.boundary`)
        self.boundary = _NO_BOUNDARY
        self.fields = FIELDS if detailed else COUNTS_FIELDS  # items a row
        self.on_full: Callable[[], None] = _nothing
        self.record: Callable[[Request], None]
        self.drain: Callable[[], list[Any]]  # the rows, uncounted
        self._size: Callable[[], int]
        self.record, self.drain, self._size = self._closures()

    def _closures(
        self,
    ) -> tuple[Callable[[Request], None], Callable[[], list[Any]], Callable[[], int]]:
        rows: list[Any] = []
        limit = self.cap * self.fields
        tap = self

        def detailed(req: Request) -> None:
            # the order of FIELDS above; keep to slot reads (the subtraction is one of C doubles
            # when compiled: cheaper here than a pass over two columns of the batch)
            end = req.ended or request_clock()
            rows.extend(
                (
                    req.route_name,
                    req.method,
                    req.status,
                    req.cache,
                    end,
                    end - req.start,
                    req.upstream_time,
                    req.body_bytes,
                    req.bytes_out,
                    req.refused_by,
                    req.consumer,
                    req.raw_path,
                    req.client_ip,
                    req.user_agent,
                    req.referer,
                    req.request_id,
                    req.upstream,
                )
            )
            if len(rows) > limit:
                tap.on_full()

        def counts(req: Request) -> None:
            end = req.ended or request_clock()
            rows.extend(
                (
                    req.route_name,
                    req.method,
                    req.status,
                    req.cache,
                    end,
                    end - req.start,
                    req.upstream_time,
                    req.body_bytes,
                    req.bytes_out,
                    req.refused_by,
                    req.consumer,
                )
            )
            if len(rows) > limit:
                tap.on_full()

        def drain() -> list[Any]:
            """The rows recorded so far (flat, `fields` items each, in the order they
            finished); the tap starts empty again."""
            nonlocal rows
            taken, rows = rows, []
            return taken

        fields = self.fields

        def size() -> int:
            return len(rows) // fields

        return (detailed if self.detailed else counts), drain, size

    def take(self, wall_offset: float) -> list[tuple[float, Batch]]:
        """The rows recorded so far, counted, as `tap.RequestTap.take` gives them: cut
        at the boundary (rows are in the order they finished), then at each following
        second with rows."""
        rows = self.drain()
        fields = self.fields
        top = self.detailed and self.top
        boundary = self.boundary
        taken: list[tuple[float, Batch]] = []
        while rows:
            if boundary == _NO_BOUNDARY:
                cut = len(rows)
            else:
                # the first row at or past the boundary, as `tap.RequestTap` rolls over:
                # rows are in the order requests were recorded, and a request's end time
                # is read a little before its finish hook runs, so the times are not
                # always sorted (a bisection could put a row past the boundary before it)
                try:
                    cut = indexOf(map(ge, rows[END::fields], repeat(boundary)), True) * fields
                except ValueError:
                    cut = len(rows)
            if cut:
                taken.append((boundary, count(rows[:cut], wall_offset, top, fields)))
                rows = rows[cut:]
            if rows:  # the next second with rows
                boundary += float(int(rows[END] - boundary)) + 1.0
        self.boundary = boundary
        if not taken or taken[-1][0] != boundary:
            taken.append((boundary, Batch()))
        return taken

    def set_boundary(self, boundary: float) -> None:
        self.boundary = boundary

    def __len__(self) -> int:
        return self._size()


def count(rows: list[Any], wall_offset: float, top: bool = True, fields: int = FIELDS) -> Batch:
    """Count a drained batch (flat rows of `fields` items, see above). `wall_offset`
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
    codes: set[int] = set()  # the status codes answered
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
    first = bisect_left(UNION_BOUNDS, ordered[0])
    last = bisect_left(UNION_BOUNDS, ordered[-1])
    counts = {}
    below = 0
    for i in range(first, last):
        upto = bisect_right(ordered, UNION_BOUNDS[i])  # the values <= bound (Prometheus' `le`)
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


def _nothing() -> None:
    pass
