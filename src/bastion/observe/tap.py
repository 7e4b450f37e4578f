"""The only per-request code of the traffic figures: one row of values the request
already holds, added to a list. Everything else (counting, histograms, top lists, the
Prometheus counters, statistics) runs once a second on the whole batch (`recorder.py`).

A row is `FIELDS` consecutive items of one flat list rather than a tuple per request:
`list.extend` copies the values out of a tuple that dies at once, so no container
outlives the call. A tuple kept per request would be tracked by the cycle collector
until the batch is counted, and the young-generation
collections it causes cost more than the append itself (measured with callgrind:
3.2 k instructions a request for a tuple appended, 2.1 k for the flat extend). The
batch reads a column as one slice: `rows[ROUTE::FIELDS]`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from bastion.http.context import request_clock

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


class RequestTap:
    """The request-finish observer: `record(req)` adds a row; `drain()` takes them.

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
        self.fields = FIELDS if detailed else COUNTS_FIELDS  # items a row
        self.on_full: Callable[[], None] = _nothing
        self.record: Callable[[Request], None]
        self.drain: Callable[[], list[Any]]
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

    def __len__(self) -> int:
        return self._size()


def _nothing() -> None:
    pass
