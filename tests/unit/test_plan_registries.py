"""The plan's name → builder registries: each covers every name the config models accept,
and a name without a builder is a configuration error with its key path, never a silent
fallback. Also what the compiler hands its builders and keeps on the plan."""

from __future__ import annotations

import asyncio
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from bastion.balance.policies import POLICIES as BALANCING
from bastion.balance.policies import (
    Hash,
    LeastRequests,
    PeakEwma,
    RandomTwo,
    RoundRobin,
    Sticky,
    make_policy,
)
from bastion.config import config_from_dict
from bastion.config.defaults import ACTIONS
from bastion.config.errors import ConfigError
from bastion.config.policy_auth import Auth
from bastion.config.sites import Route
from bastion.config.upstream import Proxy
from bastion.plan import compile_plan
from bastion.plan import handlers as plan_handlers
from bastion.plan.handlers import HANDLERS, route_kind
from bastion.policies.auth import METHODS
from bastion.policies.build import POLICIES, REQUEST_PHASE, RESPONSE_PHASE
from bastion.proxy.pool import PoolRegistry
from bastion.registry import Registry


def _literal_names(annotation: Any) -> set[str]:
    """The strings of every ``Literal`` inside ``annotation`` (through unions, Optional)."""
    if typing.get_origin(annotation) is typing.Literal:
        return {a for a in typing.get_args(annotation) if isinstance(a, str)}
    names: set[str] = set()
    for arg in typing.get_args(annotation):
        names |= _literal_names(arg)
    return names


def _model_fields(model: type[BaseModel]) -> set[str]:
    """The fields of ``model`` that hold a nested model (``X | None``)."""
    found = set()
    for name, field in model.model_fields.items():
        args = typing.get_args(field.annotation) or (field.annotation,)
        if any(isinstance(a, type) and issubclass(a, BaseModel) for a in args):
            found.add(name)
    return found


@pytest.fixture
def pools() -> Iterator[PoolRegistry]:
    loop = asyncio.new_event_loop()
    try:
        yield PoolRegistry(loop)
    finally:
        loop.close()


# ------------------------------------------------------------------- coverage


def test_balancing_registry_covers_every_policy_the_config_accepts() -> None:
    accepted = _literal_names(Proxy.model_fields["balance"].annotation)
    assert "round_robin" in accepted and "sticky" in accepted  # the Literal was found
    assert set(BALANCING) == accepted


def test_each_balancing_name_builds_its_own_policy() -> None:
    expected = {
        "round_robin": RoundRobin,
        "least_requests": LeastRequests,
        "random_two": RandomTwo,
        "peak_ewma": PeakEwma,
        "hash": Hash,
        "sticky": Sticky,
    }
    for name, kind in expected.items():
        policy = make_policy(name, "client_ip", "srv", ("x",), "bastion.yaml")
        assert type(policy) is kind, name


def test_handler_registry_covers_every_route_kind() -> None:
    assert set(ACTIONS) <= set(Route.model_fields)
    assert set(HANDLERS) == set(ACTIONS)


def test_auth_registry_covers_every_method() -> None:
    accepted = _model_fields(Auth)
    assert accepted == {"api_keys", "jwt", "basic", "forward"}
    assert set(METHODS) == accepted


def test_policy_registry_builds_every_phase_entry() -> None:
    assert set(REQUEST_PHASE) | set(RESPONSE_PHASE) == set(POLICIES)


def test_route_kind_is_the_action_the_route_sets() -> None:
    config = config_from_dict(
        {
            "sites": [
                {
                    "routes": [
                        {"path": "/a", "respond": {"status": 204}},
                        {"path": "/b", "redirect": {"to": "https://example.test/"}},
                        {"path": "/c", "proxy": {"upstreams": ["http://127.0.0.1:9"]}},
                    ]
                }
            ]
        }
    ).config
    assert [route_kind(r) for r in config.sites[0].routes] == ["respond", "redirect", "proxy"]


# -------------------------------------------------------------- unknown names


@pytest.mark.parametrize(
    ("registry", "name"),
    [(BALANCING, "fastest"), (HANDLERS, "lambda"), (METHODS, "oauth"), (POLICIES, "waf")],
)
def test_every_registry_rejects_an_unknown_name(registry: Registry[Any], name: str) -> None:
    loc = ("sites", 0, "routes", 2, "thing")
    with pytest.raises(ConfigError) as caught:
        registry.get(name, loc, "/etc/bastion.yaml")
    (issue,) = caught.value.issues
    assert issue.file == "/etc/bastion.yaml"
    assert issue.path == "sites[0].routes[2].thing"
    assert f"unknown {registry.kind} {name!r}" in issue.message
    for known in registry:
        assert known in issue.message  # the error lists what would have been accepted


def test_make_policy_has_no_fallback() -> None:
    with pytest.raises(ConfigError) as caught:
        make_policy("fastest", "client_ip", "", ("sites", 1, "routes", 0, "proxy", "balance"), "f")
    assert "sites[1].routes[0].proxy.balance: unknown balancing policy 'fastest'" in str(
        caught.value
    )


def test_the_compiler_reports_a_kind_without_builder_with_its_key_path(
    pools: PoolRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        plan_handlers, "HANDLERS", Registry("route kind", {"proxy": plan_handlers._proxy})
    )
    config = config_from_dict(
        {
            "data_dir": str(tmp_path),
            "sites": [
                {"routes": [{"path": "/", "proxy": {"upstreams": ["http://127.0.0.1:9"]}}]},
                {"hosts": ["b.test"], "routes": [{"path": "/", "respond": {"status": 204}}]},
            ],
        }
    ).config
    with pytest.raises(ConfigError) as caught:
        compile_plan(config, pools, "site.yaml")
    assert str(caught.value) == (
        "site.yaml: sites[1].routes[0]: unknown route kind 'respond'; known: proxy"
    )


# ------------------------------------------------------------- the plan itself


def test_the_plan_keeps_facts_not_the_config(pools: PoolRegistry, tmp_path: Path) -> None:
    config = config_from_dict(
        {
            "data_dir": str(tmp_path),
            "listen": {"http": "127.0.0.1:8080"},
            "http2": {"max_concurrent_streams": 7, "initial_window": "1 MiB"},
            "trusted_proxies": ["10.0.0.0/8"],
            "sites": [{"routes": [{"path": "/", "respond": {"status": 204}}]}],
        }
    ).config
    plan = compile_plan(config, pools)
    assert not hasattr(plan, "config")
    assert plan.http2.max_concurrent_streams == 7
    assert plan.http2.initial_window == 1024 * 1024
    assert plan.http2.enabled
    assert [(f.tls_mode, f.secure, f.hsts) for f in plan.sites] == [("off", False, b"")]
    assert plan.is_trusted("10.1.2.3") and not plan.is_trusted("192.0.2.1")
    assert plan.cache is None  # no route is cached: the cache is not even made


def test_build_context_opens_each_store_once(tmp_path: Path) -> None:
    from bastion.plan.context import BuildContext

    loop = asyncio.new_event_loop()
    try:
        config = config_from_dict({"sites": [{"routes": [{"path": "/", "respond": {}}]}]}).config
        ctx = BuildContext(
            source="x",
            data_dir=tmp_path,
            trusted=None,
            sites=(),
            https_port=None,
            pools=PoolRegistry(loop),
            cache_settings=config.cache,
            workers=1,
        )
        assert ctx.opened_response_cache() is None
        assert ctx.limit_store is ctx.limit_store
        assert ctx.key_store is ctx.key_store
        cache = ctx.response_cache
        assert ctx.response_cache is cache
        assert ctx.opened_response_cache() is cache
        cache.purge.stop()
    finally:
        loop.close()


def test_site_facts_are_worked_out_once_per_site() -> None:
    from bastion.plan.facts import site_facts

    config = config_from_dict(
        {
            "listen": {"http": "127.0.0.1:8080", "https": "127.0.0.1:8443"},
            "sites": [
                {
                    "hosts": ["a.test"],
                    "tls": "internal",
                    "hsts": {"max_age": "1d", "include_subdomains": True},
                    "routes": [{"path": "/", "respond": {}}],
                },
                {"hosts": ["b.test"], "tls": "off", "routes": [{"path": "/", "respond": {}}]},
            ],
        }
    ).config
    a, b = site_facts(config)
    assert (a.tls_mode, a.secure) == ("internal", True)
    assert a.hsts == b"Strict-Transport-Security: max-age=86400; includeSubDomains\r\n"
    assert (b.tls_mode, b.secure, b.hsts) == ("off", False, b"")
