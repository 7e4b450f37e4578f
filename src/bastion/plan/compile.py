"""Compile a validated Config into the runtime Plan, once per load or reload.

Everything a request needs is resolved here: the per-site facts (TLS mode, HSTS line), host
and path tables, each route's handler behind its policy chain with its settings copied in,
upstream pools. Builders get what they need beyond their own piece of config from one
`BuildContext`; the Plan keeps no reference to the Config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.clock import SYSTEM_CLOCK, Clock
from bastion.config.errors import ConfigError, ConfigIssue
from bastion.handlers.simple import HttpsRedirectHandler
from bastion.plan.context import BuildContext, RouteSpec
from bastion.plan.facts import site_facts
from bastion.plan.handlers import build_handler
from bastion.plan.routes import CanonicalRedirect, CompiledRoute
from bastion.plan.runtime import Http2Settings, Plan
from bastion.policies.build import wrap_handler
from bastion.routing import PathTable
from bastion.state.files import resolve_data_dir
from bastion.tls.table import TLSTable

if TYPE_CHECKING:
    from bastion.config.models import Config, Site
    from bastion.proxy.pool import PoolRegistry

__all__ = ["compile_plan"]


def compile_plan(
    config: Config,
    registry: PoolRegistry,
    source: str = "<built-in>",
    clock: Clock = SYSTEM_CLOCK,
    *,
    issue_certificates: bool = True,
    checking: str | None = None,
) -> Plan:
    """The plan of ``config``; ``source`` names the config file in errors.

    Raises ``ConfigError`` for a name no builder knows, ``ValueError`` for a document a
    policy cannot use, ``OSError`` / ``ssl.SSLError`` when a certificate cannot be issued
    or loaded. With ``issue_certificates`` false (``bastion check``, the doctor) the local
    CA issues nothing and nothing is written to the data dir: the names it would certify
    are in ``plan.tls.unissued``. ``checking`` (``"online"`` or ``"offline"``) compiles
    only to check: see ``BuildContext.checking``; warnings land in ``plan.warnings``."""
    plan = Plan(
        config.listen.http,
        config.listen.https,
        config.limits,
        config.timeouts,
        Http2Settings.of(config.http2),
        config.trusted_proxies,
    )
    plan.sites = site_facts(config)
    plan.tls = TLSTable.build(
        config, [facts.tls_mode for facts in plan.sites], issue=issue_certificates
    )
    ctx = BuildContext(
        source=source,
        data_dir=resolve_data_dir(config.data_dir),
        trusted=plan.trusted,
        sites=plan.sites,
        https_port=plan.https_listeners[0].port if plan.https_listeners else None,
        pools=registry,
        cache_settings=config.cache,
        workers=config.workers,
        clock=clock,
        traceparent=config.tracing.traceparent,
        checking=checking,
        warnings=plan.warnings,
        state=config.state,
    )
    redirect = _https_redirect(ctx) if plan.https_listeners else None
    issues: list[ConfigIssue] = []  # every route's, not only the first one's
    for index, site in enumerate(config.sites):
        facts = plan.sites[index]
        paths = _site_paths(site, index, ctx, plan, issues)
        for host in site.hosts:
            if facts.secure and redirect is not None:
                plan.https_hosts.add(host, paths)
                plan.hosts.add(host, redirect)
            else:
                plan.hosts.add(host, paths)
    if issues:
        raise ConfigError(issues)
    plan.cache = ctx.opened_response_cache()
    return plan


def _https_redirect(ctx: BuildContext) -> PathTable[CompiledRoute]:
    """What plain HTTP answers for a site served over HTTPS: a redirect, or the answer to
    an ACME HTTP-01 challenge."""
    port = ctx.https_port
    acme = any(facts.tls_mode == "acme" for facts in ctx.sites)
    handler = HttpsRedirectHandler(None if port == 443 else port, ctx.challenges if acme else None)
    to_https = CompiledRoute("(redirect to https)", None, handler)
    # the route on HTTPS decides; this one only redirects
    to_https.encoded_slashes = to_https.path_parameters = True
    redirect: PathTable[CompiledRoute] = PathTable()
    redirect.add("prefix", "/", to_https)
    return redirect


def _site_paths(
    site: Site, index: int, ctx: BuildContext, plan: Plan, issues: list[ConfigIssue]
) -> PathTable[CompiledRoute]:
    facts = ctx.sites[index]
    extra_head = facts.hsts
    paths: PathTable[CompiledRoute] = PathTable()
    for number, route in enumerate(site.routes):
        spec = RouteSpec(
            route,
            site,
            facts,
            ("sites", index, "routes", number),
            f"{site.hosts[0]} {route.path.text}",
        )
        try:
            handler = wrap_handler(build_handler(spec, ctx, plan), spec, ctx)
        except ConfigError as exc:
            issues += exc.issues
            continue
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
    return paths
