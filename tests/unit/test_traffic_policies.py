"""Pure logic of the traffic policies: IP rule decisions, CORS origin matching, header
templates, and the config errors of their keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from bastion.config import ConfigError, load_config
from bastion.config.policy_traffic import Cors, IpRules
from bastion.config.sites import Route
from bastion.config.units import parse_rate
from bastion.http.request import Request
from bastion.policies.cors import CorsPolicy
from bastion.policies.headers import compile_template
from bastion.policies.ipfilter import IpFilter


def ip_filter(**rules: list[str]) -> IpFilter:
    return IpFilter(IpRules.model_validate(rules), None)


def test_most_specific_ip_rule_wins() -> None:
    f = ip_filter(allow=["10.0.0.0/8"], deny=["10.1.2.3"])
    assert f.allowed("10.9.9.9") and not f.allowed("10.1.2.3") and not f.allowed("192.0.2.1")
    f = ip_filter(deny=["10.0.0.0/8"], allow=["10.9.0.0/16"])
    # an allow list refuses whoever matches no entry
    assert f.allowed("10.9.1.1") and not f.allowed("10.1.1.1") and not f.allowed("192.0.2.1")
    f = ip_filter(deny=["10.0.0.0/8"])
    assert f.allowed("192.0.2.1") and not f.allowed("10.1.1.1")


def test_ip_rules_ipv6_and_mapped_addresses() -> None:
    f = ip_filter(allow=["2001:db8::/32", "127.0.0.1"])
    assert f.allowed("2001:db8::1") and not f.allowed("2001:db9::1")
    assert f.allowed("::ffff:127.0.0.1")  # a dual-stack socket's view of an IPv4 client
    assert not f.allowed("::1")


def test_deny_wins_a_tie() -> None:
    f = ip_filter(allow=["10.0.0.0/8"], deny=["10.0.0.0/8"])
    assert not f.allowed("10.0.0.1")


def cors(**settings: object) -> CorsPolicy:
    return CorsPolicy(Cors.model_validate(settings))


def test_cors_wildcard_subdomains() -> None:
    c = cors(origins=["https://*.example.com", "http://localhost:3000"])
    assert c.origin_allowed(b"https://app.example.com")
    assert c.origin_allowed(b"https://a.b.example.com")
    assert c.origin_allowed(b"HTTPS://App.Example.COM")
    assert not c.origin_allowed(b"https://example.com")
    assert not c.origin_allowed(b"https://evilexample.com")
    assert not c.origin_allowed(b"https://app.example.com.evil.test")
    assert not c.origin_allowed(b"http://app.example.com")  # another scheme
    assert not c.origin_allowed(b"https://app.example.com:8443")  # another port
    assert c.origin_allowed(b"http://localhost:3000")
    assert not c.origin_allowed(b"http://localhost:3001")
    assert not c.origin_allowed(b"null")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"origins": ["*"], "credentials": True}, "credentials: true needs"),
        ({"origins": ["https://app.example.com/path"]}, "no path"),
        ({"origins": ["*", "https://a.example.com"]}, "list it alone"),
        ({"origins": ["https://a.example.com"], "headers": ["bad header"]}, "field name"),
    ],
)
def test_cors_config_errors(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Cors.model_validate(settings)


def test_rates() -> None:
    assert parse_rate("10/s") == (10, 1.0)
    assert parse_rate("10000/day") == (10000, 86400.0)
    assert parse_rate("50/10s") == (50, 10.0)
    for bad in ("10", "0/s", "ten/s", "10/fortnight", "10/0s"):
        with pytest.raises(ValueError, match="expected a rate like"):
            parse_rate(bad)


def route(**keys: object) -> Route:
    return Route.model_validate({"path": "/", "respond": {}, **keys})


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"rate_limits": [{"rate": "10/s", "key": "cookie"}]}, "client_ip, consumer, route"),
        ({"rate_limits": [{"rate": "10/s", "burst": 0}]}, "greater than or equal to 1"),
        ({"quotas": [{"limit": 10, "per": "week"}]}, "'day' or 'month'"),
        ({"headers": {"request": {"set": {"Host": "x"}}}}, "managed by the gateway"),
        ({"headers": {"response": {"set": {"X-A": "{nope}"}}}}, "unknown placeholder"),
        ({"headers": {"response": {"set": {"X-A": "{env.BASTION_UNSET_VAR}"}}}}, "not set"),
        ({"headers": {"response": {"set": {"X-A": "a\nb"}}}}, "control characters"),
        ({"ip_rules": {"allow": ["10.0.0.300/8"]}}, "IP address or CIDR"),
        ({"ip_rules": {}}, "at least one network"),
        ({"security_headers": {"frame_options": "ALLOW"}}, "DENY"),
    ],
)
def test_route_key_errors(keys: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        route(**keys)


def test_injected_secret_never_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = route(headers={"request": {"inject": {"Authorization": "Bearer sk-live-123"}}})
    assert "sk-live-123" not in repr(r) and "sk-live-123" not in str(r.model_dump())
    # a bad value from the environment: the error names the key, never the value
    monkeypatch.setenv("SAAS_TOKEN", "sk-live\x7f123")
    config = tmp_path / "bastion.yaml"
    config.write_text(
        "sites:\n  - routes:\n      - path: /\n        respond: {}\n"
        "        headers: {request: {inject: {Authorization: 'Bearer ${SAAS_TOKEN}'}}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert "inject" in str(caught.value) and "sk-live" not in str(caught.value)


def test_templates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGION", "eu-1")
    req = Request()
    req.client_ip = "192.0.2.7"
    req.consumer = "acme"
    req.request_id = "r1"
    template = compile_template("{client_ip}/{consumer}/{request_id} {env.REGION} {{x}}", None)
    assert template.constant is None
    assert template.render(req) == b"192.0.2.7/acme/r1 eu-1 {x}"
    assert compile_template("plain {env.REGION}", None).constant == b"plain eu-1"
