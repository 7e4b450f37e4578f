"""What one proxied request remembers, shared by the parts of `Exchange`.

`Exchange` is one object per request, written in three parts that each own a concern:
connection attempts and retries (`attempts.py`), the Upgrade tunnel (`tunnel.py`) and
the request and response themselves (`exchange.py`). This base holds the state they
share. No `__slots__`: what most requests never change or never read is a class-level
default, so that creating an exchange sets only what `__init__` sets, which is measurably
cheaper once per request. What every request reads before it writes it is set in
`__init__` instead: reading a class-level default through an instance is several times
dearer than reading an instance attribute.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from bastion.http.request import BODY_NONE, Request
from bastion.http.router import Handler
from bastion.proxy.pool import DEFAULT_HEAD_BYTES, DEFAULT_HEAD_FIELDS

if TYPE_CHECKING:
    from collections.abc import Collection

    from bastion.balance.balancer import Balancer, Member, RetryBudget
    from bastion.http.downstream import Downstream
    from bastion.proxy.pool import Pool, UpstreamConnection


class ExchangeHandler(Handler):
    """What an exchange reads from the handler that starts it: the base class of a route's
    `ProxyHandler` and of a handler that forwards through an exchange of its own
    (`handlers/s3.py`). A compiled class both derive from, not a protocol: compiled, an
    exchange reads these as fields of a C struct, where through a protocol each was a
    lookup by name (about 100 instructions, a dozen times a request). The defaults are a
    single endpoint's: no retries, no connection limits, the default limits of an
    answer's head."""

    loop: asyncio.AbstractEventLoop
    balancer: Balancer
    connect_timeout: float
    read_timeout: float
    send_timeout: float
    attempts: int = 1
    budget: RetryBudget | None = None
    retry_statuses: Collection[int] | None = None
    sticky_cookie: bytes | None = None
    total_timeout: float = 0.0
    websocket_idle_timeout: float | None = None
    max_connections: int = 0
    max_pending: int = 0
    max_response_header_bytes: int = DEFAULT_HEAD_BYTES
    max_response_header_fields: int = DEFAULT_HEAD_FIELDS


class ResponseRecorder(Protocol):
    """Told of the response as it is relayed (a cache keeping a copy of it)."""

    def on_head(
        self, status: int, status_line: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None: ...

    def on_body(self, data: bytes) -> None: ...

    def on_end(self) -> None: ...

    def on_abort(self) -> None: ...


# The parts of an exchange form one chain, ExchangeBase <- TunnelEnd <- Attempts <- Exchange
# (mypyc compiles classes of one base: docs/compiled.md); Exchange's MRO is what it was when it
# derived from Attempts and TunnelEnd side by side.
class ExchangeBase:
    head = b""  # the request head sent upstream; then the 101 head relayed to the client
    pool: Pool | None = None
    upstream: UpstreamConnection | None = None
    task: asyncio.Task[None] | None = None  # connecting, or waiting for a connection slot
    resp_started = False
    request_sent = False
    framing = BODY_NONE  # how the upstream's response body ends (BODY_CLOSE: not pooled)
    attempts = 0  # connections opened (0 while on a pooled one)
    sent_at = 0.0  # the loop's time the request was sent at
    sent_clock = 0.0  # the same, by `request_clock`
    member: Member | None = None  # the endpoint whose connection slot the request holds
    tried: list[Member] | None = None  # members tried before the current one
    retries = 0
    unsent = 0  # the client's unsent bytes when it stalled
    # Whether a connection that answered a HEAD may serve another request. A backend
    # that sends a body with its HEAD answer (a handler shared with GET) may send it
    # after the head, when the connection already carries the next request: that body
    # would be read as the next answer. Only origins known never to do so keep it.
    reuse_after_head = False

    def __init__(
        self,
        handler: ExchangeHandler,
        client: Downstream,
        req: Request,
        recorder: ResponseRecorder | None = None,
    ) -> None:
        self.handler = handler
        self.client = client
        self.req = req
        self.loop = handler.loop
        # a cache's copy of the response: told of the head, body chunks and the end
        self.recorder = recorder
        self.done = False
        self.interim = False  # a 1xx or 101 head whose message end is not the answer's
        self.tunnelling = False
        # paused by the client's backpressure (then `unsent` is what it had not taken)
        self.client_stalled = False
        self.timer: asyncio.TimerHandle | None = None  # the total timeout
        self.set_cookie = b""  # the sticky policy's Set-Cookie line

    # Written in the other parts; named here for the parts that call them. Plain methods,
    # not declarations under `if TYPE_CHECKING:` (mypyc compiles no `if` in a class body);
    # the parts that define them come before this class in Exchange's MRO.
    def _send(self, conn: UpstreamConnection) -> None:
        raise NotImplementedError

    def _fail(self, status: int, detail: str | None, headers: bytes = b"") -> None:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    def _cancel_timer(self) -> None:
        raise NotImplementedError
