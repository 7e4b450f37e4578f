"""The contract between a wire protocol and the handlers that answer its requests.

A handler (the proxy, static files, redirects, the cache, the policy chain) answers a
`Request` through a `Downstream`: the HTTP/1.1 connection, one HTTP/2 stream, or the
cache's capture client that records an answer instead of sending it. Handlers name
only this class, never a concrete connection class, and never write a protocol's
attributes: every change of a protocol's state goes through a method here.
"""

from __future__ import annotations

import asyncio
from enum import IntFlag
from typing import TYPE_CHECKING, Protocol

from mypy_extensions import mypyc_attr

if TYPE_CHECKING:
    from bastion.http.request import BodySink, Request


class Pause(IntFlag):
    """Why reading from the client is paused. Several reasons may hold at once; reading
    resumes when none is left."""

    QUEUE = 1  # pipelined requests wait for the current response (HTTP/1.1)
    UPSTREAM = 2  # the upstream cannot take more request body yet
    BUFFER = 4  # the handler is not ready for the body yet


class Producer(Protocol):
    """What feeds a response (an upstream socket, a file, a pending policy check):
    paused and resumed with the client's write buffer, told when the client leaves."""

    def pause_producing(self) -> None: ...

    def resume_producing(self) -> None: ...

    def client_gone(self) -> None: ...


class Tunnel(Protocol):
    """The other end of a connection switched by Upgrade (a WebSocket to its backend)."""

    def from_client(self, data: bytes) -> None: ...

    def peer_closed(self) -> None: ...


@mypyc_attr(allow_interpreted_subclasses=True)
class Downstream:
    """Where a handler sends its answer. Methods that take `req` act on that request's
    answer; the others act on the answer under way.

    A base class, not a protocol: the compiled build calls a protocol's methods by name
    (a lookup and an argument parse, 200 to 370 instructions a call, seven or more calls a
    request) and a base class's through its method table (docs/compiled.md). Every
    implementation derives from it; each overrides every method and property, with an
    attribute where it has one (a class-level declaration, as `ConnectionState`'s).
    Interpreted implementations (the cache's capture client, tests' stand-ins) are
    allowed; one that sets an attribute named like a property declares it at class
    level, or the property here, which has no setter, refuses the assignment."""

    # --- what a handler may read
    @property
    def scheme(self) -> bytes:
        """b"http" or b"https": the scheme the client used."""
        raise NotImplementedError

    @property
    def secure(self) -> bool:
        """The client connection is TLS."""
        raise NotImplementedError

    @property
    def client_ip(self) -> str:
        """The peer's address, as the socket reports it."""
        raise NotImplementedError

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        raise NotImplementedError

    @property
    def date_header(self) -> bytes:
        """The current `Date: …\\r\\n` line, refreshed once a second."""
        raise NotImplementedError

    @property
    def send_timeout(self) -> float:
        """How long the client may keep a response waiting in its buffer."""
        raise NotImplementedError

    @property
    def open(self) -> bool:
        """The client is still there and its connection is not closing."""
        raise NotImplementedError

    @property
    def resp_started(self) -> bool:
        """The answer's head has been sent (an error can no longer replace it)."""
        raise NotImplementedError

    @property
    def write_paused(self) -> bool:
        """The client is not reading fast enough: producers wait for `resume_producing`."""
        raise NotImplementedError

    def unsent_bytes(self) -> int:
        """Response bytes written but not yet taken by the client."""
        raise NotImplementedError

    # --- the request body
    def take_body(self, req: Request, sink: BodySink) -> list[bytes]:
        """Install `sink` for the rest of the body; returns what was buffered so far."""
        raise NotImplementedError

    def send_continue(self, req: Request) -> None:
        """Send `100 Continue` if the client waits for it."""
        raise NotImplementedError

    def pause_reading(self, reason: Pause) -> None:
        """Stop taking request body for `reason` (the reasons add up)."""
        raise NotImplementedError

    def resume_reading(self, reason: Pause) -> None:
        """`reason` no longer holds; reading resumes when no reason is left."""
        raise NotImplementedError

    # --- the answer
    @property
    def producer(self) -> Producer | None:
        """Who feeds the answer now (a handler clears it only if it is still its own)."""
        raise NotImplementedError

    def set_producer(self, producer: Producer | None) -> None:
        """Who feeds the answer: paused with the client's buffer, told if it leaves."""
        raise NotImplementedError

    def respond(
        self,
        req: Request,
        status: int,
        body: bytes = b"",
        content_type: bytes = b"text/plain; charset=utf-8",
        headers: bytes = b"",
    ) -> None:
        """A complete answer with a known body (errors, redirects, small files)."""
        raise NotImplementedError

    def problem(
        self, req: Request, status: int, detail: str | None = None, headers: bytes = b""
    ) -> None:
        """An RFC 9457 problem answer."""
        raise NotImplementedError

    def write_head(self, req: Request, head: bytes, framing: int) -> None:
        """Send a response head (HTTP/1.1 form, without the final blank line); `framing`
        is one of the BODY_* constants of `bastion.http.request`."""
        raise NotImplementedError

    def write_body(self, data: bytes) -> None:
        raise NotImplementedError

    def end_response(self) -> None:
        raise NotImplementedError

    def close_after_response(self) -> None:
        """Do not keep the connection for another request once this answer is out."""
        raise NotImplementedError

    def cork(self) -> None:
        """Collect writes until `uncork`, so a head and a short body leave together."""
        raise NotImplementedError

    def uncork(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """Cut the answer short: the only honest signal once its head is out."""
        raise NotImplementedError

    def start_tunnel(self, tunnel: Tunnel, head: bytes, rest: bytes) -> None:
        """Send the `101` head and the first upstream bytes, then hand the connection
        to `tunnel` (HTTP/1.1 only)."""
        raise NotImplementedError

    def tunnel_write(self, data: bytes) -> None:
        """Bytes from the far end of a tunnel to the client."""
        raise NotImplementedError
