"""The HTTP/2 connection protocol: frames in, streams dispatched, frames out.

Started on a TLS connection whose ALPN chose ``h2`` (the HTTP/1.1 protocol hands
the transport over). Requests of one received chunk are dispatched only after the
whole chunk is processed, so a stream reset in the same read never reaches a
backend (rapid reset); past `http2.max_resets` early cancellations in 10 seconds
the connection is closed with GOAWAY(ENHANCE_YOUR_CALM).

Output is coalesced: frames (and response bodies handed over by streams) wait until
the end of the event-loop iteration, then leave in one transport write. With many
streams answered by many upstream reads in the same iteration, that is one TLS
record and one send() for all of them instead of a few per response, and a body's
last DATA frame carries END_STREAM instead of an empty frame after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame

from bastion.http.request import Request
from bastion.http1.server import close_owing_nothing
from bastion.http2.decoder import MemoDecoder
from bastion.http2.encoder import StaticEncoder
from bastion.http2.guard import FrameGuard
from bastion.http2.headers import Malformed, StreamReject, build_request, check_trailers
from bastion.http2.stream import Stream
from bastion.http2.uploads import Uploads

if TYPE_CHECKING:
    from bastion.server.context import WorkerContext

log = logging.getLogger("bastion.http2")

_RESET_WINDOW = 10.0  # seconds over which early cancellations are counted
_MAX_CONTINUATIONS = 16  # more CONTINUATION frames in one header block: a flood
# PING, SETTINGS, PRIORITY and empty DATA frames allowed per _RESET_WINDOW: browsers
# send a handful per connection, a flood sends them by the thousand
_MAX_CONTROL = 1000
_TICK = 1.0


class HTTP2Connection(asyncio.Protocol):
    transport: Any = None
    closing = False
    write_paused = False
    goaway_sent = False
    last_sid = 0
    flush_scheduled = False
    requests = 0
    resets = 0
    reset_window_start = 0.0
    preface_seen = False
    block_since = 0.0
    control_since = 0.0
    timer: asyncio.TimerHandle | None = None

    def __init__(self, ctx: WorkerContext) -> None:
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
        self.streams: dict[int, Stream] = {}
        # streams with response bytes to move into DATA frames at the next flush
        self.ready: list[Stream] = []
        # what a header block may take compressed: the head limits plus HPACK's
        # per-field overhead; decoded lists are bounded by SETTINGS below
        block_limit = limits.max_header_bytes + limits.max_uri_bytes + 4096
        self.guard = FrameGuard(block_limit, _MAX_CONTINUATIONS)
        # Header validation and outbound normalization are off: `headers.py` does
        # the equivalent RFC 9113 §8.2/§8.3 checks in the one pass that maps the
        # fields anyway (build_request inbound, response_headers outbound); h2's
        # chain of per-field generators cost several times that. Its HPACK encoder
        # is swapped for a static-table one (see encoder.py). h2 still joins split
        # Cookie fields and checks DATA lengths against Content-Length.
        config = H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.h2 = H2Connection(config)
        self.h2.encoder = StaticEncoder()  # type: ignore[assignment]
        # the same decoder with a memo for repeated all-indexed header blocks
        self.h2.decoder = MemoDecoder(self.h2.decoder.max_header_list_size)
        self.h2.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams,
                SettingCodes.MAX_HEADER_LIST_SIZE: block_limit,
                SettingCodes.INITIAL_WINDOW_SIZE: window,
            },
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
        h2 = self.h2
        h2.initiate_connection()
        # the connection window is shared by all streams: wider than one stream's
        h2.increment_flow_control_window(self.connection_window - 65535)
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

    # --------------------------------------------------------------- input
    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        guard = self.guard
        if not guard.feed(data):
            log.warning("http2: header block flood from %s: closing", self.client_ip)
            self.fail(ErrorCodes.ENHANCE_YOUR_CALM)
            return
        if guard.control > _MAX_CONTROL:
            log.warning("http2: control frame flood from %s: closing", self.client_ip)
            self.fail(ErrorCodes.ENHANCE_YOUR_CALM)
            return
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as exc:
            code = getattr(exc, "error_code", ErrorCodes.PROTOCOL_ERROR)
            log.info("http2: protocol error from %s: %s", self.client_ip, exc)
            self.fail(code)
            return
        now = self.ctx.loop.time()
        if guard.in_block:
            if not self.block_since:
                self.block_since = now
        elif self.preface_seen:
            self.block_since = 0.0
        try:
            self._handle_events(events, now)
        except Exception:
            # a bug must cost this connection at most, never the worker
            log.exception("http2: failed handling frames from %s", self.client_ip)
            self.fail(ErrorCodes.INTERNAL_ERROR)

    def _handle_events(self, events: list[Any], now: float) -> None:
        guard = self.guard
        new: list[Stream] = []
        for event in events:
            if isinstance(event, DataReceived):
                stream = self.streams.get(event.stream_id)
                if stream is None:
                    self.ack(event.stream_id, event.flow_controlled_length)
                else:
                    if stream.body_at:
                        stream.body_at = now
                    stream.on_data(event.data, event.flow_controlled_length)
            elif isinstance(event, RequestReceived):
                stream = self._open(event, now)
                if stream is not None:
                    new.append(stream)
            elif isinstance(event, StreamEnded):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.on_end()
            elif isinstance(event, TrailersReceived):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    self._on_trailers(stream, event.headers or [], now)
            elif isinstance(event, WindowUpdated):
                if event.stream_id == 0:
                    for stream in list(self.streams.values()):
                        if stream.pending:
                            self._move(stream)
                else:
                    stream = self.streams.get(event.stream_id)
                    if stream is not None and stream.pending:
                        self._move(stream)
            elif isinstance(event, StreamReset):
                self._on_client_reset(event.stream_id, now)
            elif isinstance(event, RemoteSettingsChanged):
                if not self.preface_seen:
                    self.preface_seen = True
                    self.block_since = now if guard.in_block else 0.0
                for stream in list(self.streams.values()):
                    if stream.pending:
                        self._move(stream)
            elif isinstance(event, ConnectionTerminated):
                # the client is leaving: what it still waits for cannot be sent
                self.close()
                return
            if self.closing:
                return
        for stream in new:
            if not stream.closed and not stream.answered:
                self.uploads.start(stream, now)
                if stream.waiting and stream.unacked:
                    # body bytes that came with its HEADERS, before it had to wait
                    self.hold_waiting(stream, stream.unacked)
        if self.uploads.waiting:
            self.uploads.admit()
        self.flush_soon()

    def hold_waiting(self, stream: Stream, size: int) -> None:
        """`size` more body bytes held by a waiting stream: credited back to the
        connection window within the waiting streams' budget, else the stream is refused."""
        if self.uploads.hold(stream, size):
            self.credit_connection(size)
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
        self._reset(stream.sid, ErrorCodes.REFUSED_STREAM)
        self.ack(stream.sid, stream.unacked)
        stream.unacked = 0
        self._forget(stream)

    def credit_connection(self, size: int) -> None:
        """Reopen the connection window (not the stream's) for bytes a waiting stream holds;
        h2 counts them again when the stream acknowledges them, never past the window."""
        if self.closing or not size:
            return
        with contextlib.suppress(ProtocolError):
            self.h2.increment_flow_control_window(size)
        self.flush_soon()

    def _reset(self, sid: int, code: ErrorCodes) -> None:
        """Reset a stream the client may already have reset: its RST_STREAM can arrive in
        the same read as the HEADERS, and h2 has applied it before we see the request."""
        with contextlib.suppress(ProtocolError, StreamClosedError):
            self.h2.reset_stream(sid, code)

    def _open(self, event: RequestReceived, now: float) -> Stream | None:
        sid = event.stream_id
        if self.goaway_sent and sid > self.last_sid:
            # after our GOAWAY: never processed, the client may retry it elsewhere
            self._reset(sid, ErrorCodes.REFUSED_STREAM)
            return None
        req = Request()
        req.version = "2.0"
        req.client_ip = self.client_ip
        req.start = now
        stream = Stream(self, sid, req)
        try:
            build_request(
                event.headers or [],
                req,
                self.max_header_bytes,
                self.max_uri_bytes,
                self.max_body_bytes,
            )
        except StreamReject as exc:
            stream.reject = exc
        except Malformed as exc:
            # a stream error (RFC 9113 §8.1.1): this stream is reset, its neighbours
            # go on; it counts like a cancelled stream against the reset limit
            log.info("http2: malformed request from %s: %s", self.client_ip, exc)
            self._reset(sid, ErrorCodes.PROTOCOL_ERROR)
            self._count_early_reset(now)
            return None
        self.streams[sid] = stream
        if req.content_length is None and event.stream_ended is None:
            req.chunked = True  # a body of unknown length: chunked to the upstream
        elif event.stream_ended is not None and req.content_length:
            stream.reject = StreamReject(400, "The body is shorter than its Content-Length.")
        ctx = self.ctx
        if req.xrid is not None and ctx.plan.is_trusted(self.client_ip):
            req.request_id = req.xrid.decode("latin-1")
        else:
            req.request_id = ctx.next_request_id()
        self.requests += 1
        if self.requests >= self.max_requests:
            self.goaway(sid)  # this stream is still served; the client reconnects for more
        return stream

    def _on_trailers(self, stream: Stream, fields: list[Any], now: float) -> None:
        """Request trailers are checked like the head (and then dropped): malformed
        ones reset the stream before its body ends, so the upstream never sees the
        request complete."""
        try:
            check_trailers(fields)
        except Malformed as exc:
            log.info("http2: malformed trailers from %s: %s", self.client_ip, exc)
            if stream.req.status == 0:
                stream.req.status = 400  # for the access log of a dispatched request
            stream.on_reset()
            stream.closed = True
            self._reset(stream.sid, ErrorCodes.PROTOCOL_ERROR)
            self._forget(stream)
            self._count_early_reset(now)

    def _dispatch(self, stream: Stream) -> None:
        req = stream.req
        req.dispatched = True
        reject = stream.reject
        if reject is not None:
            stream.problem(req, reject.status, reject.detail)
            return
        try:
            route, status, allow = self.ctx.plan.route(req, True)
            if route is None:
                headers = b"Allow: " + allow + b"\r\n" if allow else b""
                stream.problem(req, status, headers=headers)
                return
            req.route = route
            req.route_name = route.name
            req.extra_head = route.extra_head
            route.handler.handle(stream, req)
        except Exception:
            log.exception("request %s failed in its handler", req.request_id)
            if not stream.resp_started:
                stream.problem(req, 500)
            else:
                stream.abort()

    def _on_client_reset(self, sid: int, now: float) -> None:
        stream = self.streams.pop(sid, None)
        if stream is None:
            return
        early = not stream.answered
        stream.on_reset()
        self._stream_gone()
        if early:
            # a stream cancelled before its answer: the rapid reset pattern when
            # it repeats (CVE-2023-44487); the backend work was cancelled above
            self._count_early_reset(now)

    def _count_early_reset(self, now: float) -> None:
        if now - self.reset_window_start > _RESET_WINDOW:
            self.reset_window_start = now
            self.resets = 0
        self.resets += 1
        if self.resets > self.max_resets:
            log.warning("http2: rapid reset from %s: closing", self.client_ip)
            self.fail(ErrorCodes.ENHANCE_YOUR_CALM)

    # -------------------------------------------------------------- output
    def send_headers(self, stream: Stream, fields: list[tuple[bytes, bytes]], end: bool) -> None:
        if self.closing or stream.closed:
            return
        try:
            self.h2.send_headers(stream.sid, fields, end_stream=end)
        except StreamClosedError:
            stream.on_reset()  # the client reset it meanwhile
            self._forget(stream)
            return
        except ProtocolError as exc:
            self.unsendable(stream, exc)
            return
        if end:
            self._sent_end(stream)
        self.flush_soon()

    def unsendable(self, stream: Stream, exc: Exception) -> None:
        """A response head HTTP/2 cannot carry (from an upstream): this stream fails alone."""
        log.warning("http2: response %s not sendable: %s", stream.req.request_id, exc)
        if stream.req.status < 500:
            stream.req.status = 502
        stream.abort()

    def send_pending(self, stream: Stream) -> None:
        """Queue a stream's pending bytes (or its end) for the next flush."""
        if stream.queued or self.closing or stream.closed:
            return
        stream.queued = True
        self.ready.append(stream)
        self.flush_soon()

    def _move(self, stream: Stream) -> None:
        """Move a stream's pending bytes into DATA frames as far as the windows allow;
        the last one carries END_STREAM when the response is complete."""
        if self.closing or stream.closed:
            return
        h2 = self.h2
        sid = stream.sid
        pending = stream.pending
        try:
            while pending and not self.write_paused:
                window = h2.local_flow_control_window(sid)
                if window <= 0:
                    break
                chunk = pending[0]
                size = min(window, h2.max_outbound_frame_size, len(chunk))
                stream.pending_bytes -= size
                if size < len(chunk):
                    h2.send_data(sid, chunk[:size])
                    pending[0] = chunk[size:]
                else:
                    pending.popleft()
                    if not pending and stream.ended:
                        h2.send_data(sid, chunk, end_stream=True)
                        self._sent_end(stream)
                        break
                    h2.send_data(sid, chunk)
            else:
                if not pending and stream.ended:
                    h2.end_stream(sid)
                    self._sent_end(stream)
        except (ProtocolError, StreamClosedError):
            stream.on_reset()
            self._forget(stream)
        stream.drained()

    def _sent_end(self, stream: Stream) -> None:
        stream.closed = True
        if not stream.req.body_done and not self.closing:
            # answered before the body was complete: ask the client to stop
            # sending it, without error (RFC 9113 §8.1)
            self._reset(stream.sid, ErrorCodes.NO_ERROR)
        self._forget(stream)

    def _forget(self, stream: Stream) -> None:
        if stream.uploading:
            self.uploads.done(stream)
        if stream.held:
            self.uploads.release(stream)
        if self.streams.pop(stream.sid, None) is not None:
            self._stream_gone()

    def _stream_gone(self) -> None:
        if not self.streams:
            self.idle_since = self.ctx.loop.time()
            if self.goaway_sent and not self.closing:
                self.close()

    def reset(self, stream: Stream, cancelled: bool) -> None:
        stream.closed = True
        stream.pending.clear()
        if not self.closing:
            self._reset(stream.sid, ErrorCodes.INTERNAL_ERROR)
            self.flush_soon()
        self._forget(stream)

    def ack(self, sid: int, size: int) -> None:
        if self.closing or not size:
            return
        try:
            self.h2.acknowledge_received_data(size, sid)
        except (ProtocolError, StreamClosedError):
            return
        self.flush_soon()

    def flush_soon(self) -> None:
        """Write what is waiting once the current loop iteration's events are handled."""
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.ctx.loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self.flush_scheduled = False
        if self.closing:
            return
        self.flush()

    def flush(self) -> None:
        ready = self.ready
        if ready:
            self.ready = []
            for stream in ready:
                stream.queued = False
                self._move(stream)
        data = self.h2.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def log(self, req: Request) -> None:
        access_log = self.ctx.access_log
        if access_log is not None:
            access_log.write(req, self.ctx.loop.time())

    # ------------------------------------------------------------- closing
    def goaway(self, last_sid: int | None = None) -> None:
        """Graceful GOAWAY: no new streams, the open ones finish, then close.

        Written by hand: `h2` forbids sending on any stream once it has sent a GOAWAY,
        and the open streams still need their answers."""
        if self.goaway_sent or self.closing or self.transport is None:
            return
        self.goaway_sent = True
        self.last_sid = self.h2.highest_inbound_stream_id if last_sid is None else last_sid
        self.flush()
        frame = GoAwayFrame(0)
        frame.last_stream_id = self.last_sid
        frame.error_code = ErrorCodes.NO_ERROR
        self.transport.write(frame.serialize())
        if not self.streams:
            self.close()

    def fail(self, code: int) -> None:
        """A connection error: GOAWAY with `code`, every stream cancelled, closed."""
        if self.closing:
            return
        with contextlib.suppress(ProtocolError):
            self.h2.close_connection(error_code=code)
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
        if now - self.control_since >= _RESET_WINDOW:
            self.control_since = now
            self.guard.control = 0
        if self.block_since and now - self.block_since > self.header_timeout:
            # the preface or a header block that never completes (slowloris)
            self.fail(ErrorCodes.PROTOCOL_ERROR if self.preface_seen else ErrorCodes.NO_ERROR)
            return
        if not self.streams and now - self.idle_since > self.idle_timeout:
            self.goaway()
            self.close(owing_nothing=True)
            return
        if self.uploads.count:
            self.uploads.expire(now, list(self.streams.values()))
            self.flush()
        self.timer = self.ctx.loop.call_later(_TICK, self._on_tick)


def start_http2(ctx: WorkerContext, transport: Any) -> None:
    """Take over a TLS connection whose ALPN chose h2 (the handshake is done)."""
    protocol = HTTP2Connection(ctx)
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
