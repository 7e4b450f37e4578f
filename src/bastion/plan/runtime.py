"""The runtime Plan: what every connection of a worker reads, made once per load or reload
by `bastion.plan.compile`. It holds resolved objects only, never the Config it came from.
Nothing here runs per request except `Plan.route` and `Plan.is_trusted`."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from typing import TYPE_CHECKING

from bastion.config.addresses import client_address
from bastion.http.router import Router
from bastion.plan.routes import CompiledRoute
from bastion.plan.routes import noncanonical as _noncanonical
from bastion.routing import HostTable, PathTable

if TYPE_CHECKING:
    from bastion.balance.balancer import Balancer
    from bastion.cache.setup import PlanCache
    from bastion.config.addresses import Address
    from bastion.config.models import Http2, Limits, ServerTimeouts
    from bastion.http.request import Request
    from bastion.plan.facts import SiteFacts
    from bastion.proxy.pool import Pool
    from bastion.tls.table import TLSTable

__all__ = ["Http2Settings", "Plan"]


@dataclass(frozen=True, slots=True)
class Http2Settings:
    """What an HTTP/2 connection reads when it opens (the `http2:` section)."""

    enabled: bool
    max_concurrent_streams: int
    max_requests: int
    initial_window: int
    max_resets: int
    max_uploads: int

    @classmethod
    def of(cls, http2: Http2) -> Http2Settings:
        return cls(
            http2.enabled,
            http2.max_concurrent_streams,
            http2.max_requests,
            int(http2.initial_window),
            http2.max_resets,
            http2.max_uploads,
        )


class Plan(Router):
    def __init__(
        self,
        listeners: Sequence[Address],
        https_listeners: Sequence[Address],
        limits: Limits,
        timeouts: ServerTimeouts,
        http2: Http2Settings,
        trusted_proxies: Sequence[IPv4Network | IPv6Network | str],
    ) -> None:
        self.listeners = list(listeners)
        self.https_listeners = list(https_listeners)
        # Router's properties (below): attributes of their own names would be refused,
        # interpreted, by Router's, which have no setter
        self._limits = limits
        self._timeouts = timeouts
        self._http2 = http2
        # per-site facts (TLS mode, HSTS line), in config order: computed once
        self.sites: tuple[SiteFacts, ...] = ()
        # sites by host, as seen from plain-HTTP and from HTTPS listeners: a site with TLS
        # is a redirect on the first and itself on the second; a site without TLS is
        # absent from the second
        self.hosts: HostTable[PathTable[CompiledRoute]] = HostTable()
        self.https_hosts: HostTable[PathTable[CompiledRoute]] = HostTable()
        self.tls: TLSTable | None = None
        self.pools: set[Pool] = set()
        self.balancers: list[Balancer] = []
        self._networks = [ipaddress.ip_network(n) for n in trusted_proxies]
        self._trusted_cache: dict[str, bool] = {}
        self.trusted: Callable[[str], bool] | None = self.is_trusted if self._networks else None
        # the response cache, made when a route has `cache:` (see bastion.cache.setup)
        self.cache: PlanCache | None = None
        # what a check-only compile found worth saying that is not an error
        self.warnings: list[str] = []

    @property
    def limits(self) -> Limits:
        return self._limits

    @property
    def timeouts(self) -> ServerTimeouts:
        return self._timeouts

    @property
    def http2(self) -> Http2Settings:
        return self._http2

    def route(self, req: Request, secure: bool = False) -> tuple[CompiledRoute | None, int, bytes]:
        """The route for a request, or (None, status, Allow value) for 404/405."""
        paths = (self.https_hosts if secure else self.hosts).lookup(req.host)
        if paths is None:
            return None, 404, b""
        candidates = paths.match(req.path)
        if candidates is None:
            return None, 404, b""
        method = req.method
        for route in candidates:
            if route.methods is None or method in route.methods:
                if req.path is not req.raw_path:  # the target was rewritten (rare)
                    return _noncanonical(route, req)
                return route, 0, b""
        allowed = sorted({m for r in candidates if r.methods for m in r.methods})
        return None, 405, ", ".join(allowed).encode()

    def is_trusted(self, ip: str) -> bool:
        if not self._networks:
            return False
        cached = self._trusted_cache.get(ip)
        if cached is None:
            address = client_address(ip)
            cached = address is not None and any(address in net for net in self._networks)
            if len(self._trusted_cache) > 4096:
                self._trusted_cache.clear()
            self._trusted_cache[ip] = cached
        return cached
