"""What one proxied request remembers, shared by the parts of `Exchange`.

`Exchange` is one object per request, written in three parts that each own a concern:
connection attempts and retries (`attempts.py`), the Upgrade tunnel (`tunnel.py`) and
the request and response themselves (`exchange.py`). This base holds the state they
share, as class-level defaults: creating an exchange then sets only the four attributes
of `__init__`, which is measurably cheaper once per request than `__slots__`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from bastion.http.request import BODY_NONE, Request

if TYPE_CHECKING:
    from bastion.balance.balancer import Member
    from bastion.http.downstream import Downstream
    from bastion.proxy.handler import ProxyHandler
    from bastion.proxy.pool import Pool, UpstreamConnection


class ResponseRecorder(Protocol):
    """Told of the response as it is relayed (a cache keeping a copy of it)."""

    def on_head(
        self, status: int, status_line: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None: ...

    def on_body(self, data: bytes) -> None: ...

    def on_end(self) -> None: ...

    def on_abort(self) -> None: ...


class ExchangeBase:
    head = b""  # the request head sent upstream; then the 101 head relayed to the client
    pool: Pool | None = None
    upstream: UpstreamConnection | None = None
    task: asyncio.Task[None] | None = None  # connecting, or waiting for a connection slot
    resp_started = False
    request_sent = False
    interim = False
    tunnelling = False
    done = False
    framing = BODY_NONE  # how the upstream's response body ends (BODY_CLOSE: not pooled)
    attempts = 0  # connections opened (0 while on a pooled one)
    sent_at = 0.0
    member: Member | None = None  # the endpoint whose connection slot the request holds
    tried: list[Member] | None = None  # members tried before the current one
    set_cookie = b""
    retries = 0
    timer: asyncio.TimerHandle | None = None  # the total timeout
    # paused by the client's backpressure, and how many bytes it had not taken then
    client_stalled = False
    unsent = 0
    # a cache's copy of the response: told of the head, body chunks and the end
    recorder: ResponseRecorder | None = None
    # Whether a connection that answered a HEAD may serve another request. A backend
    # that sends a body with its HEAD answer (a handler shared with GET) may send it
    # after the head, when the connection already carries the next request: that body
    # would be read as the next answer. Only origins known never to do so keep it.
    reuse_after_head = False

    def __init__(self, handler: ProxyHandler, client: Downstream, req: Request) -> None:
        self.handler = handler
        self.client = client
        self.req = req
        self.loop = handler.loop

    if TYPE_CHECKING:
        # written in the other parts; named here for the parts that call them

        def _send(self, conn: UpstreamConnection) -> None: ...

        def _fail(self, status: int, detail: str | None, headers: bytes = b"") -> None: ...

        def _release(self) -> None: ...

        def _cancel_timer(self) -> None: ...
