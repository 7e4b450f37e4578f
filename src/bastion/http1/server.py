"""The client side of HTTP/1.1: one asyncio Protocol per downstream connection.

Parsing is httptools (llhttp, strict mode). Parsed requests become data: the
callbacks only record them in a queue, and handlers run after `feed_data`
returns, so a framing error anywhere in a received chunk is seen before a single
byte of that request is forwarded. Handlers answer through the small API at the
bottom (respond / problem / write_head / write_body / end_response).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

import httptools

from bastion.http.problem import PROBLEM_TYPE, problem_body
from bastion.http.request import BODY_FIXED, BODY_LENGTH, BODY_NONE, REFUSED_METHODS, Request
from bastion.http.status import fixed_head
from bastion.http1.target import FRAGMENT, SEEN_CANONICAL, set_origin_target
from bastion.routing import parse_host

if TYPE_CHECKING:
    from bastion.server.context import WorkerContext

log = logging.getLogger("bastion.http1")

# Timer kinds: what the connection is waiting for from the client.
_T_NONE, _T_HEAD, _T_BODY, _T_IDLE, _T_LINGER = range(5)

# Reasons to stop reading from the client, as bits (several may hold at once).
PAUSE_QUEUE = 1  # pipelined requests wait for the current response
PAUSE_UPSTREAM = 2  # the upstream cannot take more request body yet
PAUSE_BUFFER = 4  # a handler is not ready for the body yet

_SPECIAL = frozenset(
    (
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"expect",
        b"upgrade",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-request-id",
    )
)
# the usual methods as shared str objects (their hash is computed once, and a log line or
# a cache key made of them compares by identity)
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LINGER_SECONDS = 2.0
_MAX_BUFFERED_BODY = 256 * 1024
_VERSION_DETAIL = "Only HTTP/1.0 and HTTP/1.1 are supported on this connection."


def close_owing_nothing(loop: asyncio.AbstractEventLoop, transport: Any, secure: bool) -> None:
    """Close a connection that is owed nothing more than what was just written (an
    error answer, an idle or timed-out connection). Over TLS the close_notify leaves
    at once, then the client's is awaited (its last bytes are read and dropped, so it
    gets no reset) for the lingering time only: the event loop would otherwise keep
    the connection, and its max_connections slot, for up to 30 s."""
    transport.close()
    if secure:
        loop.call_later(_LINGER_SECONDS, _drop_if_flushed, transport)


def _drop_if_flushed(transport: Any) -> None:
    # An answer still leaving (a client slower than the lingering time) is left to the
    # TLS layer's own shutdown timeout rather than cut.
    if not transport.get_write_buffer_size():
        transport.abort()


class ParseReject(Exception):
    """The client sent something we refuse: answered with `status`, then closed."""

    def __init__(self, status: int, detail: str | None = None) -> None:
        super().__init__(status, detail)
        self.status = status
        self.detail = detail
        self.head = False  # it answers a HEAD request whose head did not complete


class HTTP1Connection(asyncio.Protocol):
    # Per-connection state starts from these class-level defaults, so opening a
    # connection assigns only what differs (new connections per second count too).
    transport: asyncio.Transport | None = None
    client_ip = ""
    # parsing state of the request being received
    req: Request | None = None  # being parsed
    url_bytes = 0
    # the last Host value seen on this connection and its parsed form: clients
    # send the same one on every request, so it is validated once
    last_host_value = b""
    last_host = ""
    head_bytes = 0
    head_raw = 0
    in_head = False
    client_eof = False
    reject: ParseReject | None = None
    active: Request | None = None  # the request being answered (first in the queue)
    # response state
    resp_started = False
    resp_chunked = False
    resp_keep_alive = True
    producer: Any = None  # paused/resumed with the client's write buffer
    write_paused = False
    read_paused = 0
    upgraded = False
    tunnel: Any = None
    closing = False
    lingering = False
    # While an upstream chunk is being parsed, response bytes collect here and
    # leave in one write: head, body and terminator usually share a packet.
    corked: list[bytes] | None = None
    # one lazily re-armed timer (aiohttp's trick: re-arm only when it fires early)
    timer_kind = _T_NONE
    timer_deadline = 0.0
    timer_handle: asyncio.TimerHandle | None = None
    timer_at = 0.0  # when timer_handle fires

    def __init__(self, ctx: WorkerContext, scheme: bytes = b"http") -> None:
        self.ctx = ctx
        self.scheme = scheme
        self.secure = scheme == b"https"
        self.parser = httptools.HttpRequestParser(self)
        # limits copied once per connection from the plan in force when it opened
        plan = ctx.plan
        limits = plan.limits
        self.max_header_bytes = limits.max_header_bytes
        self.max_uri_bytes = limits.max_uri_bytes
        self.max_body_bytes = limits.max_body_bytes
        timeouts = plan.timeouts
        self.header_timeout = timeouts.header
        self.body_timeout = timeouts.body
        self.idle_timeout = timeouts.keepalive
        self.send_timeout = timeouts.send
        self.url_parts: list[bytes] = []
        # requests parsed and waiting; the first one is the active one once dispatched
        self.queue: deque[Request] = deque()

    # ----------------------------------------------------------------- transport
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop transports are not asyncio.Transport subclasses; same interface
        self.transport = transport  # type: ignore[assignment]
        ctx = self.ctx
        if len(ctx.connections) >= ctx.plan.limits.max_connections or ctx.draining:
            transport.abort()  # type: ignore[attr-defined]
            return
        if self.secure and ctx.start_http2 is not None:
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
                # ALPN chose HTTP/2: that protocol takes over. Drop our reference so
                # this object (kept alive by its parser cycle) does not hold the transport.
                self.transport = None
                ctx.start_http2(transport)
                return
        ctx.connections.add(self)
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else "unix"
        self._set_timer(_T_HEAD, self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.ctx.connections.discard(self)
        self.timer_kind = _T_NONE
        if self.timer_handle is not None:
            self.timer_handle.cancel()
            self.timer_handle = None
        if self.tunnel is not None:
            self.tunnel.peer_closed()
        active = self.active
        if active is not None:
            if active.status == 0:
                active.status = 499
            self._cancel_handler(active)
            self._log(active)
            self.active = None
        self.queue.clear()
        self.producer = None
        # The parser refers back to this object, so the connection waits for the cycle
        # collector; dropping the transport now frees a TLS connection's OpenSSL state
        # (tens of KB each) at once instead of piling it up between collections.
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

    def pause_reading(self, reason: int) -> None:
        if not self.read_paused and self.transport is not None and not self.closing:
            self.transport.pause_reading()
        self.read_paused |= reason

    def resume_reading(self, reason: int) -> None:
        if self.read_paused & reason:
            self.read_paused &= ~reason
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
                if len(active.upgrade_data) > _MAX_BUFFERED_BODY:
                    self.pause_reading(PAUSE_BUFFER)
            return
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
        except ParseReject as exc:
            self.reject = exc
        if self.in_head and self.reject is None:
            # a head still incomplete after this whole chunk: all of it was head
            self.head_raw += len(data)
            if self.head_raw > self.max_header_bytes + self.max_uri_bytes:
                # no version parsed yet: still in the request line, the target is long
                in_line = self.req is None and self.parser.get_http_version() == "0.0"
                self.reject = ParseReject(414 if in_line else 431)
        if self.reject is not None:
            self.pause_reading(PAUSE_QUEUE)
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
            self.pause_reading(PAUSE_QUEUE)

    def _classify_parse_error(self, exc: Exception) -> ParseReject:
        reject = self._refusal(exc)
        # A HEAD request refused before its head completed still gets no body. llhttp keeps
        # the previous message's method until it has read a valid one, hence the check of
        # the reason (a method it could not read is no HEAD).
        reject.head = "method" not in str(exc).lower() and self.parser.get_method() == b"HEAD"
        return reject

    def _refusal(self, exc: Exception) -> ParseReject:
        context = exc.__context__
        if isinstance(context, ParseReject):
            return context
        if self.req is None and self.in_head and self.url_parts:
            reason = str(exc)
            if reason == "Invalid HTTP version":
                # well-formed digits, a version llhttp does not speak (HTTP/3.0)
                return ParseReject(505, _VERSION_DETAIL)
            if "HTTP/" in reason or "version" in reason.lower():
                return ParseReject(400, "The request line is malformed.")
        return ParseReject(400)

    # ---------------------------------------------------------- parser callbacks
    def on_message_begin(self) -> None:
        self.in_head = True
        self.head_bytes = 0
        self.head_raw = 0
        self.url_bytes = 0
        self.url_parts = []
        self.req = None
        if self.active is not None:
            # A pipelined request while a response is in progress: its head timer
            # starts when that response is done (end_response), not now.
            self._clear_timer()
        elif self.timer_kind != _T_HEAD:
            self._set_timer(_T_HEAD, self.header_timeout)

    def on_url(self, url: bytes) -> None:
        self.url_parts.append(url)
        self.url_bytes += len(url)
        if self.url_bytes > self.max_uri_bytes:
            raise ParseReject(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self.req
        if req is None:
            req = self.req = Request()
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.max_header_bytes:
            raise ParseReject(431)
        if not self.in_head:
            # a trailer field of a chunked body: counted against the head limit above, then
            # dropped; it never becomes a header field, a credential or anything forwarded
            return
        lname = name.lower()
        req.headers.append((lname, name, value))
        if lname in _SPECIAL:
            self._special_header(req, lname, value)

    def _special_header(self, req: Request, lname: bytes, value: bytes) -> None:
        if lname == b"host":
            if req.host:
                raise ParseReject(400, "The request has more than one Host header.")
            if value == self.last_host_value:
                host = self.last_host
            else:
                parsed = parse_host(value.decode("latin-1"))
                if parsed is None:
                    raise ParseReject(400, "The Host header is malformed.")
                host = self.last_host = parsed
                self.last_host_value = value
            req.host = host
            req.host_header = value
        elif lname == b"transfer-encoding":
            codings = value.lower().replace(b" ", b"").replace(b"\t", b"")
            if codings != b"chunked" or req.chunked:
                raise ParseReject(501)
            req.chunked = True
        elif lname == b"content-length":
            req.content_length = int(value)  # llhttp has already checked the digits
        elif lname == b"connection":
            req.connection_tokens = (
                frozenset(t.strip().lower() for t in value.split(b",") if t.strip())
                | req.connection_tokens
            )
        elif lname == b"expect":
            if value.lower() == b"100-continue":
                req.expect_continue = True
            else:
                raise ParseReject(417, "Only the 100-continue expectation is supported.")
        elif lname == b"upgrade":
            req.upgrade = value
        elif lname == b"x-forwarded-for":
            req.xff = value if req.xff is None else req.xff + b", " + value
        elif lname == b"x-forwarded-proto":
            req.xfp = value
        elif lname == b"x-forwarded-host":
            req.xfh = value
        elif lname == b"x-request-id":
            req.xrid = value

    def on_headers_complete(self) -> None:
        self.in_head = False
        req = self.req
        if req is None:
            req = self.req = Request()
        parser = self.parser
        version = parser.get_http_version()
        if version == "1.1":
            req.version = "1.1"  # the module's own str objects: hashed once, compared by identity
        elif version == "1.0":
            req.version = "1.0"
        else:
            raise ParseReject(505, _VERSION_DETAIL)
        method = parser.get_method()
        known = _METHODS.get(method)
        if known is None:
            if method in REFUSED_METHODS:
                req.method = method.decode("ascii")  # for the access log line
                raise ParseReject(501, REFUSED_METHODS[method])
            known = method.decode("ascii")
        req.method = known
        target = b"".join(self.url_parts)
        req.target = target
        if version == "1.1":
            if not req.host:
                raise ParseReject(400, "HTTP/1.1 requests need a Host header.")
        elif req.chunked:
            raise ParseReject(400, "HTTP/1.0 requests cannot use chunked transfer coding.")
        self._parse_target(req, target)
        req.keep_alive = parser.should_keep_alive()
        if not parser.should_upgrade():
            req.upgrade = None
        elif req.has_body:
            # llhttp hands over everything after an upgrade request's head unparsed, so its
            # body could be forwarded neither in a tunnel nor as a plain request's body; a
            # WebSocket handshake is a GET without one (RFC 6455 §4.1)
            raise ParseReject(400, "An upgrade request cannot carry a body.")
        req.client_ip = self.client_ip
        req.start = self.ctx.loop.time()
        max_body = self.max_body_bytes
        if max_body and req.content_length is not None and req.content_length > max_body:
            raise ParseReject(413)
        self.queue.append(req)
        if req.has_body:
            self._set_timer(_T_BODY, self.body_timeout)
        else:
            self._clear_timer()

    def _parse_target(self, req: Request, target: bytes) -> None:
        if target[:1] != b"/":
            if target == b"*" and req.method == "OPTIONS":
                req.path = req.raw_path = "*"
                return
            if b"#" in target:  # parse_url would drop the fragment without a word
                raise ParseReject(400, FRAGMENT)
            try:
                url = httptools.parse_url(target)
            except httptools.HttpParserInvalidURLError:
                raise ParseReject(400, "The request target is malformed.") from None
            if url.host is None or url.schema not in (b"http", b"https"):
                raise ParseReject(400, "The request target is malformed.")
            # absolute-form: the target's authority replaces Host (RFC 9112 §3.2.2)
            host = parse_host(url.host.decode("latin-1"))
            if host is None:
                raise ParseReject(400, "The request target is malformed.")
            req.host = host
            req.host_header = url.host + (b":%d" % url.port if url.port else b"")
            target = (url.path or b"/") + (b"?" + url.query if url.query else b"")
            req.target = target
        # set_origin_target's first step, inlined for the path already found canonical
        # (a path in that set holds no "#", so only the query is scanned for one)
        raw = target.decode("latin-1")
        path, _sep, query = raw.partition("?")
        if path in SEEN_CANONICAL and "#" not in query:
            req.raw_path = req.path = path
            req.query = query
            return
        refused = set_origin_target(req, target)
        if refused is not None:
            raise ParseReject(400, refused)

    def on_body(self, body: bytes) -> None:
        req = self.queue[-1]
        req.body_bytes += len(body)
        if self.max_body_bytes and req.body_bytes > self.max_body_bytes:
            raise ParseReject(413)
        sink = req.sink
        if sink is not None:
            sink.on_body(body)
        elif req.dispatched and req.body_buffer is None:
            pass  # the handler does not want the body: read and dropped
        else:
            if req.body_buffer is None:
                req.body_buffer = []
            req.body_buffer.append(body)
            if req.dispatched and req.body_bytes > _MAX_BUFFERED_BODY:
                self.pause_reading(PAUSE_BUFFER)
        if self.timer_kind == _T_BODY:
            self.timer_deadline = self.ctx.loop.time() + self.body_timeout

    def on_message_complete(self) -> None:
        req = self.queue[-1] if self.queue else self.req
        if req is None:
            return
        req.body_done = True
        if req.sink is not None:
            req.sink.on_body_end()
        if self.timer_kind == _T_BODY:
            self._clear_timer()

    # ----------------------------------------------------------------- dispatch
    def _dispatch_next(self) -> None:
        req = self.queue[0]
        self.active = req
        req.dispatched = True
        self.resp_started = False
        self.resp_chunked = False
        # an Upgrade request that is not switched leaves the connection unusable
        self.resp_keep_alive = req.keep_alive and req.upgrade is None
        ctx = self.ctx
        plan = ctx.plan
        if req.xrid is not None and plan.is_trusted(self.client_ip):
            req.request_id = req.xrid.decode("latin-1")
        else:
            req.request_id = ctx.next_request_id()
        try:
            route, status, allow = plan.route(req, self.secure)
            if route is None:
                headers = b"Allow: " + allow + b"\r\n" if allow else b""
                self.problem(req, status, headers=headers)
                return
            req.route = route
            req.route_name = route.name
            req.extra_head = route.extra_head
            route.handler.handle(self, req)
        except Exception:
            log.exception("request %s failed in its handler", req.request_id)
            if not self.resp_started and self.active is req:
                self.problem(req, 500)
            elif self.transport is not None:
                self.transport.abort()

    def take_body(self, req: Request, sink: Any) -> list[bytes]:
        """Install `sink` for the rest of the body; returns what was buffered so far."""
        buffered = req.body_buffer or []
        req.body_buffer = None
        req.sink = sink
        self.resume_reading(PAUSE_BUFFER)
        return buffered

    def send_continue(self, req: Request) -> None:
        if req.expect_continue and not req.body_done and self.transport is not None:
            req.expect_continue = False
            self._write(_CONTINUE)

    # ----------------------------------------------------------------- output
    def respond(
        self,
        req: Request,
        status: int,
        body: bytes = b"",
        content_type: bytes = b"text/plain; charset=utf-8",
        headers: bytes = b"",
    ) -> None:
        """A complete response with a known body (errors, redirects, small files)."""
        if self.transport is None or self.closing:
            return
        if req.expect_continue and not req.body_done:
            self.resp_keep_alive = False  # the body will not be read
        self.resp_started = True
        req.status = status
        fields = fixed_head(status, self.ctx.date_header, body, content_type, headers)
        if req.on_head is not None:
            fields = req.on_head(req, fields, BODY_FIXED)[0]
        head = b"".join(
            (
                fields,
                req.extra_head,
                b"X-Request-ID: " + req.request_id.encode("latin-1") + b"\r\n",
                b"" if self.resp_keep_alive else b"Connection: close\r\n",
                b"\r\n",
            )
        )
        if req.method == "HEAD" or status in (204, 304):
            body = b""
        self._write(head + body)
        req.bytes_out += len(head) + len(body)
        self.end_response()

    def problem(
        self, req: Request, status: int, detail: str | None = None, headers: bytes = b""
    ) -> None:
        body = problem_body(status, detail, req.request_id)
        self.respond(req, status, body, PROBLEM_TYPE.encode(), headers)

    def write_head(self, req: Request, head: bytes, framing: int) -> None:
        """Send a response head built by a handler: `head` is the status line and
        header fields (without the framing fields below), `framing` says whether the
        body has a Content-Length (already in `head`), no body, or an unknown length."""
        if self.transport is None or self.closing:
            return
        self.resp_started = True
        if req.expect_continue and not req.body_done:
            self.resp_keep_alive = False
        if req.on_head is not None:
            head, framing = req.on_head(req, head, framing)
        tail: list[bytes] = [
            head,
            req.extra_head,
            b"X-Request-ID: ",
            req.request_id.encode("latin-1"),
            b"\r\n",
        ]
        if framing != BODY_NONE and framing != BODY_LENGTH:
            if req.version == "1.1":
                self.resp_chunked = True
                tail.append(b"Transfer-Encoding: chunked\r\n")
            else:
                self.resp_keep_alive = False
        if not self.resp_keep_alive:
            tail.append(b"Connection: close\r\n")
        elif req.version == "1.0":
            tail.append(b"Connection: keep-alive\r\n")
        tail.append(b"\r\n")
        data = b"".join(tail)
        req.bytes_out += len(data)
        if self.corked is not None:
            self.corked.append(data)
        else:
            self.transport.write(data)

    def write_body(self, data: bytes) -> None:
        active = self.active
        if active is not None and active.body_filter is not None:
            data = active.body_filter.feed(data)
        self._write_body(data)

    def _write_body(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or not data:
            return
        corked = self.corked
        if self.resp_chunked:
            if corked is not None:
                corked += (b"%x\r\n" % len(data), data, b"\r\n")
            else:
                transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        elif corked is not None:
            corked.append(data)
        else:
            transport.write(data)
        if self.active is not None:
            self.active.bytes_out += len(data)

    def end_response(self) -> None:
        req = self.active
        if req is None:
            return
        if req.body_filter is not None:
            body_filter = req.body_filter
            req.body_filter = None
            self._write_body(body_filter.finish())
        transport = self.transport
        if self.resp_chunked and transport is not None:
            if self.corked is not None:
                self.corked.append(b"0\r\n\r\n")
            else:
                transport.write(b"0\r\n\r\n")
        self.resp_chunked = False
        self.producer = None
        self.active = None
        if self.queue and self.queue[0] is req:
            self.queue.popleft()
        self._log(req)
        if transport is None or self.closing:
            return
        if self.reject is not None and not self.queue:
            self._send_reject()
            return
        if not req.body_done:
            # Answered before the body arrived (413, 404, …): nothing more can be
            # read on this connection; send FIN and drain briefly so the client
            # sees the answer instead of a reset.
            self._linger_close()
            return
        if not self.resp_keep_alive or self.upgraded or self.ctx.draining or self.client_eof:
            self.uncork()  # what is queued leaves before the FIN
            self.closing = True
            transport.close()
            return
        if self.queue:
            self._dispatch_next()
            if len(self.queue) <= 1:
                self.resume_reading(PAUSE_QUEUE)
            return
        self.resume_reading(PAUSE_QUEUE)
        if self.in_head:
            # part of the next request's head came during this response: from now on
            # it has the usual time to complete
            self._set_timer(_T_HEAD, self.header_timeout)
        else:
            self._set_timer(_T_IDLE, self.idle_timeout)

    def _write(self, data: bytes) -> None:
        if self.corked is not None:
            self.corked.append(data)
        elif self.transport is not None:
            self.transport.write(data)

    def cork(self) -> None:
        if self.corked is None:
            self.corked = []

    def uncork(self) -> None:
        corked = self.corked
        self.corked = None
        if corked and self.transport is not None and not self.closing:
            self.transport.write(corked[0] if len(corked) == 1 else b"".join(corked))

    def abort(self) -> None:
        """Drop the connection at once (a response was cut short upstream)."""
        self.corked = None
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def start_tunnel(self, tunnel: Any, head: bytes = b"", rest: bytes = b"") -> None:
        """Send the `101` head and the first upstream bytes, then hand the connection
        over to an Upgrade tunnel (WebSocket and friends)."""
        req = self.active
        if self.transport is None:
            return
        if head:
            self.transport.write(head)
            if req is not None:
                req.bytes_out += len(head)
        if rest:
            self.transport.write(rest)
        self.tunnel = tunnel
        self._clear_timer()
        self.resume_reading(PAUSE_BUFFER | PAUSE_QUEUE)
        if req is not None and req.upgrade_data:
            tunnel.from_client(req.upgrade_data)
            req.upgrade_data = b""

    def tunnel_write(self, data: bytes) -> None:
        """Bytes from the far end of a tunnel to the client."""
        if self.transport is not None:
            self.transport.write(data)

    # ------------------------------------------------------- the Downstream contract
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.ctx.loop

    @property
    def date_header(self) -> bytes:
        return self.ctx.date_header

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.closing

    def set_producer(self, producer: Any) -> None:
        self.producer = producer

    def close_after_response(self) -> None:
        self.resp_keep_alive = False

    # ------------------------------------------------------------ closing paths
    def _cancel_handler(self, req: Request) -> None:
        """Tell the handler of `req` (a proxy exchange, possibly still connecting
        and without a sink yet) that the client side is gone."""
        target = req.sink if req.sink is not None else self.producer
        req.sink = None
        self.producer = None
        if target is not None and hasattr(target, "client_gone"):
            target.client_gone()

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
            self._log(req)
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
            req.request_id = self.ctx.next_request_id()
        if not req.method:
            req.method = "HEAD" if reject.head else "-"
        req.start = req.start or self.ctx.loop.time()
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
            close_owing_nothing(self.ctx.loop, self.transport, self.secure)

    def _linger_close(self) -> None:
        self.uncork()
        self.lingering = True
        transport = self.transport
        assert transport is not None
        if self.secure:
            # TLS cannot half-close in the transport: close_notify goes now, and the
            # TLS layer drains what the client still sends while it waits for its own
            self.closing = True
            close_owing_nothing(self.ctx.loop, transport, True)
            return
        self.resume_reading(PAUSE_QUEUE | PAUSE_BUFFER | PAUSE_UPSTREAM)
        if transport.can_write_eof():
            transport.write_eof()
        self._set_timer(_T_LINGER, _LINGER_SECONDS)

    def close_idle(self) -> None:
        """Close now if no request is in progress (used when draining)."""
        if self.active is None and not self.queue and not self.in_head and self.tunnel is None:
            self.closing = True
            if self.transport is not None:
                close_owing_nothing(self.ctx.loop, self.transport, self.secure)

    # ------------------------------------------------------------------ timers
    def _set_timer(self, kind: int, seconds: float) -> None:
        self.timer_kind = kind
        deadline = self.ctx.loop.time() + seconds
        self.timer_deadline = deadline
        handle = self.timer_handle
        if handle is None or deadline < self.timer_at:
            # a later deadline waits for the pending handle (re-armed when it
            # fires); an earlier one (idle → head, head → body) needs its own
            if handle is not None:
                handle.cancel()
            self.timer_at = deadline
            self.timer_handle = self.ctx.loop.call_at(deadline, self._on_timer)

    def _clear_timer(self) -> None:
        self.timer_kind = _T_NONE

    def _on_timer(self) -> None:
        self.timer_handle = None
        kind = self.timer_kind
        if kind == _T_NONE or self.transport is None or self.closing:
            return
        now = self.ctx.loop.time()
        if now < self.timer_deadline:
            self.timer_at = self.timer_deadline
            self.timer_handle = self.ctx.loop.call_at(self.timer_deadline, self._on_timer)
            return
        self.timer_kind = _T_NONE
        if kind == _T_BODY and self.read_paused:
            # the gateway stopped reading (the upstream takes the body slowly): not
            # the client's silence; the upstream's own send timeout watches that side
            self._set_timer(_T_BODY, self.body_timeout)
            return
        if kind == _T_HEAD and (self.active is not None or self.queue):
            return  # a response is in progress: end_response starts the next timer
        if kind == _T_HEAD and self.in_head:
            # the client started a request but did not finish its head in time
            self.reject = ParseReject(408)
            self._send_reject()
        elif kind == _T_BODY and self.active is not None and not self.resp_started:
            self._cancel_handler(self.active)
            self.active.keep_alive = False
            self.resp_keep_alive = False
            self.problem(self.active, 408)
            self.abort()
        else:
            self.closing = True
            if kind == _T_IDLE and self.transport.get_write_buffer_size():
                # idle, yet what it was sent is still unread: a client that stopped
                # reading (the send timeout's case once no upstream waits on it)
                self.transport.abort()
            else:
                close_owing_nothing(self.ctx.loop, self.transport, self.secure)

    # -------------------------------------------------------------- access log
    def _log(self, req: Request) -> None:
        access_log = self.ctx.access_log
        if access_log is not None:
            access_log.write(req, self.ctx.loop.time())
