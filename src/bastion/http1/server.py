"""The client side of HTTP/1.1: one asyncio Protocol per downstream connection.

Parsing is httptools (llhttp, strict mode). Parsed requests become data: the
callbacks (head.py) only record them in a queue, and handlers run after `feed_data`
returns, so a framing error anywhere in a received chunk is seen before a single
byte of that request is forwarded. Handlers answer through the `Downstream`
contract (response.py); closing paths and timers are in closing.py.
"""

from __future__ import annotations

import asyncio
import asyncio.protocols  # mypyc's code for HTTP1Connection's base looks this module up
from collections import deque
from typing import TYPE_CHECKING, ClassVar, Final

import httptools

from bastion.http.dispatch import dispatch
from bastion.http.downstream import Pause, Producer
from bastion.http1.head import HeadParser
from bastion.http1.state import (
    BUFFER,
    MAX_BUFFERED_BODY,
    QUEUE,
    T_HEAD,
    T_NONE,
    ParseReject,
)

if TYPE_CHECKING:
    from bastion.http.context import ServerContext

# C statics, read once a connection (http1/head.py says why)
_RequestParser: Final = httptools.HttpRequestParser
_deque: Final = deque

# What a connection's parser becomes once the connection is done with: a parser with no
# callbacks, shared. The connection's own parser refers back to it (its callbacks are the
# connection's bound methods), so while it holds it a closed connection is a cycle that only
# the cycle collector frees: with a connection per request, that collector's passes over
# every young object were a tenth of the request's instructions. Without the cycle the
# connection is freed the moment its transport lets go of it.
_DONE_PARSER: Final = httptools.HttpRequestParser(object())


class HTTP1Connection(HeadParser, asyncio.Protocol):  # the parts, one chain: see state.py
    # The parser callbacks bastion does not take, as None: httptools looks each callback up
    # when a parser is made, and one a compiled class lacks raises an AttributeError that it
    # then clears (about 1k instructions each, two a connection).
    on_chunk_header: ClassVar[None] = None
    on_chunk_complete: ClassVar[None] = None

    def __init__(self, ctx: ServerContext, scheme: bytes = b"http") -> None:
        self.ctx = ctx
        # limits copied once per connection from the plan in force when it opened
        settings = ctx.settings
        self.event_loop = settings.loop
        self.wheel = settings.wheel
        self.scheme = scheme
        self.secure = scheme == b"https"
        self.parser = _RequestParser(self)
        self.max_header_bytes = settings.max_header_bytes
        self.max_uri_bytes = settings.max_uri_bytes
        self.max_body_bytes = settings.max_body_bytes
        self.max_connections = settings.max_connections
        self.header_timeout = settings.header_timeout
        self.body_timeout = settings.body_timeout
        self.idle_timeout = settings.idle_timeout
        self.send_timeout = settings.send_timeout
        self.url_parts = []
        self.queue = _deque()
        self.producer = None
        self.tunnel = None

    # ----------------------------------------------------------------- transport
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop transports are not asyncio.Transport subclasses; same interface
        self.transport = transport  # type: ignore[assignment]
        ctx = self.ctx
        if len(ctx.connections) >= self.max_connections or ctx.draining:
            transport.abort()  # type: ignore[attr-defined]
            return
        if self.secure and ctx.start_http2 is not None:
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
                # ALPN chose HTTP/2: that protocol takes over; this object lets go of
                # the transport and of its parser (no cycle: it is freed at once)
                self.transport = None
                self.parser = _DONE_PARSER
                ctx.start_http2(transport)
                return
        ctx.connections.add(self)
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else "unix"
        self._set_timer(T_HEAD, self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.parser = _DONE_PARSER  # first: no cycle left, whatever the rest raises
        self.closing = True
        self.ctx.connections.discard(self)
        self.timer_kind = T_NONE
        if self.timer_slot >= 0:
            self.wheel.discard(self, self.timer_slot)
            self.timer_slot = -1
        if self.tunnel is not None:
            self.tunnel.peer_closed()
        active = self.active
        if active is not None:
            if active.status == 0:
                active.status = 499
            self._cancel_handler(active)
            self.ctx.finish(active)
            self.active = None
        self.queue.clear()
        self.producer = None
        self.transport = None

    def eof_received(self) -> bool:
        # A client may half-close after sending its request and still read the
        # answer; keep the write side open while a response is owed.
        if self.tunnel is not None:
            return False
        self.client_eof = True
        return bool(self.active is not None or self.queue)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.producer is not None:
            self.producer.pause_producing()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.producer is not None:
            self.producer.resume_producing()

    def unsent_bytes(self) -> int:
        """Response bytes written but not yet taken by the client (the send timeout
        watches them shrink)."""
        transport = self.transport
        return 0 if transport is None else transport.get_write_buffer_size()

    def pause_reading(self, reason: Pause) -> None:
        self._pause(int(reason))

    def resume_reading(self, reason: Pause) -> None:
        self._resume(int(reason))

    def _pause(self, bits: int) -> None:
        if not self.read_paused and self.transport is not None and not self.closing:
            self.transport.pause_reading()
        self.read_paused |= bits

    def _resume(self, bits: int) -> None:
        if self.read_paused & bits:
            self.read_paused &= ~bits
            if not self.read_paused and self.transport is not None and not self.closing:
                self.transport.resume_reading()

    # -------------------------------------------------------------------- input
    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.from_client(data)
            return
        if self.lingering or self.reject is not None:
            return
        if self.upgraded:
            active = self.active or (self.queue[0] if self.queue else None)
            if active is not None:
                active.upgrade_data += data
                if len(active.upgrade_data) > MAX_BUFFERED_BODY:
                    self._pause(BUFFER)
            return
        self.chunk_used = 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.upgraded = True
            req = self.queue[-1] if self.queue else self.active
            if req is not None:
                req.upgrade_data = data[upgrade.args[0] :]
        except httptools.HttpParserError as exc:
            last = self.queue[-1] if self.queue else None
            if last is not None and last.body_done and not last.keep_alive:
                # bytes after a request that ends the connection (HTTP/1.0, `Connection:
                # close`), which llhttp refuses: no request of the client's, so no 400;
                # they are dropped and the connection closes after the answer, as nginx does
                pass
            elif self.reject is None:
                self.reject = self._classify_parse_error(exc)
        except ParseReject as rejected:  # (not `exc` twice: see docs/compiled.md)
            self.reject = rejected
        if self.in_head and self.reject is None:
            if self.timer_kind == T_NONE and self.active is None:
                # the head began in this read (on_message_begin) and is not complete
                self._set_timer(T_HEAD, self.header_timeout)
            # a head still incomplete after this whole chunk: all of it was head
            self.head_raw += len(data)
            if self.head_raw > self.max_header_bytes + self.max_uri_bytes:
                # no version parsed yet: still in the request line, the target is long
                in_line = self.req is None and self.parser.get_http_version() == "0.0"
                self.reject = ParseReject(414 if in_line else 431)
        if self.reject is not None:
            self._pause(QUEUE)
            queue = self.queue
            if queue and not queue[-1].body_done:
                # the error is in the body of the last request: it never completes
                broken = queue[-1]
                if broken.dispatched:
                    self._fail_active(broken)
                    return
                queue.pop()
            if self.active is None:
                if self.queue:
                    self._dispatch_next()
                else:
                    self._send_reject()
            return
        if self.active is None and self.queue:
            self._dispatch_next()
        elif len(self.queue) > 1:
            self._pause(QUEUE)

    # ----------------------------------------------------------------- dispatch
    def _dispatch_next(self) -> None:
        req = self.queue[0]
        self.active = req
        self.resp_started = False
        self.resp_chunked = False
        # an Upgrade request that is not switched leaves the connection unusable
        self.resp_keep_alive = req.keep_alive and req.upgrade is None
        dispatch(self.ctx, self, req, self.secure)

    # ------------------------------------------------------- the Downstream contract
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.event_loop

    @property
    def date_header(self) -> bytes:
        return self.ctx.date_header

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.closing

    def set_producer(self, producer: Producer | None) -> None:
        self.producer = producer

    def close_after_response(self) -> None:
        self.resp_keep_alive = False
