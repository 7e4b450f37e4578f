"""Build a route's authentication policy from its ``auth:`` section (once per plan)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bastion.policies.authcommon import Identity

if TYPE_CHECKING:
    from bastion.config.policy_auth import Auth
    from bastion.config.sites import Route, Site
    from bastion.plan import Plan
    from bastion.policies.base import RequestPolicy

__all__ = ["build_auth"]


def build_auth(route: Route, site: Site, plan: Plan) -> RequestPolicy | None:
    conf = route.auth
    if conf is None:
        return None
    identity = Identity(conf.consumer_header)
    methods = [_method(name, conf, identity, site, plan) for name in conf.methods()]
    if len(methods) == 1:
        return methods[0]
    from bastion.policies.auth_any import any_auth

    return any_auth(methods)


def _method(name: str, conf: Auth, identity: Identity, site: Site, plan: Plan) -> Any:
    if name == "api_keys":
        from bastion.policies.auth_keys import ApiKeyPolicy
        from bastion.state.files import resolve_data_dir
        from bastion.state.stores import stores_for

        assert conf.api_keys is not None
        store = stores_for(resolve_data_dir(plan.config.data_dir)).keys
        return ApiKeyPolicy(conf.api_keys, store, identity)
    if name == "jwt":
        from bastion.policies.jwt import jwt_policy

        assert conf.jwt is not None
        return jwt_policy(conf.jwt, identity)
    if name == "basic":
        from bastion.policies.basic import BasicPolicy

        assert conf.basic is not None
        return BasicPolicy(conf.basic, identity)
    assert conf.forward is not None
    from bastion.policies.forward_auth import ForwardAuthPolicy
    from bastion.tls.table import site_tls_mode

    secure = site_tls_mode(site, bool(plan.https_listeners), plan.config.acme.directory) != "off"
    scheme = "https" if secure else "http"
    return ForwardAuthPolicy(conf.forward, identity, scheme, plan.trusted)
