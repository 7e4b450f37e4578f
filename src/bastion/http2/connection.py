"""The HTTP/2 connection protocol: frames in, streams dispatched, frames out.

Started on a TLS connection whose ALPN chose ``h2`` (the HTTP/1.1 protocol hands
the transport over). Frame events are applied in events.py, output is coalesced
in output.py; this module sets the connection up, admits streams to dispatch, and
closes it (GOAWAY, errors, the once-a-second tick).
"""

from __future__ import annotations

import asyncio
import asyncio.protocols  # mypyc's code for HTTP2Connection's base looks this module up
import logging
from typing import TYPE_CHECKING, Any, Final

from bastion.http.context import request_clock
from bastion.http.dispatch import dispatch, request_id
from bastion.http.request import Request
from bastion.http1.closing import close_owing_nothing
from bastion.http2.decoder import MemoDecoder
from bastion.http2.encoder import StaticEncoder
from bastion.http2.engine import Engine, Event
from bastion.http2.errors import NO_ERROR, PROTOCOL_ERROR, REFUSED_STREAM
from bastion.http2.events import RESET_WINDOW, FrameEvents
from bastion.http2.frames import goaway_frame
from bastion.http2.guard import FrameGuard
from bastion.http2.headers import Malformed, StreamReject, build_request
from bastion.http2.stream import Stream
from bastion.http2.uploads import Uploads

if TYPE_CHECKING:
    from bastion.http.context import ServerContext

log = logging.getLogger("bastion.http2")

_MAX_CONTINUATIONS: Final = 16  # more CONTINUATION frames in one header block: a flood
_TICK: Final = 1.0


class HTTP2Connection(FrameEvents, asyncio.Protocol):  # the parts, one chain: see state.py
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        plan = ctx.plan
        limits = plan.limits
        settings = plan.http2
        self.max_header_bytes = limits.max_header_bytes
        self.max_uri_bytes = limits.max_uri_bytes
        self.max_body_bytes = limits.max_body_bytes
        self.header_timeout = plan.timeouts.header
        self.idle_timeout = plan.timeouts.keepalive
        self.send_timeout = plan.timeouts.send
        window = settings.initial_window
        self.connection_window = min(window * 4, 2**31 - 1)
        # waiting streams may hold one connection window in all: with the window
        # in flight for the other streams, a connection holds at most two of them
        self.uploads = Uploads(
            ctx.loop,
            settings.max_uploads,
            self.connection_window,
            plan.timeouts.body,
            self._dispatch,
        )
        self.max_requests = settings.max_requests
        self.max_resets = settings.max_resets
        self.client_ip = ""
        self.streams = {}
        self.ready = []
        # what a header block may take compressed: the head limits plus HPACK's
        # per-field overhead; decoded lists are bounded by SETTINGS below
        block_limit = limits.max_header_bytes + limits.max_uri_bytes + 4096
        self.guard = FrameGuard(block_limit, _MAX_CONTINUATIONS)
        # the fields are checked by headers.py (RFC 9113 §8.2/§8.3) in the pass that
        # maps them anyway; header blocks are encoded with the static table only
        # (encoder.py) and decoded by `hpack` with a memo of repeated blocks (decoder.py)
        self.engine = Engine(
            MemoDecoder(block_limit),
            StaticEncoder(),
            settings.max_concurrent_streams,
            window,
            block_limit,
        )
        self.idle_since = ctx.loop.time()

    # ----------------------------------------------------------- transport
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        ctx = self.ctx
        ctx.connections.add(self)
        ctx.http2_connections.add(self)
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else "unix"
        engine = self.engine
        engine.initiate()
        # the connection window is shared by all streams: wider than one stream's
        engine.open_connection_window(self.connection_window - 65535)
        self.flush()
        self.block_since = self.control_since = ctx.loop.time()  # the preface is a head too
        self.timer = ctx.loop.call_later(_TICK, self._on_tick)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        ctx = self.ctx
        ctx.connections.discard(self)
        ctx.http2_connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            stream.on_reset()
        self.transport = None

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        for stream in list(self.streams.values()):
            if stream.pending:
                self._move(stream)
        self.flush()

    # ----------------------------------------------------- stream admission
    def hold_waiting(self, stream: Stream, size: int) -> None:
        """`size` more body bytes held by a waiting stream: credited back to the
        connection window within the waiting streams' budget, else the stream is refused."""
        if self.uploads.hold(stream, size):
            self.credit_connection(size, stream.sid)
        else:
            self.refuse(stream)

    def refuse(self, stream: Stream) -> None:
        """Reset a stream never dispatched with REFUSED_STREAM: nothing was processed, so
        the client may retry it (RFC 9113 §8.7). Its body is dropped and its bytes go
        back to the connection window."""
        self.uploads.release(stream)
        stream.req.body_buffer = None
        stream.closed = True
        stream.answered = True  # never dispatched: no answer and no access log line
        self._reset(stream.sid, REFUSED_STREAM)
        self.ack(stream.sid, stream.unacked)
        stream.unacked = 0
        self._forget(stream)

    def credit_connection(self, size: int, sid: int = 0) -> None:
        """Reopen the connection window (not the stream's) for bytes a waiting stream holds;
        when the stream acknowledges them, the window is not reopened past its size."""
        if self.closing or not size:
            return
        self.engine.open_connection_window(size, sid)
        self.flush_soon()

    def _open(self, event: Event, now: float) -> Stream | None:
        sid = event.sid
        if self.goaway_sent and sid > self.last_sid:
            # after our GOAWAY: never processed, the client may retry it elsewhere
            self._reset(sid, REFUSED_STREAM)
            return None
        req = Request()
        req.version = "2.0"
        req.client_ip = self.client_ip
        req.start = request_clock()  # `now` is the loop's time (timers)
        stream = Stream(self, sid, req)
        try:
            build_request(
                event.headers,
                req,
                self.max_header_bytes,
                self.max_uri_bytes,
                self.max_body_bytes,
                event.checked,
            )
        except StreamReject as reject:
            # (past the field scans: a refusal of the gateway's own, per request)
            stream.reject = reject
            if not event.checked:
                self.engine.decoder.mark_checked(event.block, event.generation)
        except Malformed as malformed:  # (not `exc` twice: see docs/compiled.md)
            # a stream error (RFC 9113 §8.1.1): this stream is reset, its neighbours
            # go on; it counts like a cancelled stream against the reset limit
            log.info("http2: malformed request from %s: %s", self.client_ip, malformed)
            self._reset(sid, PROTOCOL_ERROR)
            self._count_early_reset(now)
            return None
        else:
            if not event.checked:
                self.engine.decoder.mark_checked(event.block, event.generation)
        self.streams[sid] = stream
        if req.content_length is None and not event.ended:
            req.chunked = True  # a body of unknown length: chunked to the upstream
        elif event.ended and req.content_length:
            stream.reject = StreamReject(400, "The body is shorter than its Content-Length.")
        request_id(self.ctx, req)  # named now: it may be answered before its dispatch
        self.requests += 1
        if self.requests >= self.max_requests:
            self.goaway(sid)  # this stream is still served; the client reconnects for more
        return stream

    def _dispatch(self, stream: Stream) -> None:
        """A stream admitted (see uploads.py): its answer starts."""
        req = stream.req
        reject = stream.reject
        if reject is not None:
            req.dispatched = True
            stream.problem(req, reject.status, reject.detail)
            return
        dispatch(self.ctx, stream, req, True)

    # ------------------------------------------------------------- closing
    def goaway(self, last_sid: int | None = None) -> None:
        """Graceful GOAWAY: no new streams, the open ones finish, then close."""
        if self.goaway_sent or self.closing or self.transport is None:
            return
        self.goaway_sent = True
        self.last_sid = self.engine.highest_inbound if last_sid is None else last_sid
        self.flush()
        self.transport.write(goaway_frame(self.last_sid, NO_ERROR))
        if not self.streams:
            # owed nothing but the GOAWAY: a client that does not read (an idle one, as
            # at a stop) must not hold the connection until the TLS layer's 30 s
            self.close(owing_nothing=True)

    def fail(self, code: int) -> None:
        """A connection error: GOAWAY with `code`, every stream cancelled, closed."""
        if self.closing:
            return
        self.engine.close_connection(code)
        self.flush()
        self.close(owing_nothing=True)

    def close(self, owing_nothing: bool = False) -> None:
        """Close after what is written; `owing_nothing` when no answer is on its way
        (a connection error, an idle connection): then TLS does not wait long for the
        client's close_notify (see close_owing_nothing)."""
        if not self.closing:
            self.flush()  # what the last stream ended with leaves before the FIN
        self.closing = True
        self.uploads.closed = True
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            stream.on_reset()
        if self.transport is not None:
            if owing_nothing:
                close_owing_nothing(self.ctx.loop, self.transport, True)
            else:
                self.transport.close()

    def in_progress(self) -> int:
        return len(self.streams)

    def close_idle(self) -> None:
        """Draining: tell the client with GOAWAY, close once the streams are done."""
        self.goaway()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    # --------------------------------------------------------------- timer
    def _on_tick(self) -> None:
        self.timer = None
        if self.closing or self.transport is None:
            return
        now = self.ctx.loop.time()
        if now - self.control_since >= RESET_WINDOW:
            self.control_since = now
            self.guard.control = 0
            self.engine.ignored_blocks = 0
        if self.block_since and now - self.block_since > self.header_timeout:
            # the preface or a header block that never completes (slowloris)
            self.fail(PROTOCOL_ERROR if self.preface_seen else NO_ERROR)
            return
        if not self.streams and now - self.idle_since > self.idle_timeout:
            self.goaway()  # (with no stream left, this closes the connection too)
            if not self.closing:  # a GOAWAY sent earlier: close here
                self.close(owing_nothing=True)
            return
        if self.uploads.count:
            self.uploads.expire(now, list(self.streams.values()))
            self.flush()
        self.timer = self.ctx.loop.call_later(_TICK, self._on_tick)


def start_http2(ctx: ServerContext, transport: Any) -> None:
    """Take over a TLS connection whose ALPN chose h2 (the handshake is done)."""
    protocol = HTTP2Connection(ctx)
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
