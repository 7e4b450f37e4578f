"""Compile a route's policy settings into its chain, once per plan."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bastion.policies.base import RequestPolicy, ResponsePolicy, apply_response_policies
from bastion.policies.chain import PolicyHandler
from bastion.policies.cors import build_cors
from bastion.policies.fields import fold
from bastion.policies.headers import (
    build_request_headers,
    build_response_headers,
    build_security_headers,
)
from bastion.policies.ipfilter import build_ip_filter
from bastion.policies.ratelimit import build_rate_limit

if TYPE_CHECKING:
    from bastion.config.sites import Route, Site
    from bastion.plan import Plan


def build_policies(
    route: Route, site: Site, plan: Plan
) -> tuple[list[RequestPolicy], list[ResponsePolicy]]:
    """The route's request-phase policies in the order they run, and its
    response-phase ones (see docs/policies.md for the order)."""
    request: list[RequestPolicy] = []
    response: list[ResponsePolicy] = []
    # 1. IP rules
    ip_filter = build_ip_filter(route, site, plan)
    if ip_filter is not None:
        request.append(ip_filter)
    # 2. CORS (answers preflights; adds its response fields)
    cors = build_cors(route, site)
    if cors is not None:
        request.append(cors)
    # 3. authentication: API keys, JWT, Basic auth, forward auth
    # (the modules of auth, validation and compression, and the libraries they use, are
    # imported only for routes that use them: a feature that is off costs no memory)
    if route.auth is not None:
        from bastion.policies.auth import build_auth

        auth = build_auth(route, site, plan)
        if auth is not None:
            request.append(auth)
    # 4. rate limits and quotas
    limits = build_rate_limit(route, site, plan)
    if limits is not None:
        request.append(limits)
    # 5. request validation and body limits
    if route.validation is not None or route.max_body is not None:
        from bastion.policies.validate import build_body_policy

        body = build_body_policy(route, plan)
        if body is not None:
            request.append(body)
    # 6. request header rules and secret injection
    upstream_headers = build_request_headers(route, site, plan)
    if upstream_headers is not None:
        request.append(upstream_headers)
    # response phase: header rules, security headers -> compression (last)
    # (the preset first, then CORS fields, then the header rules, which thus win)
    for policy in (
        build_security_headers(route, site, plan),
        cors,
        build_response_headers(route, site, plan),
    ):
        if policy is not None:
            response.append(policy)
    if route.compress is not None or site.compress is not None:
        from bastion.policies.compress import build_compress_policy

        compress = build_compress_policy(route, site)
        if compress is not None:
            response.append(compress)
    return request, response


def wrap_handler(handler: Any, route: Route, site: Site, plan: Plan) -> Any:
    """The route's handler behind its policies, or the handler itself when it has none."""
    request, response = build_policies(route, site, plan)
    if not request and not response:
        return handler
    on_head: Callable[..., tuple[bytes, int]] | None = (
        apply_response_policies(tuple(response)) if response else None
    )
    # header rules and the preset alone: a proxied answer applies them as it builds its head
    head_edit = fold(response) if response else None
    return PolicyHandler(handler, tuple(request), on_head, head_edit)
