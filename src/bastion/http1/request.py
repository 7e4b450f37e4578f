"""The per-request record shared by the protocol, the router and the handlers."""

from __future__ import annotations

from typing import Any, Protocol

# How a message body is framed on the wire.
BODY_NONE = 0  # no body (HEAD, 204, 304, or an empty request)
BODY_LENGTH = 1  # Content-Length
BODY_CHUNKED = 2  # Transfer-Encoding: chunked
BODY_CLOSE = 3  # response delimited by closing the connection


class BodySink(Protocol):
    """Where a request body goes once a handler has accepted it."""

    def on_body(self, data: bytes) -> None: ...

    def on_body_end(self) -> None: ...


class Request:
    __slots__ = (
        "body_buffer",
        "body_bytes",
        "body_done",
        "bytes_out",
        "chunked",
        "client_ip",
        "connection_tokens",
        "content_length",
        "dispatched",
        "expect_continue",
        "extra_head",
        "headers",
        "host",
        "host_header",
        "keep_alive",
        "method",
        "path",
        "query",
        "raw_path",
        "request_id",
        "route",
        "route_name",
        "sink",
        "start",
        "status",
        "target",
        "upgrade",
        "upgrade_data",
        "upstream",
        "upstream_time",
        "version",
        "xff",
        "xfh",
        "xfp",
        "xrid",
    )

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
        # outcome, for the access log
        self.status = 0
        self.bytes_out = 0
        self.upstream = ""
        self.upstream_time = -1.0

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def header(self, lname: bytes) -> bytes | None:
        for name, _, value in self.headers:
            if name == lname:
                return value
        return None
