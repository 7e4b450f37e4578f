"""The text of the config ``bastion init`` writes: settings, the routes derived from the
document, and comments where the user has something to decide (limits, caching, keys).

Repeated blocks are written once under top-level ``x-`` keys (which the loader ignores) with
YAML anchors, and the routes refer to them: changing the upstream or a JWT issuer is then one
edit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bastion.initconfig.routes import RoutePlan
from bastion.initconfig.security import Method, Use
from bastion.initconfig.yamltext import comment, flow_list, noted, scalar

__all__ = ["Setup", "render"]

_WRITES = ("POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class Setup:
    upstream: str
    domain: str | None = None
    email: str | None = None
    listen: str = "127.0.0.1:8080"
    """The plain-HTTP address of a local setup (a public one listens on :80 and :443)."""
    openapi_file: str | None = None
    """The saved document, relative to the config; None: no document."""
    source: str = ""
    """Where the document came from, for the header."""
    title: str = ""
    config_name: str = "bastion.yaml"


def _settings(settings: tuple[tuple[str, Any], ...], indent: str) -> list[str]:
    lines = []
    for key, value in settings:
        shown = flow_list(value) if isinstance(value, tuple) else scalar(value)
        lines.append(f"{indent}{key}: {shown}")
    return lines


def _head(setup: Setup) -> list[str]:
    name = setup.config_name
    origin = f" from {comment(setup.source)}" if setup.source else ""
    lines = [f"# Written by `bastion init`{origin}."]
    if setup.title:
        lines.append(f"# API: {comment(setup.title)}")
    lines += [
        "# What each part means and what was chosen: docs/init.md. Next:",
        f"#   bastion check -c {name}     # validate; prints the routes and their policies",
        f"#   bastion run -c {name}",
        "",
    ]
    if setup.domain:
        lines += [
            "listen:",
            noted('  http: ":80"', "ACME http-01 challenges, and redirects to https"),
            '  https: ":443"',
            "acme:",
        ]
        if setup.email:
            lines.append(
                noted(f"  email: {scalar(setup.email)}", "expiry and policy notices from the CA")
            )
        else:
            lines.append(
                noted("  email: null", "TODO your address, for expiry notices from the CA")
            )
    else:
        lines += ["listen:", f"  http: {scalar(setup.listen)}"]
    lines += [
        noted("# data_dir: /var/lib/bastion", "API keys, counters, certificates (docs/init.md)"),
        "access_log: {format: json, path: stdout}",
        "",
        noted("x-app: &app", "the application behind the gateway"),
        f"  upstreams: {flow_list([setup.upstream])}",
        "  timeouts: {connect: 5s, read: 60s}",
    ]
    if setup.openapi_file:
        lines += [
            "",
            noted("x-openapi: &openapi", "every request is checked against the app's document"),
            noted(
                f"  openapi: {scalar(setup.openapi_file)}",
                "saved: the gateway starts without the app",
            ),
            noted("  unknown_operation: 405", "a described path, another method: 405 with Allow"),
        ]
    return lines


def _anchors(routes: list[RoutePlan]) -> list[str]:
    lines: list[str] = []
    seen: set[str] = set()
    for route in routes:
        for use in route.access.uses:
            method = use.method
            if method.anchor is None or method.anchor in seen:
                continue
            seen.add(method.anchor)
            lines += ["", f"# security scheme {comment(method.scheme)!s} -> {method.kind}"]
            lines += [f"# {comment(note)}" for note in method.notes]
            lines.append(f"x-{method.anchor}: &{method.anchor}")
            lines += _settings(method.settings, "  ")
    return lines


def _keys_help(name: str, routes: list[RoutePlan]) -> list[str]:
    kinds = {use.method.kind for route in routes for use in route.access.uses}
    if "api_keys" not in kinds:
        return []
    return [
        "",
        "# Consumers and their API keys live in the data dir, not in this file:",
        f"#   bastion keys create --consumer NAME -c {name}   # the key is printed once",
        f"#   bastion keys list -c {name}",
        f"#   bastion keys revoke --consumer NAME -c {name}",
        "# A route can admit some consumers only: api_keys: {<<: *anchor, consumers: [NAME]}",
    ]


def _method_block(use: Use, indent: str) -> list[str]:
    method: Method = use.method
    head = f"{indent}{method.kind}:"
    if method.anchor is None:
        return [head, *_settings(method.settings, indent + "  ")]
    if not use.scopes:
        return [f"{head} *{method.anchor}"]
    return [
        head,
        f"{indent}  <<: *{method.anchor}",
        f"{indent}  scopes: {flow_list(use.scopes)}",
    ]


def _route(route: RoutePlan, validated: bool) -> list[str]:
    described = "; ".join(f"{t} {' '.join(ms)}" for t, ms in route.templates.items())
    lines = [f"      # {comment(described)} ({comment(route.access.label())})"]
    lines += [f"      # note: {comment(n)}" for n in route.notes]
    lines.append(f"      - path: {scalar(route.path)}")
    if route.methods:
        lines.append(f"        methods: {flow_list(route.methods)}")
    if route.access.uses:
        lines.append("        auth:")
        if len(route.access.uses) > 1:
            lines.append("          satisfy: any")
        for use in route.access.uses:
            lines += _method_block(use, "          ")
    if validated:
        lines.append("        validation: *openapi")
    lines.append("        proxy: *app")
    key = "consumer" if route.access.uses else "client_ip"
    if any(m in _WRITES for m in route.methods):
        lines.append(f"        # rate_limits: [{{rate: 10/s, burst: 20, key: {key}}}]")
    if "GET" in route.methods:
        lines.append(noted("        # cache: {ttl: 30s}", "GET answers (docs/caching.md)"))
    return lines


def render(setup: Setup, routes: list[RoutePlan] | None) -> str:
    """The config text. `routes` None: no document, one route proxying everything."""
    lines = _head(setup)
    lines += _anchors(routes or [])
    lines += _keys_help(setup.config_name, routes or [])
    lines += ["", "sites:"]
    hosts = [setup.domain] if setup.domain else ["*"]
    lines.append(f"  - hosts: {flow_list(hosts)}")
    if setup.domain:
        lines.append(noted("    tls: auto", "a certificate from the ACME CA (Let's Encrypt)"))
        lines.append(noted("    # hsts: true", "once https works: browsers remember it"))
    lines.append("    routes:")
    if not routes:
        lines += [
            "      - path: /",
            "        proxy: *app",
            noted("        # auth: {api_keys: {}}", "keys made by `bastion keys create`"),
            "        # rate_limits: [{rate: 10/s, burst: 20}]",
        ]
    else:
        for route in routes:
            lines += _route(route, setup.openapi_file is not None)
        lines += [
            "      # Paths the document does not describe get 404, the app's own docs too;",
            "      # to publish those (FastAPI serves them):",
            "      # - {path: = /docs, methods: [GET], proxy: *app}",
            "      # - {path: = /openapi.json, methods: [GET], proxy: *app}",
        ]
    return "\n".join(lines) + "\n"
