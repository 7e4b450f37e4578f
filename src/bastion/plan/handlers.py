"""What answers a route: one builder per route kind (``proxy``, ``s3``, ``redirect``,
``static``, ``respond``), chosen by name from `HANDLERS`. The upstream pools and balancers
a handler uses are added to the plan."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bastion.balance import health
from bastion.balance.balancer import Balancer, Member
from bastion.balance.endpoint import endpoint_of
from bastion.balance.policies import make_policy
from bastion.balance.resolve import Resolver, needs_resolver
from bastion.config.defaults import ACTIONS, default_policy
from bastion.handlers.simple import RedirectHandler, RespondHandler
from bastion.http.router import Handler
from bastion.proxy.handler import ProxyHandler
from bastion.proxy.tls import upstream_tls
from bastion.registry import Registry

if TYPE_CHECKING:
    from bastion.config.errors import Loc
    from bastion.config.sites import Route
    from bastion.config.upstream import Proxy
    from bastion.plan.context import BuildContext, RouteSpec
    from bastion.plan.runtime import Plan
    from bastion.proxy.pool import Pool

__all__ = ["HANDLERS", "build_handler", "route_kind"]

HandlerBuilder = Callable[["RouteSpec", "BuildContext", "Plan"], Handler]


def route_kind(route: Route) -> str:
    """The route's kind: the one of ``config.defaults.ACTIONS`` it sets (the config makes
    sure there is exactly one)."""
    for kind in ACTIONS:
        if getattr(route, kind) is not None:
            return kind
    return ""


def build_handler(spec: RouteSpec, ctx: BuildContext, plan: Plan) -> Handler:
    kind = route_kind(spec.route)
    return HANDLERS.get(kind, spec.loc, ctx.source)(spec, ctx, plan)


def _prefix(route: Route) -> str | None:
    return route.path.value if route.path.kind == "prefix" else None


def _proxy(spec: RouteSpec, ctx: BuildContext, plan: Plan) -> Handler:
    route = spec.route
    assert route.proxy is not None
    balancer = _balancer(route.proxy, ctx, spec.name, (*spec.loc, "proxy"))
    plan.pools.update(m.ep.pool for m in balancer.members)
    plan.balancers.append(balancer)
    strip = _prefix(route) if route.strip_prefix else None
    handler = ProxyHandler(route.proxy, balancer, strip, ctx.trusted, ctx.traceparent)
    if route.cache is not None:
        from bastion.cache.setup import caching_handler

        return caching_handler(handler, route.cache, ctx, route.auth)
    return handler


def _s3(spec: RouteSpec, ctx: BuildContext, plan: Plan) -> Handler:
    # imported by the routes that use it: SigV4 signing and the static handler's
    # date and MIME tables stay out of a worker that serves neither
    from bastion.handlers.s3 import S3Handler, s3_endpoint

    route = spec.route
    s3 = route.s3
    assert s3 is not None
    endpoint, host, base = s3_endpoint(s3)
    pool = ctx.pools.get(endpoint, 64, 4.0, upstream_tls(s3.tls, endpoint))
    plan.pools.add(pool)
    balancer = _single_balancer(pool, spec.name, ctx, (*spec.loc, "s3"))
    plan.balancers.append(balancer)
    return S3Handler(s3, balancer, host, base, _prefix(route) if route.strip_prefix else None)


def _redirect(spec: RouteSpec, ctx: BuildContext, plan: Plan) -> Handler:
    assert spec.route.redirect is not None
    return RedirectHandler(spec.route.redirect, _prefix(spec.route))


def _static(spec: RouteSpec, ctx: BuildContext, plan: Plan) -> Handler:
    from bastion.handlers.static import StaticHandler

    assert spec.route.static is not None
    return StaticHandler(spec.route.static)


def _respond(spec: RouteSpec, ctx: BuildContext, plan: Plan) -> Handler:
    assert spec.route.respond is not None
    return RespondHandler(spec.route.respond)


HANDLERS: Registry[HandlerBuilder] = Registry(
    "route kind",
    {"proxy": _proxy, "s3": _s3, "redirect": _redirect, "static": _static, "respond": _respond},
)


def _balancer(proxy: Proxy, ctx: BuildContext, name: str, loc: Loc) -> Balancer:
    members: list[Member] = []
    for upstream in proxy.upstreams:
        pool = ctx.pools.get(
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
        health.configure(endpoint, proxy.health, ctx.clock)
        members.append(Member(endpoint, upstream.weight, upstream.zone, upstream.backup))
    policy = proxy.balance or default_policy(proxy.upstreams)
    return Balancer(
        name,
        members,
        make_policy(policy, proxy.hash.key, proxy.sticky.cookie, (*loc, "balance"), ctx.source),
        policy,
        proxy.passive,
        proxy.slow_start,
        proxy.max_connections,
        proxy.max_pending,
        proxy.health.interval if proxy.health is not None else None,
    )


def _single_balancer(pool: Pool, name: str, ctx: BuildContext, loc: Loc) -> Balancer:
    """A one-endpoint pool with the defaults (an S3 endpoint)."""
    member = Member(endpoint_of(pool), 1, None, False)
    policy = make_policy("round_robin", "client_ip", "", loc, ctx.source)
    return Balancer(name, [member], policy, "round_robin", None, 0.0, 0, 0, None)
