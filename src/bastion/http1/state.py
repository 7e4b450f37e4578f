"""The state of one HTTP/1.1 client connection, shared by the parts of its protocol.

`HTTP1Connection` (server.py) is assembled from three parts that each see this
state: head parsing (head.py, the httptools callbacks), response writing
(response.py) and closing paths with their timers (closing.py). Per-connection
state starts from the class-level defaults below, so opening a connection assigns
only what differs (new connections per second count too).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Final

# httptools, ServerContext and TimerWheel are imported at run time (not only for type
# checking): mypyc builds the annotations of ConnectionState's class body from them
# (docs/compiled.md)
import httptools

from bastion.http.context import ServerContext
from bastion.http.downstream import Pause
from bastion.http.problem import ProblemAnswers
from bastion.http.wheel import TimerWheel

if TYPE_CHECKING:
    from bastion.http.downstream import Producer, Tunnel
    from bastion.http.request import Request

# Timer kinds: what the connection is waiting for from the client.
# (one Final each: compiled, a read is a C constant, not a lookup in the module's dict)
T_NONE: Final = 0
T_HEAD: Final = 1
T_BODY: Final = 2
T_IDLE: Final = 3
T_LINGER: Final = 4

# The reasons to stop reading as plain ints: the connection combines them on every
# request, and the enum's own operators cost a microsecond each.
QUEUE: Final = int(Pause.QUEUE)  # pipelined requests wait for the current response
UPSTREAM: Final = int(Pause.UPSTREAM)  # the upstream cannot take more request body yet
BUFFER: Final = int(Pause.BUFFER)  # a handler is not ready for the body yet

LINGER_SECONDS: Final = 2.0
MAX_BUFFERED_BODY: Final = 256 * 1024


class ParseReject(Exception):
    """The client sent something we refuse: answered with `status`, then closed."""

    def __init__(self, status: int, detail: str | None = None) -> None:
        super().__init__(status, detail)
        self.status = status
        self.detail = detail
        self.head = False  # it answers a HEAD request whose head did not complete


# The parts form one chain, ConnectionState <- Closing <- ResponseWriter <- HeadParser <-
# HTTP1Connection (mypyc compiles classes of one base: docs/compiled.md), in the order of
# HTTP1Connection's MRO when it derived from the three parts side by side.
class ConnectionState(ProblemAnswers):
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
    # the request being parsed has a Proxy-Connection field (llhttp reads its keep-alive
    # token as Connection's: see HeadParser.on_headers_complete)
    proxy_connection = False
    # bytes of the read being parsed that earlier requests' heads and bodies took: a head
    # that begins inside a read is charged only for the rest of it
    chunk_used = 0
    in_head = False
    client_eof = False
    reject: ParseReject | None = None
    active: Request | None = None  # the request being answered (first in the queue)
    # response state
    resp_started = False
    resp_chunked = False
    resp_keep_alive = True  # this connection's own: handlers call close_after_response
    # paused/resumed with the client's write buffer. Set by HTTP1Connection's __init__ too:
    # mypyc drops a class-level default typed with a compiled module's protocol
    # (docs/compiled.md); interpreted, the class-level value is what shadows
    # `Downstream.producer`, a property without a setter
    producer: Producer | None = None
    write_paused = False
    read_paused = 0  # the Pause reasons that hold, as an int
    upgraded = False
    tunnel: Tunnel | None = None  # (set by __init__ too, as `producer`)
    closing = False
    lingering = False
    # While an upstream chunk is being parsed, response bytes collect here and
    # leave in one write: head, body and terminator usually share a packet.
    corked: list[bytes] | None = None
    # one lazily re-armed timer (aiohttp's trick: re-arm only when it fires early), an
    # entry in the worker's timer wheel (http/wheel.py), not a loop timer of its own
    timer_kind = T_NONE
    timer_deadline = 0.0
    timer_slot = -1  # the wheel's slot this connection is filed in, -1 for none
    timer_at = 0.0  # when that slot is due

    # set once per connection (HTTP1Connection.__init__)
    ctx: ServerContext
    # `ctx.loop`, which never changes: a struct field where `ctx.loop` is a lookup by name
    # in a Python object's dict (the context is not compiled), twice a request for timers.
    # (Not named `loop`: that is `Downstream.loop`, a property, HTTP1Connection's.)
    event_loop: asyncio.AbstractEventLoop
    wheel: TimerWheel  # `ctx.wheel`, the same way
    # class-level values: interpreted, they shadow `Downstream`'s properties of these names,
    # which have no setter (the compiled build makes them struct fields either way)
    scheme = b"http"
    secure = False
    parser: httptools.HttpRequestParser
    max_header_bytes: int
    max_uri_bytes: int
    max_body_bytes: int
    max_connections: int
    header_timeout: float
    body_timeout: float
    idle_timeout: float
    send_timeout = 0.0  # (a class-level value: see `scheme`)
    url_parts: list[bytes]
    # requests parsed and waiting; the first one is the active one once dispatched
    queue: deque[Request]

    # What each part calls in the others. Plain methods, not declarations under `if
    # TYPE_CHECKING:` (mypyc compiles no `if` in a class body); every part that defines one
    # comes before this class in HTTP1Connection's MRO, so these are never the ones called.
    def _pause(self, bits: int) -> None:
        raise NotImplementedError

    def _resume(self, bits: int) -> None:
        raise NotImplementedError

    def _dispatch_next(self) -> None:
        raise NotImplementedError

    def _set_timer(self, kind: int, seconds: float) -> None:
        raise NotImplementedError

    def _clear_timer(self) -> None:
        raise NotImplementedError

    def _send_reject(self, failed: Request | None = None) -> None:
        raise NotImplementedError

    def _fail_active(self, req: Request) -> None:
        raise NotImplementedError

    def _cancel_handler(self, req: Request) -> None:
        raise NotImplementedError

    def _linger_close(self) -> None:
        raise NotImplementedError

    def _write(self, data: bytes) -> None:
        raise NotImplementedError
