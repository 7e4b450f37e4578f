"""How an HTTP/1.1 connection ends: refusals answered before closing, lingering
closes, draining, and the one timer that watches the client (head, body, idle and
lingering time)."""

from __future__ import annotations

import asyncio
from typing import Any

from bastion.http.context import request_clock
from bastion.http.dispatch import cancel_handler
from bastion.http.request import Request
from bastion.http.wheel import TICK
from bastion.http1.state import (
    BUFFER,
    LINGER_SECONDS,
    QUEUE,
    T_BODY,
    T_HEAD,
    T_IDLE,
    T_LINGER,
    T_NONE,
    UPSTREAM,
    ConnectionState,
    ParseReject,
)


def close_owing_nothing(loop: asyncio.AbstractEventLoop, transport: Any, secure: bool) -> None:
    """Close a connection that is owed nothing more than what was just written (an
    error answer, an idle or timed-out connection). Over TLS the close_notify leaves
    at once, then the client's is awaited (its last bytes are read and dropped, so it
    gets no reset) for the lingering time only: the event loop would otherwise keep
    the connection, and its max_connections slot, for up to 30 s."""
    transport.close()
    if secure:
        loop.call_later(LINGER_SECONDS, _drop_if_flushed, transport)


def _drop_if_flushed(transport: Any) -> None:
    # An answer still leaving (a client slower than the lingering time) is left to the
    # TLS layer's own shutdown timeout rather than cut.
    if not transport.get_write_buffer_size():
        transport.abort()


class Closing(ConnectionState):
    """The closing paths and timers of `HTTP1Connection`."""

    # ------------------------------------------------------------ closing paths
    def _cancel_handler(self, req: Request) -> None:
        """Tell the handler of `req` (a proxy exchange, possibly still connecting
        and without a sink yet) that the client side is gone."""
        producer = self.producer
        self.producer = None
        cancel_handler(req, producer)

    def _fail_active(self, req: Request) -> None:
        """The body of the dispatched request broke (bad chunk, over the limit):
        stop its handler so no complete request reaches an upstream, then answer
        with the reject status, or cut the connection if a response is under way."""
        self._cancel_handler(req)
        if self.resp_started:
            if req.status == 0 and self.reject is not None:
                req.status = self.reject.status
            self.active = None
            self.queue.clear()
            self.ctx.finish(req)
            self.abort()
            return
        self.active = None
        self._send_reject(req)

    def _send_reject(self, failed: Request | None = None) -> None:
        reject = self.reject
        assert reject is not None
        if failed is not None:
            req = failed
        elif self.req is not None and not self.req.dispatched:
            req = self.req
        else:
            req = Request()
        req.client_ip = self.client_ip
        if not req.request_id:
            req.request_id = self.ctx.request_ids.next()
        if not req.method:
            req.method = "HEAD" if reject.head else "-"
        req.start = req.start or request_clock()
        self.queue.clear()
        self.active = req
        self.resp_keep_alive = False
        self.reject = None
        self.lingering = False
        # Whatever follows the bad bytes is unread: answer, send FIN, then drain
        # briefly (nginx's lingering close) so that a client still sending does not
        # get a reset that destroys the answer in flight.
        req.body_done = False
        self.problem(req, reject.status, reject.detail)
        self.reject = reject  # keep ignoring input until closed
        if not self.lingering and not self.closing and self.transport is not None:
            self.closing = True
            close_owing_nothing(self.event_loop, self.transport, self.secure)

    def _linger_close(self) -> None:
        self.uncork()
        self.lingering = True
        transport = self.transport
        assert transport is not None
        if self.secure:
            # TLS cannot half-close in the transport: close_notify goes now, and the
            # TLS layer drains what the client still sends while it waits for its own
            self.closing = True
            close_owing_nothing(self.event_loop, transport, True)
            return
        self._resume(QUEUE | BUFFER | UPSTREAM)
        if transport.can_write_eof():
            transport.write_eof()
        self._set_timer(T_LINGER, LINGER_SECONDS)

    def in_progress(self) -> int:
        # the queue holds the requests read and not yet answered (the one being
        # answered first); a reject's answer is active outside it
        return len(self.queue) or int(self.active is not None)

    def close_idle(self) -> None:
        """Close now if no request is in progress (used when draining)."""
        if self.active is None and not self.queue and not self.in_head and self.tunnel is None:
            self.closing = True
            if self.transport is not None:
                close_owing_nothing(self.event_loop, self.transport, self.secure)

    # ------------------------------------------------------------------ timers
    def _set_timer(self, kind: int, seconds: float) -> None:
        self.timer_kind = kind
        deadline = self.event_loop.time() + seconds
        self.timer_deadline = deadline
        slot = self.timer_slot
        if slot < 0 or deadline < self.timer_at:
            # a later deadline waits for the slot filed (filed again when it is due);
            # an earlier one (idle → head, head → body) needs an earlier slot
            wheel = self.wheel
            if slot >= 0:
                wheel.discard(self, slot)
            slot = self.timer_slot = wheel.add(self, deadline)
            self.timer_at = slot * TICK

    def _clear_timer(self) -> None:
        self.timer_kind = T_NONE

    def on_deadline(self) -> None:
        """The wheel's call: the slot this connection was filed in is due."""
        self.timer_slot = -1
        kind = self.timer_kind
        if kind == T_NONE or self.transport is None or self.closing:
            return
        if self.event_loop.time() < self.timer_deadline:
            slot = self.timer_slot = self.wheel.add(self, self.timer_deadline)
            self.timer_at = slot * TICK
            return
        self.timer_kind = T_NONE
        if kind == T_BODY and self.read_paused:
            # the gateway stopped reading (the upstream takes the body slowly): not
            # the client's silence; the upstream's own send timeout watches that side
            self._set_timer(T_BODY, self.body_timeout)
            return
        if kind == T_HEAD and (self.active is not None or self.queue):
            return  # a response is in progress: end_response starts the next timer
        if kind == T_HEAD and self.in_head:
            # the client started a request but did not finish its head in time
            self.reject = ParseReject(408)
            self._send_reject()
        elif kind == T_BODY and self.active is not None and not self.resp_started:
            self._cancel_handler(self.active)
            self.active.keep_alive = False
            self.resp_keep_alive = False
            self.problem(self.active, 408)
            self.abort()
        else:
            self.closing = True
            if kind == T_IDLE and self.transport.get_write_buffer_size():
                # idle, yet what it was sent is still unread: a client that stopped
                # reading (the send timeout's case once no upstream waits on it)
                self.transport.abort()
            else:
                close_owing_nothing(self.event_loop, self.transport, self.secure)
