"""The `proxy:` action of a route, compiled once per plan."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from bastion.http1.request import Request
from bastion.proxy.exchange import Exchange
from bastion.proxy.headers import build_request_head
from bastion.proxy.pool import Pool

if TYPE_CHECKING:
    from bastion.config.models import Proxy
    from bastion.http1.server import HTTP1Connection

# Characters kept as they are when a decoded path goes back into a request target.
_PATH_SAFE = "/:@!$&'()*+,;=~"


class ProxyHandler:
    __slots__ = (
        "connect_timeout",
        "next_index",
        "pools",
        "preserve_host",
        "read_timeout",
        "send_timeout",
        "strip",
        "trusted",
        "upstream_host_line",
        "websocket_idle_timeout",
    )

    def __init__(
        self,
        config: Proxy,
        pools: list[Pool],
        strip: str | None,
        trusted: Callable[[str], bool] | None,
    ) -> None:
        self.pools = pools
        self.next_index = 0
        self.strip = strip  # the prefix removed from the path before forwarding
        self.trusted = trusted
        preserve = config.preserve_host
        # by default an https:// upstream is a virtual host of its own (a SaaS API, a CDN):
        # it gets its own name, as in its certificate; a private http:// app gets the client's
        self.preserve_host = pools[0].address.scheme != "https" if preserve is None else preserve
        self.upstream_host_line = b"Host: " + pools[0].address.authority.encode() + b"\r\n"
        self.connect_timeout = config.timeouts.connect
        self.read_timeout = config.timeouts.read
        self.send_timeout = config.timeouts.send
        self.websocket_idle_timeout = config.websocket_idle_timeout

    def pick(self) -> Pool:
        """Round robin over the route's upstreams (load-balancing policies arrive
        with the upstreams work; this is the fallback they will keep)."""
        pools = self.pools
        if len(pools) == 1:
            return pools[0]
        index = self.next_index
        self.next_index = (index + 1) % len(pools)
        return pools[index]

    def handle(self, client: HTTP1Connection, req: Request, recorder: Any = None) -> None:
        target = req.target
        strip = self.strip
        if strip is not None:
            if req.raw_path.startswith(strip):
                rest = req.raw_path[len(strip) :]
            else:  # the prefix spelled otherwise ("/%61pi/", "//api/"): use the routed path
                rest = quote(req.path[len(strip) :], safe=_PATH_SAFE)
            path = rest if rest.startswith("/") else "/" + rest
            target = (path + ("?" + req.query if req.query else "")).encode("latin-1")
        host = req.host_header or req.host.encode()
        host_line = b"Host: " + host + b"\r\n" if self.preserve_host else self.upstream_host_line
        head = build_request_head(req, target, host_line, host, client.scheme, self.trusted)
        exchange = Exchange(self, client, req)
        if recorder is not None:
            exchange.recorder = recorder  # a cache keeping a copy of the response
        exchange.start(head)
