"""What route policies return and work on.

A request-phase policy has ``is_async`` and ``on_request(req)``, which returns a
`Denied`, an `Answer` or None (go on); when ``is_async`` is true, ``on_request`` is
a coroutine function, and the policy may also have ``begin(req)``, which the chain then
calls instead: it starts the check and returns its outcome at once or a `Later` (a
future and what turns it into the outcome), so that the usual case waits without a task
or coroutine frames per request. A response-phase policy has ``on_response(req, head)``
and edits a `ResponseHead` in place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from bastion.http.request import (
    BODY_CHUNKED,
    BODY_CLOSE,
    BODY_LENGTH,
    BodyFilter,
    Request,
)
from bastion.proxy.forwarded import client_address

if TYPE_CHECKING:
    from bastion.http.downstream import Downstream


class Denied:
    """A refusal, answered as problem+json with `headers` (complete header lines)."""

    __slots__ = ("detail", "headers", "reason", "scheme", "status")

    def __init__(
        self, status: int, detail: str | None = None, headers: bytes = b"", reason: str = ""
    ) -> None:
        self.status = status
        self.detail = detail
        self.headers = headers
        # for the event metrics (`observe/events.py`), a label from a fixed set: why an
        # auth method refused ("missing", "expired", ...; else told by the status), or
        # which limit ("rate", "quota"); and the auth method that refused (AnyAuth's)
        self.reason = reason
        self.scheme = ""


class Answer:
    """A complete answer given by a policy instead of the route (a CORS preflight)."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self, status: int, headers: bytes = b"", body: bytes = b"", content_type: bytes = b""
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.content_type = content_type


Outcome = Denied | Answer | None

Later = tuple["asyncio.Future[Any]", Callable[["asyncio.Future[Any]"], "Outcome | Later"]]
"""A check under way (what ``begin`` returns when it cannot answer at once): once the
future is done, ``then(future)`` gives the outcome, or another `Later` to wait on. The
chain calls ``then`` whatever became of the future, cancelled included (the client left:
its result is then ignored), so that it can always release what it holds (a breaker's
probe); ``then`` raising is a failed check (500)."""


class RequestPolicy(Protocol):
    is_async: bool

    def on_request(self, req: Request) -> Outcome | Awaitable[Outcome]: ...


class StartingPolicy(RequestPolicy, Protocol):
    """An asynchronous policy that can start its check without a coroutine."""

    def begin(self, req: Request) -> Outcome | Later: ...


class ResponsePolicy(Protocol):
    def on_response(self, req: Request, head: ResponseHead) -> None: ...


class ResponseHead:
    """An answer's status line and header fields, editable by response policies.

    Built from the head bytes a handler produced (``"HTTP/1.1 200 OK\\r\\nName: v\\r\\n…"``,
    without the blank line) only on routes that have response policies."""

    __slots__ = ("body_filter", "can_transform", "fields", "status", "status_line")

    def __init__(self, head: bytes, framing: int) -> None:
        lines = head.split(b"\r\n")
        self.status_line = lines[0]
        self.status = int(lines[0][9:12])
        self.fields: list[list[bytes]] = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(b":")
                self.fields.append([name, value.strip()])
        # a body can be transformed only when it streams through write_body
        self.can_transform = framing in (BODY_LENGTH, BODY_CHUNKED, BODY_CLOSE)
        self.body_filter: BodyFilter | None = None

    def get(self, lname: bytes) -> bytes | None:
        for name, value in self.fields:
            if name.lower() == lname:
                return value
        return None

    def names(self) -> list[bytes]:
        return [name.lower() for name, _ in self.fields]

    def remove(self, lname: bytes) -> None:
        self.fields = [f for f in self.fields if f[0].lower() != lname]

    def set(self, name: bytes, value: bytes) -> None:
        self.remove(name.lower())
        self.fields.append([name, value])

    def add(self, name: bytes, value: bytes) -> None:
        self.fields.append([name, value])

    def set_body_filter(self, body_filter: BodyFilter) -> None:
        """Transform the body as it streams; the length is then unknown (chunked)."""
        assert self.can_transform
        self.body_filter = body_filter
        self.remove(b"content-length")

    def to_bytes(self) -> bytes:
        return b"".join(
            [self.status_line, b"\r\n"] + [n + b": " + v + b"\r\n" for n, v in self.fields]
        )


def apply_response_policies(
    policies: tuple[ResponsePolicy, ...],
) -> Callable[[Request, bytes, int], tuple[bytes, int]]:
    """The ``req.on_head`` hook for a route with response policies."""

    def on_head(req: Request, head: bytes, framing: int) -> tuple[bytes, int]:
        edit = ResponseHead(head, framing)
        for policy in policies:
            policy.on_response(req, edit)
        if edit.body_filter is not None:
            req.body_filter = edit.body_filter
            framing = BODY_CHUNKED
        return edit.to_bytes(), framing

    return on_head


def real_client_ip(req: Request, trusted: Callable[[str], bool] | None) -> str:
    """The client's address: the socket peer, or, when the peer is one of
    `trusted_proxies`, the rightmost X-Forwarded-For hop that is not trusted, parsed
    (see `bastion.proxy.forwarded`)."""
    return client_address(req, trusted)


class _BodyReader:
    """A body sink that collects a whole request body, up to a limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def on_body(self, data: bytes) -> None:
        self.size += len(data)
        if self.limit and self.size > self.limit:
            if not self.done.done():
                self.done.set_result(False)
            return
        self.parts.append(data)

    def on_body_end(self) -> None:
        if not self.done.done():
            self.done.set_result(True)

    def client_gone(self) -> None:
        if not self.done.done():
            self.done.cancel()


async def read_body(client: Downstream, req: Request, limit: int) -> bytes | Denied:
    """The whole request body (at most `limit` bytes, 0 = the server's limit), or
    Denied(413). The route's handler still gets the body afterwards: the chain
    replays it."""
    if not req.has_body:
        return b""
    reader = _BodyReader(limit)
    reader.parts = client.take_body(req, reader)
    reader.size = sum(len(p) for p in reader.parts)
    if limit and reader.size > limit:
        reader.done.set_result(False)  # what already arrived is over the limit
    elif req.body_done:
        reader.on_body_end()
    else:
        client.send_continue(req)
    complete = await reader.done
    req.sink = None
    if not complete:
        req.body_buffer = None
        return Denied(413, f"The request body is larger than this route accepts ({limit} bytes).")
    body = b"".join(reader.parts)
    # replayed to the route's handler as if it had just arrived
    req.body_buffer = [body] if body else []
    return body
