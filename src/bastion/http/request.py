"""The per-request record shared by the protocol, the router and the handlers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Protocol

# How a message body is framed on the wire.
BODY_NONE: Final = 0  # no body (HEAD, 204, 304, or an empty request)
BODY_LENGTH: Final = 1  # Content-Length
BODY_CHUNKED: Final = 2  # Transfer-Encoding: chunked
BODY_CLOSE: Final = 3  # response delimited by closing the connection
# A complete answer whose body is already known (errors, fixed answers): response
# policies may edit its head but not transform its body. Sent as BODY_LENGTH.
BODY_FIXED: Final = 4

# Methods the gateway refuses (501) instead of forwarding, over HTTP/1.1 and HTTP/2.
# CONNECT would turn the connection into a tunnel to wherever the backend points it;
# TRACE makes a backend echo the request it received, injected secrets and forwarding
# headers included, back to the client (cross-site tracing). nginx refuses both too.
REFUSED_METHODS: Final = {
    b"CONNECT": "CONNECT is not supported: bastion is a reverse proxy, not a tunnel.",
    b"TRACE": "TRACE is not supported: it would echo the headers the gateway adds.",
}


class BodySink(Protocol):
    """Where a request body goes once a handler has accepted it."""

    def on_body(self, data: bytes) -> None: ...

    def on_body_end(self) -> None: ...


class BodyFilter(Protocol):
    """Transforms a response body as it streams (compression)."""

    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


# Request's slots, also named by `derived_get`: a module constant because mypyc's classes
# do not expose `__slots__` as a class attribute
REQUEST_SLOTS: Final = (
    "body_buffer",
    "body_bytes",
    "body_done",
    "body_filter",
    "bytes_out",
    "cache",
    "chunked",
    "client_ip",
    "connection_tokens",
    "consumer",
    "content_length",
    "dispatched",
    "ended",
    "expect_continue",
    "extra_head",
    "head_edit",
    "headers",
    "host",
    "host_header",
    "keep_alive",
    "method",
    "on_head",
    "path",
    "query",
    "raw_path",
    "referer",
    "refusal",
    "refused_by",
    "request_id",
    "route",
    "route_name",
    "sink",
    "start",
    "status",
    "target",
    "trace_id",
    "upgrade",
    "upgrade_data",
    "upstream",
    "upstream_drop",
    "upstream_extra",
    "upstream_time",
    "user_agent",
    "version",
    "xff",
    "xfh",
    "xfp",
    "xrid",
)


class Request:
    __slots__ = REQUEST_SLOTS

    def __init__(self) -> None:
        self.method = ""
        self.target = b""
        self.path = "/"  # normalized path used for routing
        self.raw_path = "/"  # the path as sent (before "?")
        self.query = ""  # without the "?"
        self.version = "1.1"
        # (lowercased name, name as sent, value) for every header field
        self.headers: list[tuple[bytes, bytes, bytes]] = []
        self.host = ""
        self.host_header = b""  # the Host field as sent (with its port)
        self.keep_alive = True
        self.content_length: int | None = None
        self.chunked = False
        self.expect_continue = False
        self.upgrade: bytes | None = None
        self.upgrade_data = b""
        self.connection_tokens: frozenset[bytes] = frozenset()
        self.xff: bytes | None = None
        self.xfp: bytes | None = None
        self.xfh: bytes | None = None
        self.xrid: bytes | None = None
        # User-Agent and Referer as sent (b"" absent), kept by the parsers as they pass, for
        # the traffic statistics (observe/tap.py): no scan of the fields afterwards
        self.user_agent = b""
        self.referer = b""
        self.client_ip = ""
        self.request_id = ""
        self.route: Any = None
        self.route_name = ""
        self.extra_head = b""  # header lines the route adds to every response (HSTS)
        self.start = 0.0
        # body delivery: buffered until a handler installs a sink
        self.sink: BodySink | None = None
        self.body_buffer: list[bytes] | None = None
        self.body_bytes = 0
        self.body_done = False
        self.dispatched = False
        # outcome, for the observers of finished requests (the access log, metrics);
        # the bytes in are body_bytes
        self.status = 0
        self.bytes_out = 0
        self.upstream = ""
        self.upstream_time = -1.0
        # when it finished, by `http.context.request_clock`: the proxy sets it as it reads
        # the clock at the upstream's end (for `upstream_time`), so that the observers need
        # not read it again; 0.0 until then (an observer reads the clock itself: see
        # `http.context.Observer`)
        self.ended = 0.0
        self.cache = ""  # the cache's outcome ("HIT", "MISS", "STALE", …); "" without one
        self.refused_by = ""  # the policy that refused it: its config key (`rate_limits`, …)
        self.refusal = ""  # why: the detail of its problem answer, else its status text
        self.trace_id = ""  # the W3C trace id sent upstream (proxy/tracing.py); "" none
        # set by route policies (src/bastion/policies/); untouched on routes without them
        self.consumer = ""  # the authenticated consumer's name
        self.upstream_extra = b""  # header lines added to the forwarded request
        # lowercase names not forwarded: the route's fixed set (a frozenset shared by its
        # requests), copied into a set of this request's own at its first addition
        self.upstream_drop: frozenset[bytes] | set[bytes] | None = None
        # (req, head, framing) -> (head, framing): edits each answer's head before it is sent
        self.on_head: Callable[[Request, bytes, int], tuple[bytes, int]] | None = None
        self.body_filter: BodyFilter | None = None  # transforms the answer's body (compression)
        # the route's field edits, for a proxied answer to apply as it builds the head (a
        # `bastion.policies.fields.FieldEdit`); on_head does the same for other answers
        self.head_edit: Any = None

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def add_upstream_header(self, name: bytes, value: bytes) -> None:
        """A header field added to the request forwarded upstream."""
        self.upstream_extra += name + b": " + value + b"\r\n"

    def drop_upstream_header(self, lname: bytes) -> None:
        """A client header field (lowercase name) not forwarded upstream."""
        drop = self.upstream_drop
        if drop is None:
            self.upstream_drop = {lname}
        elif lname not in drop:
            if type(drop) is frozenset:  # the route's shared set: never changed in place
                self.upstream_drop = {*drop, lname}
            else:
                drop.add(lname)  # type: ignore[union-attr]

    def derived_get(self, headers: list[tuple[bytes, bytes, bytes]]) -> Request:
        """A bodiless GET for the same resource with `headers`, which the cache sends on
        its own (revalidation, background refresh). Every slot is copied except those of
        the body, of the answer and of the outcome: what the route's policies set or
        dropped for this request (consumer, added and dropped upstream fields) holds
        for the copy too, so the backend never sees a request the policies did not pass."""
        sub = Request()
        for name in _COPIED_TO_DERIVED:
            setattr(sub, name, getattr(self, name))
        drop = self.upstream_drop
        if drop is not None and type(drop) is not frozenset:
            sub.upstream_drop = set(drop)  # this request's own set: the copy gets its own
        sub.method = "GET"
        sub.version = "1.1"
        sub.headers = headers
        sub.body_done = True
        sub.dispatched = True
        return sub

    def header(self, lname: bytes) -> bytes | None:
        for name, _, value in self.headers:
            if name == lname:
                return value
        return None


# Slots a derived GET starts fresh: its body, its upgrade, the answer's edits and
# filters (its answer goes to the cache, not to a client) and the outcome for the log.
# Any other slot, present or added later, is copied.
_FRESH_IN_DERIVED: Final = frozenset(
    (
        "body_buffer",
        "body_bytes",
        "body_done",
        "body_filter",
        "bytes_out",
        "cache",
        "chunked",
        "content_length",
        "dispatched",
        "ended",
        "expect_continue",
        "extra_head",
        "head_edit",
        "headers",
        "method",
        "on_head",
        "refusal",
        "refused_by",
        "sink",
        "start",
        "status",
        "trace_id",
        "upgrade",
        "upgrade_data",
        "upstream",
        "upstream_time",
        "version",
    )
)
_COPIED_TO_DERIVED: Final = tuple(n for n in REQUEST_SLOTS if n not in _FRESH_IN_DERIVED)
