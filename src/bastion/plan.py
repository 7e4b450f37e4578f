"""Compile a validated Config into the runtime Plan, once per load or reload.

Everything a request needs is resolved here: host and path tables, each route's
handler object with its settings copied in, upstream pools. Nothing in this
module runs per request except `Plan.route` and `Plan.is_trusted`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bastion.balance import health
from bastion.balance.balancer import Balancer, Member
from bastion.balance.endpoint import endpoint_of
from bastion.balance.policies import make_policy
from bastion.balance.resolve import Resolver, needs_resolver
from bastion.config.balancing import default_policy
from bastion.config.models import Hsts, PassiveHealth
from bastion.handlers.s3 import S3Handler, s3_endpoint
from bastion.handlers.simple import HttpsRedirectHandler, RedirectHandler, RespondHandler
from bastion.handlers.static import StaticHandler
from bastion.http1.target import has_encoded_slash, has_path_parameter
from bastion.policies.build import wrap_handler
from bastion.proxy.handler import ProxyHandler
from bastion.proxy.pool import Pool, PoolRegistry
from bastion.proxy.tls import upstream_tls
from bastion.routing import HostTable, PathTable
from bastion.tls.challenges import ChallengeStore
from bastion.tls.store import resolve_data_dir
from bastion.tls.table import TLSTable, site_tls_mode

if TYPE_CHECKING:
    from bastion.config.models import Config, Proxy, Route, Site
    from bastion.http.request import Request


class CompiledRoute:
    __slots__ = (
        "encoded_slashes",
        "extra_head",
        "handler",
        "methods",
        "name",
        "noncanonical",
        "path_parameters",
    )

    def __init__(
        self, name: str, methods: frozenset[str] | None, handler: Any, extra_head: bytes = b""
    ) -> None:
        self.name = name
        self.methods = methods
        self.handler = handler
        # header lines added to every response of this route (HSTS over HTTPS)
        self.extra_head = extra_head
        # the route's backend takes %2F / %5C as data, not as a separator
        self.encoded_slashes = False
        # the route's backend takes ";" in a path as data, not as a parameter to cut off
        self.path_parameters = False
        # a request whose target was not canonical: None forwards the canonical form;
        # otherwise the route that answers it (a 308 to the canonical form), or 400
        self.noncanonical: CompiledRoute | int | None = None


class CanonicalRedirect:
    """The answer of a `path_normalisation: redirect` route to a non-canonical target."""

    def handle(self, client: Any, req: Request) -> None:
        location = req.path + ("?" + req.query if req.query else "")
        client.respond(req, 308, b"", b"", b"Location: " + location.encode("latin-1") + b"\r\n")


class Plan:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.listeners = list(config.listen.http)
        self.https_listeners = list(config.listen.https)
        self.limits = config.limits
        self.timeouts = config.timeouts
        self.http2_enabled = config.http2.enabled
        self.http2 = config.http2  # the HTTP/2 protocol's settings (bastion.http.context)
        # sites by host, as seen from plain-HTTP and from HTTPS listeners: a site with TLS
        # is a redirect on the first and itself on the second; a site without TLS is
        # absent from the second
        self.hosts: HostTable[PathTable[CompiledRoute]] = HostTable()
        self.https_hosts: HostTable[PathTable[CompiledRoute]] = HostTable()
        self.tls: TLSTable | None = None
        self.pools: set[Pool] = set()
        self.balancers: list[Balancer] = []
        self._networks = [ipaddress.ip_network(n) for n in config.trusted_proxies]
        self._trusted_cache: dict[str, bool] = {}
        self.trusted: Callable[[str], bool] | None = self.is_trusted if self._networks else None
        # the response cache, made when a route has `cache:` (see bastion.cache.setup)
        self.cache: Any = None

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
            try:
                address = ipaddress.ip_address(ip)
            except ValueError:
                cached = False
            else:
                mapped = getattr(address, "ipv4_mapped", None)
                address = mapped or address
                cached = any(address in net for net in self._networks)
            if len(self._trusted_cache) > 4096:
                self._trusted_cache.clear()
            self._trusted_cache[ip] = cached
        return cached


def _noncanonical(route: CompiledRoute, req: Request) -> tuple[CompiledRoute | None, int, bytes]:
    """The route's answer to a request whose target was not in canonical form."""
    if not route.encoded_slashes and has_encoded_slash(req.path):
        return None, 400, b""
    if not route.path_parameters and has_path_parameter(req.path):
        return None, 400, b""  # "/admin;x/secret" is "/admin/secret" to a servlet container
    answer = route.noncanonical
    if answer is None or req.path == req.raw_path:  # canonical, only spelled in a new object
        return route, 0, b""
    if isinstance(answer, int):
        return None, answer, b""
    return answer, 0, b""


def compile_plan(config: Config, registry: PoolRegistry) -> Plan:
    """Raises ``OSError`` / ``ssl.SSLError`` when a certificate cannot be issued or loaded."""
    plan = Plan(config)
    plan.tls = TLSTable.build(config)
    has_https = bool(plan.https_listeners)
    redirect: PathTable[CompiledRoute] | None = None
    if has_https:
        port = plan.https_listeners[0].port
        redirect = PathTable()
        challenges = None
        directory = config.acme.directory
        if any(site_tls_mode(s, True, directory) == "acme" for s in config.sites):
            challenges = ChallengeStore(resolve_data_dir(config.data_dir))
        handler = HttpsRedirectHandler(None if port == 443 else port, challenges)
        to_https = CompiledRoute("(redirect to https)", None, handler)
        # the route on HTTPS decides; this one only redirects
        to_https.encoded_slashes = to_https.path_parameters = True
        redirect.add("prefix", "/", to_https)
    for site in config.sites:
        secure = site_tls_mode(site, has_https, config.acme.directory) != "off"
        paths: PathTable[CompiledRoute] = PathTable()
        extra_head = _hsts_line(site) if secure else b""
        for route in site.routes:
            handler = wrap_handler(
                _handler(route, plan, registry, f"{site.hosts[0]} {route.path.text}"),
                route,
                site,
                plan,
            )
            methods = frozenset(route.methods) if route.methods else None
            if methods is not None and "GET" in methods:
                methods = methods | {"HEAD"}
            if methods is not None and (route.cors or site.cors):
                methods = methods | {"OPTIONS"}  # CORS preflights; cors.py refuses other OPTIONS
            compiled = CompiledRoute(route.path.text, methods, handler, extra_head)
            compiled.encoded_slashes = route.encoded_slashes == "keep"
            compiled.path_parameters = route.path_parameters == "keep"
            if route.path_normalisation == "reject":
                compiled.noncanonical = 400
            elif route.path_normalisation == "redirect":
                compiled.noncanonical = CompiledRoute(
                    route.path.text, methods, CanonicalRedirect(), extra_head
                )
            paths.add(route.path.kind, route.path.value, compiled)
        for host in site.hosts:
            if secure and redirect is not None:
                plan.https_hosts.add(host, paths)
                plan.hosts.add(host, redirect)
            else:
                plan.hosts.add(host, paths)
    return plan


def _balancer(proxy: Proxy, registry: PoolRegistry, name: str) -> Balancer:
    members: list[Member] = []
    for upstream in proxy.upstreams:
        pool = registry.get(
            upstream.url,
            proxy.max_idle_connections,
            proxy.idle_timeout,
            upstream_tls(proxy.tls, upstream.url),
        )
        address = pool.address
        if needs_resolver(address.host) and address.port is not None:
            resolver = pool.resolver
            if resolver is None or resolver.ttl != proxy.resolve_ttl:
                assert address.host is not None
                pool.resolver = Resolver(address.host, address.port, proxy.resolve_ttl)
        endpoint = endpoint_of(pool)
        health.configure(endpoint, proxy.health)
        members.append(Member(endpoint, upstream.weight, upstream.zone, upstream.backup))
    policy = proxy.balance or default_policy(proxy.upstreams)
    return Balancer(
        name,
        members,
        make_policy(policy, proxy.hash.key, proxy.sticky.cookie),
        policy,
        proxy.passive,
        proxy.slow_start,
        proxy.max_connections,
        proxy.max_pending,
        proxy.health.interval if proxy.health is not None else None,
    )


def _single_balancer(pool: Pool, name: str) -> Balancer:
    """A one-endpoint pool with the defaults (an S3 endpoint)."""
    member = Member(endpoint_of(pool), 1, None, False)
    policy = make_policy("round_robin", "client_ip", "")
    return Balancer(name, [member], policy, "round_robin", PassiveHealth(), 0.0, 0, 0, None)


def _hsts_line(site: Site) -> bytes:
    hsts = site.hsts
    if hsts is False:
        return b""
    if hsts is True:
        hsts = Hsts()
    value = f"max-age={int(hsts.max_age)}"
    if hsts.include_subdomains:
        value += "; includeSubDomains"
    if hsts.preload:
        value += "; preload"
    return b"Strict-Transport-Security: " + value.encode() + b"\r\n"


def _handler(route: Route, plan: Plan, registry: PoolRegistry, name: str) -> Any:
    prefix = route.path.value if route.path.kind == "prefix" else None
    if route.proxy is not None:
        balancer = _balancer(route.proxy, registry, name)
        plan.pools.update(m.ep.pool for m in balancer.members)
        plan.balancers.append(balancer)
        strip = prefix if route.strip_prefix else None
        handler = ProxyHandler(route.proxy, balancer, strip, plan.trusted)
        if route.cache is not None:
            from bastion.cache.setup import caching_handler

            return caching_handler(handler, route.cache, plan, route.auth)
        return handler
    if route.s3 is not None:
        s3 = route.s3
        endpoint, host, base = s3_endpoint(s3)
        pool = registry.get(endpoint, 64, 4.0, upstream_tls(s3.tls, endpoint))
        plan.pools.add(pool)
        balancer = _single_balancer(pool, name)
        plan.balancers.append(balancer)
        return S3Handler(s3, balancer, host, base, prefix if route.strip_prefix else None)
    if route.redirect is not None:
        return RedirectHandler(route.redirect, prefix)
    if route.static is not None:
        return StaticHandler(route.static)
    assert route.respond is not None
    return RespondHandler(route.respond)
