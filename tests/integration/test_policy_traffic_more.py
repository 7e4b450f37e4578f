"""Traffic policies with the others: per-consumer quotas behind API keys, the
response-phase policies over HTTPS and HTTP/2 (HSTS only there), and what rate limits count
for IPv6 clients and long header values."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from authtokens import create_key
from conftest import Backend, Gateway, free_port, wait_for_port


def test_quota_per_consumer_behind_api_keys(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    alice, bob = create_key(data, "alice"), create_key(data, "bob")
    route = {
        "path": "/api/",
        "auth": {"api_keys": {}},
        "quotas": [{"limit": 2, "per": "month", "name": "monthly"}],
        "rate_limits": [{"rate": "100/s", "key": "consumer"}],
        "headers": {"request": {"set": {"X-Who": "{consumer}"}}},
        "proxy": {"upstreams": [backend.url]},
    }
    gw = gateway({"data_dir": str(data), "access_log": {"format": "off"},
                  "sites": [{"routes": [route]}]})  # fmt: skip
    with httpx.Client(base_url=gw.url) as client:
        # no key: 401 from authentication, which runs first and counts nothing
        assert [client.get("/api/x").status_code for _ in range(3)] == [401] * 3
        as_alice = [client.get("/api/x", headers={"X-API-Key": alice}) for _ in range(3)]
        assert [r.status_code for r in as_alice] == [200, 200, 429]
        refused = as_alice[2]
        assert refused.headers["content-type"] == "application/problem+json"
        assert '"monthly";q=2;w=' in refused.headers["ratelimit-policy"]
        assert '"monthly";r=0;' in refused.headers["ratelimit"]
        assert int(refused.headers["retry-after"]) <= 31 * 86400
        # bob has his own quota
        assert client.get("/api/x", headers={"X-API-Key": bob}).status_code == 200
    assert [dict(r["headers"]).get("x-who") for r in backend.requests] == ["alice"] * 2 + ["bob"]


def test_response_policies_over_https_and_http2(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    https = free_port()
    config: dict[str, Any] = {
        "listen": {"http": f"127.0.0.1:{free_port()}", "https": f"127.0.0.1:{https}"},
        "data_dir": str(tmp_path / "data"),
        "access_log": {"format": "off"},
        "sites": [
            {
                "hosts": ["localhost"],
                "tls": "internal",
                "security_headers": {"hsts": {"max_age": "180d", "include_subdomains": True}},
                "cors": {"origins": ["https://app.example.com"]},
                "routes": [
                    {
                        "path": "/",
                        "proxy": {"upstreams": [backend.url]},
                        "rate_limits": [{"rate": "2/m"}],
                        "headers": {"response": {"set": {"X-Edge": "{method} {path}"}}},
                    }
                ],
            }
        ],
    }
    gateway(config)
    wait_for_port(https)
    context = ssl.create_default_context(cafile=str(tmp_path / "data" / "ca" / "root.crt"))
    with httpx.Client(http1=False, http2=True, verify=context, timeout=30) as client:
        url = f"https://localhost:{https}/items"
        ok = client.get(url, headers={"Origin": "https://app.example.com"})
        assert ok.http_version == "HTTP/2" and ok.status_code == 200
        assert ok.headers["strict-transport-security"] == "max-age=15552000; includeSubDomains"
        assert ok.headers["x-content-type-options"] == "nosniff"
        assert "server" not in ok.headers
        assert ok.headers["access-control-allow-origin"] == "https://app.example.com"
        assert ok.headers["x-edge"] == "GET /items"
        assert ok.headers["ratelimit"].startswith('"client-ip-2-per-m";r=1;t=')
        preflight = client.options(
            url,
            headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET"},
        )
        assert preflight.status_code == 204  # answered at the gateway, not rate limited
        assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
        client.get(url)
        refused = client.get(url)
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["x-frame-options"] == "DENY"
        assert refused.headers["strict-transport-security"].startswith("max-age=15552000")
    assert len(backend.requests) == 2


def test_response_rules_are_the_same_on_proxied_and_gateway_answers(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    """The proxy applies a route's header rules while it builds a proxied head; the
    gateway's own answers (a 502 here) get them through the route's hook: same result,
    whatever the spelling of the backend's field names."""
    rules = {
        "response": {
            "remove": ["X-Debug-*", "X-Frame-Options", "ETag", "Date"],
            "set": {"X-Served-By": "edge {request_id}"},
            "add": {"X-Note": ["one", "two"]},
        }
    }
    dead = f"http://127.0.0.1:{free_port()}"
    gw = gateway({
        "access_log": {"format": "off"},
        "sites": [{
            "security_headers": True,
            "headers": rules,
            "routes": [
                {"path": "/down/", "proxy": {"upstreams": [dead]}},
                {"path": "/", "proxy": {"upstreams": [backend.url]}},
            ],
        }],
    })  # fmt: skip
    with httpx.Client(base_url=gw.url) as client:
        proxied = client.get("/fields")
        made = client.get("/down/fields")
    assert proxied.status_code == 200 and made.status_code == 502
    for r in (proxied, made):
        fields = {name.lower() for name in r.headers}
        assert not {n for n in fields if n.startswith("x-debug-")}
        # the rule removes what the preset adds, and the backend's own value
        assert "x-frame-options" not in fields and "etag" not in fields
        assert "date" not in fields  # neither the backend's nor the gateway's
        assert "server" not in fields  # the preset strips banners
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-served-by"] == "edge " + r.headers["x-request-id"]
        assert r.headers.get_list("x-note") == ["one", "two"]
    assert proxied.headers["x-kept"] == "yes" and proxied.text == "ok"
    assert proxied.headers["content-length"] == "2"


def test_ipv6_clients_are_counted_per_network_and_long_values_by_digest(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    """Behind a trusted proxy, two addresses of one IPv6 /64 share a bucket (a client
    cannot take a fresh one per address); an IPv4 client counts alike whether written as
    IPv4 or IPv4-mapped; long header values are told apart and counted."""
    limits = [{"rate": "1/m", "burst": 1}]
    by_tenant = [{"rate": "1/m", "burst": 1, "key": "header:X-Tenant"}]
    config = {
        "data_dir": str(tmp_path / "data"),
        "trusted_proxies": ["127.0.0.1"],
        "access_log": {"format": "off"},
        "sites": [{"hosts": ["*"], "routes": [
            {"path": "/ip/", "rate_limits": limits, "proxy": {"upstreams": [backend.url]}},
            {"path": "/v6/", "rate_limits": [{**limits[0], "ipv6_prefix": 128}],
             "proxy": {"upstreams": [backend.url]}},
            {"path": "/tenant/", "rate_limits": by_tenant, "proxy": {"upstreams": [backend.url]}},
        ]}],
    }  # fmt: skip
    gw = gateway(config)

    def status(path: str, **headers: str) -> int:
        return httpx.get(gw.url + path, headers=headers, timeout=10).status_code

    assert status("/ip/", **{"X-Forwarded-For": "2001:db8:1:2::1"}) == 200
    assert status("/ip/", **{"X-Forwarded-For": "2001:db8:1:2:ffff:ffff:ffff:ffff"}) == 429
    assert status("/ip/", **{"X-Forwarded-For": "2001:db8:1:3::1"}) == 200
    assert status("/ip/", **{"X-Forwarded-For": "::ffff:192.0.2.1"}) == 200
    assert status("/ip/", **{"X-Forwarded-For": "192.0.2.1"}) == 429
    # ipv6_prefix: 128 counts each address
    assert status("/v6/", **{"X-Forwarded-For": "2001:db8:1:2::1"}) == 200
    assert status("/v6/", **{"X-Forwarded-For": "2001:db8:1:2::2"}) == 200
    assert status("/v6/", **{"X-Forwarded-For": "2001:db8:1:2::1"}) == 429
    long_a, long_b = "a" * 500, "a" * 499 + "b"
    assert status("/tenant/", **{"X-Tenant": long_a}) == 200
    assert status("/tenant/", **{"X-Tenant": long_a}) == 429
    assert status("/tenant/", **{"X-Tenant": long_b}) == 200
