"""The `proxy:` action of a route, compiled once per plan."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bastion.balance.balancer import Balancer, RetryBudget
from bastion.http.request import Request
from bastion.proxy.base import ExchangeHandler
from bastion.proxy.exchange import Exchange
from bastion.proxy.headers import build_request_head, upgrade_to_forward

if TYPE_CHECKING:
    from bastion.config.upstream import Proxy
    from bastion.http.downstream import Downstream
    from bastion.proxy.base import ResponseRecorder


class ProxyHandler(ExchangeHandler):
    """The `proxy:` action of one route: what its exchanges read (`ExchangeHandler`) and how
    its requests' heads are written upstream."""

    def __init__(
        self,
        config: Proxy,
        balancer: Balancer,
        strip: str | None,
        trusted: Callable[[str], bool] | None,
        trace: bool = False,
    ) -> None:
        self.balancer = balancer
        self.trace = trace  # W3C trace context sent upstream (proxy/tracing.py)
        # the worker's loop (the pools'), read by each exchange
        self.loop = balancer.members[0].ep.pool.loop
        self.strip = strip  # the prefix removed from the path before forwarding
        self.trusted = trusted
        first = balancer.members[0].ep.pool.address
        preserve = config.preserve_host
        # by default an https:// upstream is a virtual host of its own (a SaaS API, a CDN):
        # it gets its own name, as in its certificate; a private http:// app gets the client's
        self.preserve_host = first.scheme != "https" if preserve is None else preserve
        self.upstream_host_line = b"Host: " + first.authority.encode() + b"\r\n"
        self.connect_timeout = config.timeouts.connect
        self.read_timeout = config.timeouts.read
        self.send_timeout = config.timeouts.send
        self.total_timeout = config.timeouts.total
        self.websocket_idle_timeout = config.websocket_idle_timeout
        # the Upgrade protocols forwarded (lowercase; the config never lets h2c in)
        self.upgrades = frozenset(p.encode("ascii") for p in config.upgrade) - {b"h2c"}
        self.underscores = config.underscores_in_headers
        self.max_connections = config.max_connections
        self.max_pending = config.max_pending
        self.max_response_header_bytes = config.max_response_header_bytes
        self.max_response_header_fields = config.max_response_header_fields
        retries = config.retries
        self.attempts = retries.attempts
        self.retry_statuses = retries.on_status or None
        # only a pool with somewhere else to go can retry, and only it pays for counting
        self.budget = RetryBudget(retries.budget) if len(balancer.members) > 1 else None
        self.sticky_cookie: bytes | None = None
        if balancer.policy_name == "sticky":
            self.sticky_cookie = config.sticky.cookie.encode()
            age = f"; Max-Age={int(config.sticky.ttl)}" if config.sticky.ttl else ""
            for m in balancer.members:
                m.cookie = (
                    f"Set-Cookie: {config.sticky.cookie}={m.ep.id}; Path=/{age}; HttpOnly; "
                    "SameSite=Lax\r\n"
                ).encode()

    def handle(
        self, client: Downstream, req: Request, recorder: ResponseRecorder | None = None
    ) -> None:
        target = req.target  # the canonical path (what was routed) and the query
        strip = self.strip
        if strip is not None:
            # the route matched the canonical path, so it starts with the prefix as written
            rest = req.path[len(strip) :]
            path = rest if rest.startswith("/") else "/" + rest
            target = (path + ("?" + req.query if req.query else "")).encode("latin-1")
        host = req.host_header or req.host.encode()
        host_line = b"Host: " + host + b"\r\n" if self.preserve_host else self.upstream_host_line
        if req.upgrade is not None:
            # any other protocol is not asked of the backend: the request goes as a plain
            # one, and a 101 to it is refused as a 101 nobody asked for
            # (an upgrade request with a body was refused by the HTTP/1.1 parser)
            req.upgrade = upgrade_to_forward(req.upgrade, self.upgrades)
        head = build_request_head(
            req, target, host_line, host, client.scheme, self.trusted, self.underscores, self.trace
        )
        # (`recorder`: a cache keeping a copy of the response)
        Exchange(self, client, req, recorder).start(head)
