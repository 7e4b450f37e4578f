"""The one dispatch of both protocols (bastion.http.dispatch) and the request-finish hook
of their context: request ids, 404/405, the 500 fallback, handler cancellation, observers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from bastion.http.context import ServerContext
from bastion.http.dispatch import cancel_handler, dispatch
from bastion.http.downstream import Downstream
from bastion.http.request import Request
from bastion.http.router import Handler, Route, Router


class _Client(Downstream):
    """Records what dispatch asks of a Downstream."""

    resp_started = False  # (at class level: Downstream's property has no setter)

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def problem(
        self, req: Request, status: int, detail: str | None = None, headers: bytes = b""
    ) -> None:
        req.status = status
        self.calls.append(("problem", status, headers))

    def abort(self) -> None:
        self.calls.append(("abort",))


class _Router(Router):
    # what a context copies for its connections (ConnectionSettings)
    limits = SimpleNamespace(
        max_header_bytes=8192, max_uri_bytes=4096, max_body_bytes=0, max_connections=100
    )
    timeouts = SimpleNamespace(header=5.0, body=5.0, keepalive=5.0, send=5.0)

    def __init__(self, routes: dict[str, Any], trusted: str = "") -> None:
        self.routes = routes
        self.trusted = trusted

    def route(self, req: Request, secure: bool) -> tuple[Any, int, bytes]:
        route = self.routes.get(req.path)
        if route is None:
            return (None, 405, b"GET, HEAD") if req.path == "/get-only" else (None, 404, b"")
        return route, 0, b""

    def is_trusted(self, ip: str) -> bool:
        return ip == self.trusted


class _Handler(Handler):
    def __init__(self, answer: Callable[[Downstream, Request], None]) -> None:
        self.answer = answer

    def handle(self, client: Downstream, req: Request) -> None:
        self.answer(client, req)


def _route(name: str, handle: Callable[[Downstream, Request], None]) -> Route:
    return Route(name, _Handler(handle), b"X-Route: " + name.encode() + b"\r\n")


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _request(path: str, ip: str = "192.0.2.1", xrid: bytes | None = None) -> Request:
    req = Request()
    req.path = path
    req.client_ip = ip
    req.xrid = xrid
    return req


def test_a_routed_request_reaches_its_handler(loop: asyncio.AbstractEventLoop) -> None:
    handled: list[tuple[Any, Request]] = []
    ctx = ServerContext(loop, _Router({"/a": _route("a", lambda c, r: handled.append((c, r)))}))
    client = _Client()
    req = _request("/a")
    dispatch(ctx, client, req, False)  # type: ignore[arg-type]
    assert handled == [(client, req)]
    assert req.dispatched and req.route_name == "a" and req.extra_head == b"X-Route: a\r\n"
    assert req.request_id and client.calls == []


def test_request_ids_come_from_trusted_peers_only(loop: asyncio.AbstractEventLoop) -> None:
    ctx = ServerContext(loop, _Router({"/a": _route("a", lambda c, r: None)}, "10.0.0.1"))
    trusted = _request("/a", "10.0.0.1", b"abc-1")
    other = _request("/a", "10.0.0.2", b"abc-2")
    named = _request("/a", "10.0.0.2", b"abc-3")
    named.request_id = "already"  # HTTP/2 names a stream's request when it opens
    for req in (trusted, other, named):
        dispatch(ctx, _Client(), req, False)  # type: ignore[arg-type]
    assert trusted.request_id == "abc-1"
    assert other.request_id not in ("", "abc-2")
    assert named.request_id == "already"


def test_no_route_is_404_and_a_wrong_method_405_with_allow(
    loop: asyncio.AbstractEventLoop,
) -> None:
    ctx = ServerContext(loop, _Router({}))
    client = _Client()
    dispatch(ctx, client, _request("/nowhere"), False)  # type: ignore[arg-type]
    dispatch(ctx, client, _request("/get-only"), False)  # type: ignore[arg-type]
    assert client.calls == [("problem", 404, b""), ("problem", 405, b"Allow: GET, HEAD\r\n")]


def test_a_failing_handler_gets_500_or_its_answer_cut(loop: asyncio.AbstractEventLoop) -> None:
    def fail(client: _Client, req: Request) -> None:
        raise RuntimeError("bug")

    def fail_after_head(client: _Client, req: Request) -> None:
        client.resp_started = True
        raise RuntimeError("bug")

    def fail_after_answer(client: _Client, req: Request) -> None:
        req.bytes_out = 100  # answered; the connection may be on its next request
        raise RuntimeError("bug")

    ctx = ServerContext(loop, _Router({"/1": _route("1", fail), "/2": _route("2", fail_after_head),
                                       "/3": _route("3", fail_after_answer)}))  # fmt: skip
    calls = []
    for path in ("/1", "/2", "/3"):
        client = _Client()
        dispatch(ctx, client, _request(path), False)  # type: ignore[arg-type]
        calls.append(client.calls)
    assert calls == [[("problem", 500, b"")], [("abort",)], [("abort",)]]


def test_cancel_handler_tells_the_sink_else_the_producer() -> None:
    told: list[str] = []
    sink = SimpleNamespace(client_gone=lambda: told.append("sink"))
    producer = SimpleNamespace(client_gone=lambda: told.append("producer"))
    req = Request()
    req.sink = sink  # type: ignore[assignment]
    cancel_handler(req, producer)  # type: ignore[arg-type]
    assert told == ["sink"] and req.sink is None
    cancel_handler(req, producer)  # type: ignore[arg-type]
    assert told == ["sink", "producer"]
    cancel_handler(req, SimpleNamespace())  # type: ignore[arg-type]  # nothing to tell
    cancel_handler(req, None)
    assert told == ["sink", "producer"]


def test_finish_calls_each_observer_in_order(loop: asyncio.AbstractEventLoop) -> None:
    ctx = ServerContext(loop, _Router({}))
    req = Request()
    ctx.finish(req)  # no observers: nothing happens
    seen: list[tuple[str, Request, float]] = []
    ctx.observers = (
        lambda r: seen.append(("first", r, r.ended)),
        lambda r: seen.append(("second", r, r.ended)),
    )
    ctx.finish(req)
    assert [(name, r) for name, r, _ in seen] == [("first", req), ("second", req)]
    assert seen[0][2] == seen[1][2] > 0  # one time, read once for both
    ctx.observers = (lambda r: seen.append(("only", r, r.ended)),)
    assert ctx.finish is ctx.observers[0]  # a single observer is the hook itself


def test_a_derived_request_starts_with_a_fresh_outcome() -> None:
    req = Request()
    req.cache = "STALE"
    req.refused_by = "IpFilter"
    req.refusal = "no"
    sub = req.derived_get([])
    assert (sub.cache, sub.refused_by, sub.refusal) == ("", "", "")
