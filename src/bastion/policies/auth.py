"""Build a route's authentication policy from its ``auth:`` section (once per plan).

`METHODS` maps each method's name (a key of the ``auth:`` section, see ``Auth.methods``)
to its builder; a method's module is imported only when a route uses it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from bastion.policies.authcommon import Identity
from bastion.registry import Registry

if TYPE_CHECKING:
    from bastion.plan.context import BuildContext, RouteSpec
    from bastion.policies.auth_any import AuthMethod
    from bastion.policies.base import RequestPolicy

__all__ = ["METHODS", "build_auth"]

MethodBuilder = Callable[["RouteSpec", "BuildContext", Identity], "AuthMethod"]


def build_auth(spec: RouteSpec, ctx: BuildContext) -> RequestPolicy | None:
    conf = spec.route.auth
    if conf is None:
        return None
    identity = Identity(conf.consumer_header)
    loc = (*spec.loc, "auth")
    methods = [
        METHODS.get(name, (*loc, name), ctx.source)(spec, ctx, identity) for name in conf.methods()
    ]
    policy: Any = methods[0] if len(methods) == 1 else _any(methods)
    policy.events = ctx.events  # its refusals are counted (`policies/chain.py`)
    return cast("RequestPolicy", policy)


def _any(methods: list[AuthMethod]) -> RequestPolicy:
    from bastion.policies.auth_any import any_auth

    return any_auth(methods)


def _api_keys(spec: RouteSpec, ctx: BuildContext, identity: Identity) -> AuthMethod:
    from bastion.policies.auth_keys import ApiKeyPolicy

    conf = spec.route.auth
    assert conf is not None and conf.api_keys is not None
    return ApiKeyPolicy(conf.api_keys, ctx.key_store, identity)


def _jwt(spec: RouteSpec, ctx: BuildContext, identity: Identity) -> AuthMethod:
    from bastion.policies.jwt import jwt_policy

    conf = spec.route.auth
    assert conf is not None and conf.jwt is not None
    return jwt_policy(conf.jwt, identity, ctx.clock)


def _basic(spec: RouteSpec, ctx: BuildContext, identity: Identity) -> AuthMethod:
    from bastion.policies.basic import BasicPolicy

    conf = spec.route.auth
    assert conf is not None and conf.basic is not None
    return BasicPolicy(conf.basic, identity)


def _forward(spec: RouteSpec, ctx: BuildContext, identity: Identity) -> AuthMethod:
    from bastion.policies.forward_auth import ForwardAuthPolicy

    conf = spec.route.auth
    assert conf is not None and conf.forward is not None
    scheme = "https" if spec.facts.secure else "http"
    return ForwardAuthPolicy(conf.forward, identity, scheme, ctx.trusted)


METHODS: Registry[MethodBuilder] = Registry(
    "authentication method",
    {"api_keys": _api_keys, "jwt": _jwt, "basic": _basic, "forward": _forward},
)
