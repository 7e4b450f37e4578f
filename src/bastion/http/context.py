"""What a wire protocol needs from the worker it runs in, named without the worker.

A protocol (`bastion.http1`, `bastion.http2`) reads its limits and timeouts from a
`Router` (the compiled plan in force, `http/router.py`), asks it for a request's route,
and reports to a `ServerContext`: the worker's connection registry, request ids, the
`Date` line and the request-finish hook. `bastion.server.context.WorkerContext` is the worker's
subclass; tests may use this class as it is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from bastion.http.ids import RequestIds
from bastion.http.settings import ConnectionSettings
from bastion.http.wheel import TimerWheel

if TYPE_CHECKING:
    from bastion.http.request import Request
    from bastion.http.router import Router


class Limits(Protocol):
    @property
    def max_header_bytes(self) -> int: ...

    @property
    def max_uri_bytes(self) -> int: ...

    @property
    def max_body_bytes(self) -> int: ...

    @property
    def max_connections(self) -> int: ...


class Timeouts(Protocol):
    @property
    def header(self) -> float: ...

    @property
    def body(self) -> float: ...

    @property
    def keepalive(self) -> float: ...

    @property
    def send(self) -> float: ...


class HTTP2Settings(Protocol):
    @property
    def max_concurrent_streams(self) -> int: ...

    @property
    def max_requests(self) -> int: ...

    @property
    def initial_window(self) -> int: ...

    @property
    def max_resets(self) -> int: ...

    @property
    def max_uploads(self) -> int: ...


class Connection(Protocol):
    """An open client connection, as the worker's registry sees it (draining)."""

    def close_idle(self) -> None: ...

    def abort(self) -> None: ...

    def in_progress(self) -> int:
        """Requests received and not yet answered in full (the in-flight figure)."""
        ...


class GoingAway(Connection, Protocol):
    """An HTTP/2 connection: told to send GOAWAY when the plan changes."""

    def goaway(self) -> None: ...


# The clock of a request's timestamps (`Request.start`, the finish hook's `now`, and the
# upstream's time): monotonic with sub-millisecond resolution. The loop's time cannot
# serve: uvloop's `loop.time()` is libuv's cached `uv_now`, in whole milliseconds, which
# would make every duration a multiple of 1 ms (the statistics' 0.5 ms buckets and the
# access log's microseconds meaningless). Timers and deadlines stay on the loop's time:
# values of the two clocks are never compared. A module global, read by its users as
# one: no attribute lookups on the request path.
request_clock = time.monotonic

# Called once per finished request (answered, cut short or abandoned by its client):
# the access log, the request tap. Runs on the request path: it may bump counters and
# queue a line, and leaves anything slower to later. The time it finished is
# `req.ended or request_clock()`: the proxy sets `ended` when it reads the clock at the
# upstream's end, and with several observers the hook sets it once for all of them; a
# single observer is the hook itself (no frame of the hook's own: about 0.4 k
# instructions a request, measured with callgrind) and reads the clock when unset.
Observer = Callable[["Request"], None]


class ServerContext:
    """Per-worker state the protocols share: the plan in force, open connections, the
    `Date` line, request ids, and the observers told of each finished request."""

    # set when HTTPS listeners exist: takes over a TLS connection whose ALPN chose h2
    start_http2: Callable[[asyncio.BaseTransport], None] | None = None
    draining = False
    # the current `Date: …\r\n` line; the worker refreshes it once a second
    date_header = b""
    # The request-finish hook (`observers` sets it): every protocol calls it once per
    # dispatched request (and for error answers to requests that never were), after its
    # last byte was handed to the transport or once the client left. An instance
    # attribute, not a method: with one observer (the common case: the request tap, or
    # the access log) it is that observer, which spares a frame and a loop per request.
    finish: Callable[[Request], None]

    def __init__(self, loop: asyncio.AbstractEventLoop, plan: Router) -> None:
        self.observers = ()
        self.loop = loop
        self.connections: set[Connection] = set()
        self.http2_connections: set[GoingAway] = set()
        self.request_ids = RequestIds()  # `request_ids.next()` names a request
        # the deadlines of the worker's HTTP/1.1 connections, on one loop timer
        self.wheel = TimerWheel(loop)
        self.use_plan(plan)

    def use_plan(self, plan: Router) -> None:
        """Put `plan` in force: connections opened from now on follow it."""
        settings = ConnectionSettings(self.loop, self.wheel, plan)  # (may refuse: first)
        self.plan = plan
        self.settings = settings

    def in_flight(self) -> int:
        """Requests in progress on this context's connections (read once a second)."""
        return sum(conn.in_progress() for conn in self.connections)

    @property
    def observers(self) -> tuple[Observer, ...]:
        """Called by `finish` with each finished request, in order (see `Observer`)."""
        return self._observers

    @observers.setter
    def observers(self, observers: tuple[Observer, ...]) -> None:
        self._observers = observers
        self.finish = _finish_hook(observers)


def _finish_hook(observers: tuple[Observer, ...]) -> Callable[[Request], None]:
    """The finish hook calling `observers`: nothing for none, the only one itself."""
    if not observers:
        return _unobserved
    if len(observers) == 1:
        return observers[0]

    def finish_each(req: Request) -> None:
        if not req.ended:
            req.ended = request_clock()  # one time for every observer
        for observer in observers:
            observer(req)

    return finish_each


def _unobserved(req: Request) -> None:
    pass
