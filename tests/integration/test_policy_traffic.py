"""Traffic policies through the whole gateway against a real backend: IP rules, CORS,
rate limits and quotas (with restarts and reloads), header rules, secret injection and
security headers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Backend, Gateway, free_port

SECRET = "sk-live-7f3a9c2e1b5d4f60"


def site(backend: Backend, tmp_path: Path, **route: Any) -> dict[str, Any]:
    """A config with one proxy route carrying ``route``'s keys."""
    proxy = {"upstreams": [backend.url]}
    return {
        "data_dir": str(tmp_path / "data"),
        "access_log": {"format": "json", "path": str(tmp_path / "access.log")},
        "sites": [{"hosts": ["*"], "routes": [{"path": "/", "proxy": proxy, **route}]}],
    }


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    doc = response.json()
    assert doc["status"] == status
    return doc


def seen_headers(backend: Backend) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in backend.requests[-1]["headers"]:
        headers.setdefault(name, []).append(value)
    return headers


# ----------------------------------------------------------------- IP rules
def test_ip_rules_refuse_and_allow(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    config = site(backend, tmp_path)
    config["sites"][0]["ip_rules"] = {"allow": ["10.0.0.0/8", "2001:db8::/32"]}
    config["sites"][0]["routes"].insert(
        0,
        {
            "path": "/open/",
            "proxy": {"upstreams": [backend.url]},
            "ip_rules": {"deny": ["192.0.2.0/24"]},  # replaces the site's
        },
    )
    gw = gateway(config)
    doc = problem(httpx.get(gw.url + "/private"), 403)
    assert "not allowed" in doc["detail"]
    assert backend.requests == []  # refused before the backend
    assert httpx.get(gw.url + "/open/x").status_code == 200


def test_ip_rules_use_the_real_client_behind_trusted_proxies(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    config = site(backend, tmp_path, ip_rules={"allow": ["10.0.0.0/8"], "deny": ["10.6.6.6"]})
    config["trusted_proxies"] = ["127.0.0.1"]
    gw = gateway(config)
    assert httpx.get(gw.url + "/", headers={"X-Forwarded-For": "10.1.2.3"}).status_code == 200
    problem(httpx.get(gw.url + "/", headers={"X-Forwarded-For": "10.6.6.6"}), 403)
    problem(httpx.get(gw.url + "/", headers={"X-Forwarded-For": "192.0.2.9"}), 403)
    # a client cannot smuggle an allowed address in front of its own
    problem(httpx.get(gw.url + "/", headers={"X-Forwarded-For": "10.1.2.3, 192.0.2.9"}), 403)
    problem(httpx.get(gw.url + "/"), 403)  # 127.0.0.1 itself is not in the allow list


# --------------------------------------------------------------------- CORS
CORS = {
    "origins": ["https://app.example.com", "https://*.partner.test"],
    "methods": ["GET", "PUT", "DELETE"],
    "headers": ["X-Api-Key", "Content-Type"],
    "expose_headers": ["X-Request-Id"],
    "credentials": True,
    "max_age": "1h",
}


def test_cors_preflight_is_answered_at_the_gateway(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = gateway(site(backend, tmp_path, cors=CORS))
    r = httpx.options(
        gw.url + "/items/1",
        headers={
            "Origin": "https://eu.partner.test",
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "x-api-key, content-type",
        },
    )
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "https://eu.partner.test"
    assert r.headers["access-control-allow-methods"] == "GET, PUT, DELETE"
    assert r.headers["access-control-allow-headers"] == "x-api-key, content-type"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert r.headers["access-control-max-age"] == "3600"
    assert "Origin" in r.headers["vary"]
    assert backend.requests == []


@pytest.mark.parametrize(
    ("origin", "method", "headers"),
    [
        ("https://evil.test", "GET", ""),  # an origin not allowed
        ("https://partner.test", "GET", ""),  # the wildcard is for subdomains only
        ("https://app.example.com", "PATCH", ""),  # a method not allowed
        ("https://app.example.com", "PUT", "x-api-key, x-secret"),  # a header not allowed
    ],
)
def test_cors_preflight_refused(
    backend: Backend,
    gateway: Callable[..., Gateway],
    tmp_path: Path,
    origin: str,
    method: str,
    headers: str,
) -> None:
    gw = gateway(site(backend, tmp_path, cors=CORS))
    asked = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        asked["Access-Control-Request-Headers"] = headers
    r = httpx.options(gw.url + "/items/1", headers=asked)
    problem(r, 403)
    assert "access-control-allow-origin" not in r.headers
    assert "Origin" in r.headers["vary"]
    assert backend.requests == []


def test_cors_fields_on_actual_requests(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = gateway(site(backend, tmp_path, cors=CORS))
    r = httpx.get(gw.url + "/items", headers={"Origin": "https://app.example.com"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example.com"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert r.headers["access-control-expose-headers"] == "X-Request-Id"
    assert r.headers["vary"] == "Origin"
    # another origin reaches the backend, but its answer grants it nothing
    r = httpx.get(gw.url + "/items", headers={"Origin": "https://evil.test"})
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers
    assert r.headers["vary"] == "Origin"
    # a plain OPTIONS (no preflight) is the backend's
    assert httpx.options(gw.url + "/items").status_code == 200
    assert len(backend.requests) == 3


def test_cors_any_origin(backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    gw = gateway(site(backend, tmp_path, cors={"origins": "*"}))
    r = httpx.get(gw.url + "/", headers={"Origin": "https://whoever.test"})
    assert r.headers["access-control-allow-origin"] == "*"
    assert "vary" not in r.headers


# -------------------------------------------------------------- rate limits
def test_rate_limit_boundary_429_and_retry_after(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = gateway(site(backend, tmp_path, rate_limits=[{"rate": "3/3s", "name": "api"}]))
    with httpx.Client(base_url=gw.url) as client:
        answers = [client.get("/") for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 200]
        # every answer tells what is left
        assert {a.headers["ratelimit-policy"] for a in answers} == {'"api";q=3;w=3'}
        assert [a.headers["ratelimit"].split(";t=")[0] for a in answers] == [
            '"api";r=2',
            '"api";r=1',
            '"api";r=0',
        ]
        assert answers[2].headers["ratelimit"] == '"api";r=0;t=1'
        refused = client.get("/")
        doc = problem(refused, 429)
        assert "try again" in doc["detail"]
        retry = int(refused.headers["retry-after"])
        assert 1 <= retry <= 1  # one emission interval: 3 s / 3
        assert refused.headers["ratelimit-policy"] == '"api";q=3;w=3'
        assert refused.headers["ratelimit"] == '"api";r=0;t=1'
        assert len(backend.requests) == 3
        time.sleep(retry + 0.2)
        assert client.get("/").status_code == 200
        assert client.get("/").status_code == 429


def test_several_limits_and_keys(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    limits = [
        {"rate": "6/m", "burst": 2, "key": "header:X-Tenant", "name": "tenant"},
        {"rate": "10000/day", "key": "route", "name": "daily"},
        {"rate": "1000/s", "name": "secret-ceiling", "advertise": False},
    ]
    gw = gateway(site(backend, tmp_path, rate_limits=limits))
    with httpx.Client(base_url=gw.url) as client:
        a = [client.get("/", headers={"X-Tenant": "a"}).status_code for _ in range(3)]
        b = [client.get("/", headers={"X-Tenant": "b"}).status_code for _ in range(3)]
        assert a == [200, 200, 429] and b == [200, 200, 429]  # one bucket per tenant
        refused = client.get("/", headers={"X-Tenant": "a"})
        assert refused.headers["ratelimit-policy"] == '"tenant";q=6;w=60, "daily";q=10000;w=86400'
        # the refused requests did not count against the daily limit: 4 passed
        assert '"daily";r=9996;' in refused.headers["ratelimit"]
        assert "secret-ceiling" not in refused.headers["ratelimit"]
        assert "secret-ceiling" not in str(client.get("/", headers={"X-Tenant": "c"}).headers)


def test_quota_survives_restart_and_reload(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    config = site(backend, tmp_path, quotas=[{"limit": 2, "per": "day", "key": "client_ip"}])
    gw = gateway(config)
    assert [httpx.get(gw.url + "/").status_code for _ in range(3)] == [200, 200, 429]
    gw.stop()
    assert (tmp_path / "data" / "ratelimit.json").exists()
    gw.start()
    refused = httpx.get(gw.url + "/")
    problem(refused, 429)
    assert int(refused.headers["retry-after"]) <= 86400
    gw.reload(wait_for="configuration reloaded")  # a new plan, the same counters
    problem(httpx.get(gw.url + "/"), 429)
    # a raised limit keeps the count: one more request today
    config["listen"] = {"http": f"127.0.0.1:{gw.port}"}
    config["sites"][0]["routes"][0]["quotas"][0]["limit"] = 3
    gw.reload(config, wait_for="configuration reloaded")
    assert [httpx.get(gw.url + "/").status_code for _ in range(2)] == [200, 429]
    assert len(backend.requests) == 3


def test_long_window_limit_survives_restart(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = gateway(site(backend, tmp_path, rate_limits=[{"rate": "2/h"}]))
    assert [httpx.get(gw.url + "/").status_code for _ in range(3)] == [200, 200, 429]
    gw.stop(signal.SIGINT)
    gw.start()
    refused = httpx.get(gw.url + "/")
    problem(refused, 429)
    assert 1700 <= int(refused.headers["retry-after"]) <= 1800


# ----------------------------------------------- header rules and secrets
def test_header_rules_and_secret_injection(
    backend: Backend,
    gateway: Callable[..., Gateway],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SAAS_TOKEN", SECRET)
    monkeypatch.setenv("DEPLOY_REGION", "eu-west")
    headers = {
        "request": {
            "remove": ["Cookie", "X-Debug-*"],
            "set": {"X-Client-IP": "{client_ip}", "X-Region": "{env.DEPLOY_REGION}"},
            "add": {"X-Via": ["bastion", "edge {request_id}"]},
            "inject": {"Authorization": "Bearer ${SAAS_TOKEN}"},
        },
        "response": {"set": {"X-Served-By": "bastion"}, "remove": ["X-Backend"]},
    }
    gw = gateway(site(backend, tmp_path, headers=headers))
    r = httpx.get(
        gw.url + "/headers",
        headers={
            "Authorization": "Bearer client-guess",
            "Cookie": "session=1",
            "X-Debug-Trace": "1",
            "X-Client-IP": "6.6.6.6",
        },
    )
    assert r.status_code == 200
    seen = seen_headers(backend)
    assert seen["authorization"] == [f"Bearer {SECRET}"]
    assert "cookie" not in seen and "x-debug-trace" not in seen
    assert seen["x-client-ip"] == ["127.0.0.1"]
    assert seen["x-region"] == ["eu-west"]
    assert seen["x-via"] == ["bastion", f"edge {r.headers['x-request-id']}"]
    assert r.headers["x-served-by"] == "bastion"
    assert "x-backend" not in r.headers


def test_injected_secret_never_reaches_logs_or_errors(
    backend: Backend,
    gateway: Callable[..., Gateway],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SAAS_TOKEN", SECRET)
    inject = {"request": {"inject": {"X-Api-Key": "${SAAS_TOKEN}"}}}
    config = site(backend, tmp_path, headers=inject)
    config["log_level"] = "debug"
    config["sites"][0]["routes"][0]["rate_limits"] = [{"rate": "5/m"}]
    down = {"upstreams": [f"http://127.0.0.1:{free_port()}"]}  # nothing listens there
    config["sites"][0]["routes"].insert(0, {"path": "/down/", "proxy": down, "headers": inject})
    gw = gateway(config)
    answers = [httpx.get(gw.url + f"/p{i}?q={i}") for i in range(7)]
    answers += [httpx.get(gw.url + "/down/x") for _ in range(2)]
    assert [a.status_code for a in answers] == [200] * 5 + [429] * 2 + [502] * 2
    # (the backend's own echo holds the secret, as it should: only the gateway's answers count)
    bodies = [a.text + str(a.headers) for a in answers if a.status_code != 200]
    gw.reload(wait_for="configuration reloaded")
    gw.stop()
    check = subprocess.run(
        [sys.executable, "-m", "bastion", "check", "-c", str(gw.config_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "SAAS_TOKEN": SECRET},
    )
    assert check.returncode == 0, check.stderr
    assert "/down/" in check.stdout  # the plan was printed
    access = (tmp_path / "access.log").read_text()
    assert len(access.splitlines()) == 9
    for text in [access, gw.stderr, gw.stdout, check.stdout, check.stderr, *bodies]:
        assert SECRET not in text
        assert SECRET[:12] not in text
    assert any(json.loads(line)["status"] == 429 for line in access.splitlines())


# ---------------------------------------------------------- security headers
def test_security_headers_preset_and_stripping(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    config = site(backend, tmp_path)
    config["sites"][0]["security_headers"] = {"csp": "default-src 'self'"}
    config["sites"][0]["routes"].insert(
        0, {"path": "/files/", "static": {"root": str(tmp_path)}, "security_headers": True}
    )
    config["sites"][0]["routes"].insert(
        0, {"path": "/raw/", "proxy": {"upstreams": [backend.url]}, "security_headers": False}
    )
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.txt").write_text("hello")
    gw = gateway(config)
    r = httpx.get(gw.url + "/headers")
    assert r.status_code == 200
    assert "server" not in r.headers  # the backend's BaseHTTP banner
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert r.headers["content-security-policy"] == "default-src 'self'"
    assert "strict-transport-security" not in r.headers  # plain HTTP
    # the route's own preset replaces the site's (no csp there), on static files too
    r = httpx.get(gw.url + "/files/a.txt")
    assert r.text == "hello" and r.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in r.headers
    # switched off on one route
    r = httpx.get(gw.url + "/raw/headers")
    assert r.status_code == 200 and "x-content-type-options" not in r.headers
    assert r.headers["server"].startswith("BaseHTTP")
    # and on the gateway's own error answers
    r = httpx.get(gw.url + "/files/missing")
    assert r.status_code == 404 and r.headers["x-frame-options"] == "DENY"


def test_cors_preflight_on_a_route_limited_to_some_methods(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    config = site(backend, tmp_path, methods=["GET", "POST"])
    config["sites"][0]["cors"] = {"origins": ["https://app.example.com"]}  # the site's
    gw = gateway(config)
    asked = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}
    assert httpx.options(gw.url + "/x", headers=asked).status_code == 204
    # any other OPTIONS is still not allowed on this route
    plain = httpx.options(gw.url + "/x")
    problem(plain, 405)
    assert plain.headers["allow"] == "GET, HEAD, POST, OPTIONS"
    problem(httpx.delete(gw.url + "/x"), 405)
    assert backend.requests == []
