"""One dispatch for every protocol: a parsed request to its route's handler.

The HTTP/1.1 connection and the HTTP/2 stream prepare their own state, then call
`dispatch`; what happens from there (request id, route lookup, 404/405, the handler,
the 500 fallback) is the same for both. `cancel_handler` is the one way a protocol
tells a handler that its client left.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.http.context import ServerContext
    from bastion.http.downstream import Downstream, Producer
    from bastion.http.request import BodySink, Request

log = logging.getLogger("bastion.http")


def dispatch(ctx: ServerContext, client: Downstream, req: Request, secure: bool) -> None:
    """Answer `req` through `client`: its route's handler, or a problem answer."""
    req.dispatched = True
    plan = ctx.plan
    if not req.request_id:  # (HTTP/2 names a stream's request when it opens)
        # `request_id` below, inline: this runs once per request
        if req.xrid is not None and plan.is_trusted(req.client_ip):
            req.request_id = req.xrid.decode("latin-1")
        else:
            req.request_id = ctx.request_ids.next()
    try:
        route, status, allow = plan.route(req, secure)
        if route is None:
            headers = b"Allow: " + allow + b"\r\n" if allow else b""
            client.problem(req, status, headers=headers)
            return
        req.route = route
        req.route_name = route.name
        req.extra_head = route.extra_head
        route.handler.handle(client, req)
    except Exception:
        log.exception("request %s failed in its handler", req.request_id)
        # bytes out for this request: its answer is under way, or over (an HTTP/1.1
        # connection may already be answering the next pipelined request)
        if client.resp_started or req.bytes_out:
            client.abort()
        else:
            client.problem(req, 500)


def request_id(ctx: ServerContext, req: Request) -> None:
    """Name `req`: the X-Request-Id of a trusted peer, or a new id."""
    if req.xrid is not None and ctx.plan.is_trusted(req.client_ip):
        req.request_id = req.xrid.decode("latin-1")
    else:
        req.request_id = ctx.request_ids.next()


def cancel_handler(req: Request, producer: Producer | None) -> None:
    """Tell the handler of `req` (its body sink, else the producer of its answer: a
    proxy exchange still connecting, a policy still waiting) that the client is gone.
    The caller drops its own reference to the producer."""
    target: BodySink | Producer | None = req.sink if req.sink is not None else producer
    req.sink = None
    if target is not None:
        gone = getattr(target, "client_gone", None)
        if gone is not None:
            gone()
