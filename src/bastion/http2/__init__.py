"""HTTP/2 downstream (RFC 9113) on the HTTPS listeners, through the `h2` state machine.

Each stream becomes a `Request` answered by the same routing and handlers as
HTTP/1.1; `Stream` offers handlers the interface of an HTTP/1.1 connection.
"""

from bastion.http2.connection import HTTP2Connection, start_http2

__all__ = ["HTTP2Connection", "start_http2"]
