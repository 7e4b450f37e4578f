"""The text `bastion check` prints: what the compiled plan will do. Secrets
substituted from ${ENV} or ${file:} never appear in it."""

from __future__ import annotations

from bastion.config import LoadedConfig
from bastion.config.defaults import default_policy
from bastion.config.policy_traffic import SECURITY_HEADERS_OFF
from bastion.config.show import redact
from bastion.config.sites import Route, Site
from bastion.config.tls_models import TlsFiles
from bastion.config.upstream import Proxy
from bastion.plan import Plan


def describe(loaded: LoadedConfig, plan: Plan) -> str:
    config = loaded.config
    lines = [f"configuration OK: {loaded.source or '<built-in>'}", ""]
    lines.append("listeners:")
    lines += [f"  http://{address}" for address in config.listen.http]
    lines += [f"  https://{address}" for address in config.listen.https]
    workers = config.workers
    lines.append(f"workers: {workers}")
    for index, site in enumerate(config.sites):
        lines.append(f"site {index}: hosts {', '.join(site.hosts)}")
        lines.append(f"  tls: {_tls(site, plan.sites[index].tls_mode, config.acme.directory)}")
        for route in site.routes:
            methods = f" [{', '.join(route.methods)}]" if route.methods else ""
            lines.append(f"  {route.path.text}{methods} -> {_action(route)}")
            policies = _policies(route, site)
            if policies:
                lines.append(f"    policies: {', '.join(policies)}")
            if route.proxy is not None:
                lines += [f"    {line}" for line in _resilience(route.proxy)]
    unissued = plan.tls.unissued if plan.tls is not None else []
    if unissued:
        lines.append("certificates the local CA issues at start (none issued by this check):")
        lines += [f"  {', '.join(names)}" for names in unissued]
    upstreams = sorted({pool.label for pool in plan.pools})
    if upstreams:
        lines.append("upstreams:")
        lines += [f"  {u}" for u in upstreams]
    limits = config.limits
    lines.append(
        f"limits: header {limits.max_header_bytes} B, uri {limits.max_uri_bytes} B, body "
        f"{limits.max_body_bytes or 'unlimited'} B, {limits.max_connections} connections/worker"
    )
    log = config.access_log
    lines.append(f"access log: {log.format}" + ("" if log.format == "off" else f" -> {log.path}"))
    if plan.warnings:
        lines.append("warnings:")
        lines += [f"  {warning}" for warning in plan.warnings]
    return redact("\n".join(lines), loaded.secrets)


def _action(route: object) -> str:
    proxy = getattr(route, "proxy", None)
    if proxy is not None:
        strip = ", strip prefix" if getattr(route, "strip_prefix", False) else ""
        upstreams = proxy.upstreams
        policy = ""
        if len(upstreams) > 1:
            policy = f" ({proxy.balance or default_policy(upstreams)})"
        cache = getattr(route, "cache", None)
        cached = ""
        if cache is not None:
            ttl = f"ttl {cache.ttl:g}s" if cache.ttl else "as the backend says"
            cached = f", cached ({ttl})"
        return f"proxy{policy} {', '.join(str(u.url) for u in upstreams)}{strip}{cached}"
    redirect = getattr(route, "redirect", None)
    if redirect is not None:
        return f"redirect {redirect.status} {redirect.to}"
    static = getattr(route, "static", None)
    if static is not None:
        return f"static {static.root}"
    s3 = getattr(route, "s3", None)
    if s3 is not None:
        prefix = f", key prefix {s3.prefix}" if s3.prefix else ""
        strip = ", strip prefix" if getattr(route, "strip_prefix", False) else ""
        return f"s3 bucket {s3.bucket} ({s3.region}){prefix}{strip}"
    respond = getattr(route, "respond", None)
    return f"respond {respond.status}" if respond is not None else "?"


def _resilience(proxy: Proxy) -> list[str]:
    """How the route copes with failing backends: health checks, ejection, retries."""
    found: list[str] = []
    health = proxy.health
    if health is not None:
        probe = f"{health.method} {health.path}" if health.type == "http" else "tcp connect"
        found.append(
            f"health: {probe} every {health.interval:g}s (timeout {health.timeout:g}s, "
            f"down after {health.fall}, up after {health.rise})"
        )
    else:
        found.append("health: no active checks")
    passive = proxy.passive
    if len(proxy.upstreams) > 1 and passive.failures:
        found.append(
            f"passive: eject an endpoint for {passive.ejection:g}s after {passive.failures} "
            f"connect errors or 5xx in a row (at most {passive.max_ejected:.0%} of the pool)"
        )
    retries = proxy.retries
    if len(proxy.upstreams) > 1:
        found.append("connect failures: tried on another endpoint, any method")
    if retries.attempts > 1:
        statuses = ", ".join(str(s) for s in sorted(retries.on_status))
        on = "a lost connection" + (f" or status {statuses}" if statuses else "")
        found.append(
            f"retries: up to {retries.attempts} tries on {on}, idempotent requests without "
            f"a body (budget {retries.budget:.0%} of requests)"
        )
    else:
        found.append("retries: none")
    return found


def _policies(route: Route, site: Site) -> list[str]:
    """The route's policies in the order they run, by name and shape: never a value that
    could be a secret (an injected field shows only its name)."""
    found: list[str] = []
    if route.ip_rules is not None or site.ip_rules is not None:
        found.append("ip rules")
    if route.cors is not None or site.cors is not None:
        found.append("cors")
    auth = route.auth
    if auth is not None:
        kinds = auth.methods()
        allowed = auth.api_keys.consumers if auth.api_keys is not None else None
        if allowed:  # the consumers allowed belong to the API keys
            kinds[0] += f" (consumers {', '.join(allowed)})"
        found.append(f"auth {' or '.join(kinds)}")
    found += [f"rate limit {r.rate} by {r.key}" for r in route.rate_limits]
    found += [f"quota {q.limit}/{q.per} by {q.key}" for q in route.quotas]
    if route.validation is not None:
        found.append("request validation")
    if route.max_body is not None:
        found.append(f"max body {route.max_body} B")
    rules = [h for h in (site.headers, route.headers) if h is not None]
    if rules:
        injected = sorted(
            {name for h in rules if h.request is not None for name in h.request.inject}
        )
        found.append("header rules" + (f" (injects {', '.join(injected)})" if injected else ""))
    preset = route.security_headers or site.security_headers
    if preset is not None and preset != SECURITY_HEADERS_OFF:
        found.append("security headers")
    if route.compress is not None or site.compress is not None:
        found.append("compression")
    return found


def _tls(site: Site, mode: str, directory: str) -> str:
    """The site's TLS mode and certificate source; never key material."""
    if mode == "acme":
        return f"auto: ACME from {directory}" + (", HSTS" if site.hsts else "")
    if isinstance(site.tls, TlsFiles):
        return f"files (cert {site.tls.cert})" + (", HSTS" if site.hsts else "")
    if mode == "internal":
        how = "auto: local names, local CA" if site.tls == "auto" else "internal (local CA)"
        return how + (", HSTS" if site.hsts else "")
    return "off"
