"""HTTP/1.1 request heads and bodies: the httptools parser's callbacks.

They only record: a parsed request is appended to the connection's queue, and
handlers run after `feed_data` returns, so a framing error anywhere in a received
chunk is seen before a single byte of that request is forwarded. A refusal is raised
as `ParseReject` and answered by the connection (server.py).
"""

from __future__ import annotations

from typing import Final, Protocol, cast

import httptools

from bastion.http.context import request_clock
from bastion.http.joining import join_bytes
from bastion.http.request import REFUSED_METHODS, Request
from bastion.http.target import FRAGMENT, SEEN_CANONICAL, set_origin_target
from bastion.http1.response import ResponseWriter
from bastion.http1.state import (
    BUFFER,
    MAX_BUFFERED_BODY,
    T_BODY,
    T_HEAD,
    ParseReject,
)
from bastion.routing import host_of

_SPECIAL: Final = frozenset(
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
        b"proxy-connection",
        b"user-agent",
        b"referer",
    )
)
# Field names as clients usually spell them, each to its lowercase form, one shared bytes
# object per name: a lookup here costs less than `lower()` (a method call and a new object
# for every field), and the shared object's hash is computed once for every later lookup
# by name (`_SPECIAL`, the policies' fields). Any other spelling is lowered as before.
_COMMON_NAMES: Final = (
    "Host", "User-Agent", "Accept", "Accept-Encoding", "Accept-Language", "Accept-Charset",
    "Connection", "Keep-Alive", "Content-Length", "Content-Type", "Content-Encoding",
    "Transfer-Encoding", "Expect", "TE", "Upgrade", "Cookie", "Referer", "Origin",
    "Authorization", "X-API-Key", "Cache-Control", "Pragma", "If-None-Match", "If-Modified-Since",
    "If-Match", "If-Range", "Range", "Upgrade-Insecure-Requests", "Sec-Fetch-Site",
    "Sec-Fetch-Mode", "Sec-Fetch-Dest", "Sec-Fetch-User", "Sec-CH-UA", "Sec-CH-UA-Mobile",
    "Sec-CH-UA-Platform", "Sec-WebSocket-Key", "Sec-WebSocket-Version",
    "Sec-WebSocket-Extensions", "Sec-WebSocket-Protocol", "DNT", "Priority", "Purpose",
    "X-Requested-With", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Real-IP",
    "X-Request-ID", "Forwarded", "Proxy-Connection", "Traceparent", "Tracestate",
)
_LOWER_NAMES: Final = {
    spelling.encode(): lowered
    for name, lowered in ((name, name.lower().encode()) for name in _COMMON_NAMES)
    for spelling in (name, name.lower(), "-".join(p.capitalize() for p in name.split("-")))
}
# The Connection values clients send, as their token sets: building the set (split, strip,
# lower, frozenset) cost more than the rest of the field's handling. Fixed: a value not
# listed is split as before, and nothing a client sends is added.
_CONNECTION_VALUES: Final = {
    value: frozenset(t.strip().lower() for t in value.split(b",") if t.strip())
    for value in (
        b"close",
        b"Close",
        b"keep-alive",
        b"Keep-Alive",
        b"upgrade",
        b"Upgrade",
        b"keep-alive, Upgrade",
        b"Upgrade, HTTP2-Settings",
        b"TE",
        b"close, TE",
    )
}
# the usual methods as shared str objects (their hash is computed once, and a log line or
# a cache key made of them compares by identity)
_METHODS: Final = {
    m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
}
_VERSION_DETAIL: Final = "Only HTTP/1.0 and HTTP/1.1 are supported on this connection."
# Imported names read per request, as C statics of this module: compiled code reads any
# other imported name that is not a compiled function or class from the module's dict,
# some 130 instructions a use (docs/compiled.md)
_request_clock: Final = request_clock
_SEEN_CANONICAL: Final = SEEN_CANONICAL
_join_bytes: Final = join_bytes


class _ParsedURL(Protocol):
    """httptools' URL as `parse_url` fills it: a part the target lacks is None (the stub that
    httptools ships says bytes and int, and a compiled build checks what it reads against
    the stub's types: docs/compiled.md)."""

    schema: bytes | None
    host: bytes | None
    port: int | None
    path: bytes | None
    query: bytes | None


class HeadParser(ResponseWriter):  # one chain of parts: see http1/state.py
    """The parser callbacks of `HTTP1Connection`, and how a parse error is answered."""

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
        # bytes of this read before the head began belong to earlier requests
        self.head_raw = -self.chunk_used
        self.url_bytes = 0
        self.url_parts = []
        self.req = None
        self.proxy_connection = False
        if self.active is not None or self.timer_kind != T_HEAD:
            # A pipelined request while a response is in progress: its head timer
            # starts when that response is done (end_response). Otherwise it starts at
            # the end of this read if the head is still incomplete (`data_received`): a
            # head that comes whole, as nearly all do, costs no clock reading.
            self._clear_timer()

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
        lname = _LOWER_NAMES.get(name)
        if lname is None:
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
                parsed = host_of(value)
                if parsed is None:
                    raise ParseReject(400, "The Host header is malformed.")
                host = self.last_host = parsed
                self.last_host_value = value
            req.host = host
            req.host_header = value
        elif lname == b"user-agent":  # next to Host: nearly every client sends both
            req.user_agent = value
        elif lname == b"referer":
            req.referer = value
        elif lname == b"transfer-encoding":
            codings = value.lower().replace(b" ", b"").replace(b"\t", b"")
            if codings != b"chunked" or req.chunked:
                raise ParseReject(501)
            req.chunked = True
        elif lname == b"content-length":
            req.content_length = int(value)  # llhttp has already checked the digits
        elif lname == b"connection":
            tokens = _CONNECTION_VALUES.get(value)
            if tokens is None:
                tokens = frozenset(t.strip().lower() for t in value.split(b",") if t.strip())
            if req.connection_tokens:
                tokens = tokens | req.connection_tokens
            req.connection_tokens = tokens
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
        elif lname == b"proxy-connection":
            self.proxy_connection = True

    def on_headers_complete(self) -> None:
        self.in_head = False
        # (+ the request line's method, spaces, version and the CRLFs: about 16 bytes)
        self.chunk_used += self.url_bytes + self.head_bytes + 16
        req = self.req
        if req is None:
            req = self.req = Request()
        parser = self.parser
        keep_alive = parser.should_keep_alive()
        if keep_alive and not req.connection_tokens and not self.proxy_connection:
            # llhttp keeps a connection open without a keep-alive token (which only a
            # Connection or Proxy-Connection field brings) only for a version whose minor
            # number is above 0, and of the versions it accepts (0.9, 1.0, 1.1, 2.0) that is
            # 1.1 alone: no get_http_version, which formats a new str (about 1.8 k
            # instructions a request; tests/integration/test_malformed.py)
            version = "1.1"
        else:
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
        target = _join_bytes(self.url_parts)
        req.target = target
        if version == "1.1":
            if not req.host:
                raise ParseReject(400, "HTTP/1.1 requests need a Host header.")
        elif req.chunked:
            raise ParseReject(400, "HTTP/1.0 requests cannot use chunked transfer coding.")
        self._parse_target(req, target)
        req.keep_alive = keep_alive
        # llhttp upgrades a request with an Upgrade field and an "upgrade" Connection token,
        # or a CONNECT (refused above): without the field, no call to ask it
        if req.upgrade is not None:
            if not parser.should_upgrade():
                req.upgrade = None
            elif req.has_body:
                # llhttp hands over everything after an upgrade request's head unparsed, so
                # its body could be forwarded neither in a tunnel nor as a plain request's
                # body; a WebSocket handshake is a GET without one (RFC 6455 §4.1)
                raise ParseReject(400, "An upgrade request cannot carry a body.")
        req.client_ip = self.client_ip
        req.start = _request_clock()
        max_body = self.max_body_bytes
        if max_body and req.content_length is not None and req.content_length > max_body:
            raise ParseReject(413)
        self.queue.append(req)
        if req.has_body:
            self._set_timer(T_BODY, self.body_timeout)
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
                url = cast("_ParsedURL", httptools.parse_url(target))
            except httptools.HttpParserInvalidURLError:
                raise ParseReject(400, "The request target is malformed.") from None
            if url.host is None or url.schema not in (b"http", b"https"):
                raise ParseReject(400, "The request target is malformed.")
            # absolute-form: the target's authority replaces Host (RFC 9112 §3.2.2)
            host = host_of(url.host)
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
        if path in _SEEN_CANONICAL and "#" not in query:
            req.raw_path = req.path = path
            req.query = query
            return
        refused = set_origin_target(req, target)
        if refused is not None:
            raise ParseReject(400, refused)

    def on_body(self, body: bytes) -> None:
        req = self.queue[-1]
        req.body_bytes += len(body)
        self.chunk_used += len(body)
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
            if req.dispatched and req.body_bytes > MAX_BUFFERED_BODY:
                self._pause(BUFFER)
        if self.timer_kind == T_BODY:
            self.timer_deadline = self.event_loop.time() + self.body_timeout

    def on_message_complete(self) -> None:
        req = self.queue[-1] if self.queue else self.req
        if req is None:
            return
        req.body_done = True
        if req.sink is not None:
            req.sink.on_body_end()
        if self.timer_kind == T_BODY:
            self._clear_timer()
