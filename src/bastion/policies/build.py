"""Compile a route's policy settings into its chain, once per plan.

`POLICIES` maps each policy's name to its builder; `REQUEST_PHASE` and `RESPONSE_PHASE`
list the names in the order the policies run (see docs/policies.md). A builder takes the
route (`RouteSpec`) and the plan's `BuildContext` and returns its policy, or None when the
route does not use it: a route's chain holds only the policies it uses. A policy in both
phases (CORS) is built once and the same object serves both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from bastion.policies.base import RequestPolicy, ResponsePolicy, apply_response_policies
from bastion.policies.chain import PolicyHandler
from bastion.policies.fields import fold
from bastion.registry import Registry

if TYPE_CHECKING:
    from bastion.http.router import Handler
    from bastion.plan.context import BuildContext, RouteSpec

__all__ = ["POLICIES", "REQUEST_PHASE", "RESPONSE_PHASE", "build_policies", "wrap_handler"]

PolicyBuilder = Callable[["RouteSpec", "BuildContext"], object | None]


# Each policy's module, and the libraries it uses, is imported only for a route that
# uses the policy (or whose site does): a feature that is off costs no memory. Each
# wrapper returns None only where its builder would.
def _ip_rules(spec: RouteSpec, ctx: BuildContext) -> object | None:
    if spec.route.ip_rules is None and spec.site.ip_rules is None:
        return None
    from bastion.policies.ipfilter import build_ip_filter

    return build_ip_filter(spec, ctx)


def _cors(spec: RouteSpec, ctx: BuildContext) -> object | None:
    if spec.route.cors is None and spec.site.cors is None:
        return None
    from bastion.policies.cors import build_cors

    return build_cors(spec, ctx)


def _rate_limits(spec: RouteSpec, ctx: BuildContext) -> object | None:
    if not spec.route.rate_limits and not spec.route.quotas:
        return None
    from bastion.policies.ratelimit_build import build_rate_limit

    return build_rate_limit(spec, ctx)


def _no_header_rules(spec: RouteSpec) -> bool:
    return spec.route.headers is None and spec.site.headers is None


def _request_headers(spec: RouteSpec, ctx: BuildContext) -> object | None:
    if _no_header_rules(spec):
        return None
    from bastion.policies.headers import build_request_headers

    return build_request_headers(spec, ctx)


def _security_headers(spec: RouteSpec, ctx: BuildContext) -> object | None:
    if spec.route.security_headers is None and spec.site.security_headers is None:
        return None
    from bastion.policies.headers import build_security_headers

    return build_security_headers(spec, ctx)


def _response_headers(spec: RouteSpec, ctx: BuildContext) -> object | None:
    if _no_header_rules(spec):
        return None
    from bastion.policies.headers import build_response_headers

    return build_response_headers(spec, ctx)


def _auth(spec: RouteSpec, ctx: BuildContext) -> object | None:
    if spec.route.auth is None:
        return None
    from bastion.policies.auth import build_auth

    return build_auth(spec, ctx)


def _body(spec: RouteSpec, ctx: BuildContext) -> object | None:
    if spec.route.validation is None and spec.route.max_body is None:
        return None
    from bastion.policies.validate import build_body_policy

    return build_body_policy(spec, ctx)


def _compress(spec: RouteSpec, ctx: BuildContext) -> object | None:
    if spec.route.compress is None and spec.site.compress is None:
        return None
    from bastion.policies.compress import build_compress_policy

    return build_compress_policy(spec, ctx)


POLICIES: Registry[PolicyBuilder] = Registry(
    "policy",
    {
        "ip_rules": _ip_rules,
        "cors": _cors,  # answers preflights; adds its response fields
        "auth": _auth,  # API keys, JWT, Basic auth, forward auth
        "rate_limits": _rate_limits,  # and quotas
        "body": _body,  # request validation and body limits
        "request_headers": _request_headers,  # header rules and secret injection
        "security_headers": _security_headers,
        "response_headers": _response_headers,
        "compress": _compress,
    },
)

# what runs on a request, in order: these build RequestPolicy objects
REQUEST_PHASE = ("ip_rules", "cors", "auth", "rate_limits", "body", "request_headers")
# what edits a response head, in order: these build ResponsePolicy objects (the preset
# first, then CORS fields, then the header rules, which thus win; compression last)
RESPONSE_PHASE = ("security_headers", "cors", "response_headers", "compress")


def build_policies(
    spec: RouteSpec, ctx: BuildContext
) -> tuple[list[RequestPolicy], list[ResponsePolicy]]:
    """The route's request-phase policies in the order they run, and its
    response-phase ones."""
    built: dict[str, object | None] = {}
    for name in (*REQUEST_PHASE, *RESPONSE_PHASE):
        if name not in built:
            built[name] = POLICIES.get(name, spec.loc, ctx.source)(spec, ctx)
    # the phase lists name only builders of their phase's kind of policy
    request = [cast(RequestPolicy, built[n]) for n in REQUEST_PHASE if built[n] is not None]
    response = [cast(ResponsePolicy, built[n]) for n in RESPONSE_PHASE if built[n] is not None]
    return request, response


def wrap_handler(handler: Handler, spec: RouteSpec, ctx: BuildContext) -> Handler:
    """The route's handler behind its policies, or the handler itself when it has none."""
    request, response = build_policies(spec, ctx)
    if not request and not response:
        return handler
    on_head: Callable[..., tuple[bytes, int]] | None = (
        apply_response_policies(tuple(response)) if response else None
    )
    # header rules and the preset alone: a proxied answer applies them as it builds its head
    head_edit = fold(response) if response else None
    return PolicyHandler(handler, tuple(request), on_head, head_edit)
