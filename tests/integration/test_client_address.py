"""The client address behind a trusted proxy is parsed, never taken as text: a port, the
bracketed IPv6 form or an IPv4-mapped spelling name the same client; a value that is not an
address (garbage, an ambiguous leading zero) stops the X-Forwarded-For walk at the trusted
hop that wrote it. Through real sockets, over HTTP/1.1 and HTTP/2, asserting what the
backend received, what the policies decided and what the access log says."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from test_http2 import client as h2_client
from test_http2 import h2_config, start

from conftest import Backend, Gateway, simple_config

GatewayFactory = Callable[..., Gateway]

# one trusted proxy in front: the test client itself (127.0.0.1)
_TRUSTED = ["127.0.0.1"]


def _config(backend: Backend, tmp_path: Path) -> dict[str, Any]:
    """/guarded/ denies 1.2.3.4 and 2001:db8::/32; /limited/ allows 3 requests a minute per
    client address; everything else is open. JSON access log at tmp_path/access.log."""
    config = simple_config(
        backend.url,
        0,
        trusted_proxies=_TRUSTED,
        access_log={"format": "json", "path": str(tmp_path / "access.log")},
    )
    del config["listen"]  # the gateway fixture picks a free port
    proxy = {"upstreams": [backend.url]}
    config["sites"][0]["routes"] = [
        {"path": "/guarded/", "proxy": proxy, "ip_rules": {"deny": ["1.2.3.4", "2001:db8::/32"]}},
        {"path": "/limited/", "proxy": proxy, "rate_limits": [{"rate": "3/m"}]},
        {"path": "/", "proxy": proxy},
    ]
    return config


def _seen(backend: Backend) -> dict[str, str]:
    return dict(backend.requests[-1]["headers"])


def _log_lines(path: Path, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    lines: list[str] = []
    while time.monotonic() < deadline:
        if path.exists():
            lines = path.read_text().splitlines()
            if len(lines) >= count:
                break
        time.sleep(0.05)
    return [json.loads(line) for line in lines]


def test_deny_rule_holds_whatever_the_spelling(
    backend: Backend, gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = gateway(_config(backend, tmp_path))
    for hop in ("1.2.3.4", "1.2.3.4:80", "::ffff:1.2.3.4", "[::ffff:1.2.3.4]:443",
                "[2001:db8::1]:80", "2001:db8::1", "2001:DB8:0::1"):
        answer = httpx.get(gw.url + "/guarded/x", headers={"X-Forwarded-For": hop})
        assert answer.status_code == 403, hop
    assert backend.requests == []
    # behind a second trusted hop that wrote a port too
    answer = httpx.get(
        gw.url + "/guarded/x", headers={"X-Forwarded-For": "1.2.3.4:5555, 127.0.0.1:80"}
    )
    assert answer.status_code == 403
    assert backend.requests == []
    # the open route: the backend gets the parsed address, the port dropped
    assert httpx.get(gw.url + "/x", headers={"X-Forwarded-For": "1.2.3.4:80"}).status_code == 200
    seen = _seen(backend)
    assert seen["x-real-ip"] == "1.2.3.4"
    assert seen["x-forwarded-for"] == "1.2.3.4, 127.0.0.1"
    httpx.get(gw.url + "/x", headers={"X-Forwarded-For": "[2001:DB8::1]:80"})
    seen = _seen(backend)
    assert seen["x-real-ip"] == "2001:db8::1"
    assert seen["x-forwarded-for"] == "2001:db8::1, 127.0.0.1"
    records = _log_lines(tmp_path / "access.log", 10)
    assert [r["client_ip"] for r in records[-2:]] == ["1.2.3.4", "2001:db8::1"]
    assert {r["status"] for r in records[:-2]} == {403}
    assert {r["client_ip"] for r in records[:-2]} == {"1.2.3.4", "2001:db8::1"}


def test_per_address_limit_holds_with_varying_ports(
    backend: Backend, gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = gateway(_config(backend, tmp_path))
    statuses = [
        httpx.get(
            gw.url + "/limited/x", headers={"X-Forwarded-For": f"198.51.100.7:{40000 + i}"}
        ).status_code
        for i in range(8)
    ]
    assert statuses == [200] * 3 + [429] * 5
    # IPv6 with ports and spellings: one client too
    spellings = ["[2001:db8::7]:1", "[2001:db8:0:0::7]:2", "2001:db8::7", "[2001:DB8::7]:3"]
    statuses = [
        httpx.get(gw.url + "/limited/x", headers={"X-Forwarded-For": hop}).status_code
        for hop in spellings
    ]
    assert statuses == [200] * 3 + [429]
    assert {dict(r["headers"])["x-real-ip"] for r in backend.requests} == {
        "198.51.100.7",
        "2001:db8::7",
    }


def test_what_is_not_an_address_never_becomes_the_client(
    backend: Backend, gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = gateway(_config(backend, tmp_path))
    # each of these stops the walk: the client is the trusted hop that sent it
    odd = ["garbage", "01.2.3.4", "unknown", "1.2.3.4:99999", "[1.2.3.4]:80", "fe80::1%eth0",
           "1.2.3.4 5.6.7.8", "1.2.3.4:80:90"]
    for value in odd:
        assert httpx.get(gw.url + "/x", headers={"X-Forwarded-For": value}).status_code == 200
        seen = _seen(backend)
        assert seen["x-real-ip"] == "127.0.0.1", value
        # what nobody vouches for goes on as received, left of the verified part
        assert seen["x-forwarded-for"] == f"{value}, 127.0.0.1", value
    # a spoofed address left of the garbage is not believed either
    httpx.get(gw.url + "/x", headers={"X-Forwarded-For": "1.2.3.4, garbage"})
    assert _seen(backend)["x-real-ip"] == "127.0.0.1"
    # so they are all one client for the rate limit: 3 of 8 pass, not 8 of 8
    statuses = [
        httpx.get(gw.url + "/limited/x", headers={"X-Forwarded-For": f"garbage{i}"}).status_code
        for i in range(8)
    ]
    assert statuses == [200] * 3 + [429] * 5
    # and "01.2.3.4" is not 1.2.3.4 for the deny rule: it is the proxy, which is allowed
    answer = httpx.get(gw.url + "/guarded/x", headers={"X-Forwarded-For": "01.2.3.4"})
    assert answer.status_code == 200
    assert _seen(backend)["x-real-ip"] == "127.0.0.1"
    records = _log_lines(tmp_path / "access.log", len(odd) + 10)
    assert {r["client_ip"] for r in records} == {"127.0.0.1"}


def test_a_clients_forwarded_field_is_dropped_unless_a_proxy_sent_it(
    backend: Backend, gateway: GatewayFactory, tmp_path: Path
) -> None:
    config = _config(backend, tmp_path)
    gw = gateway(config)
    httpx.get(gw.url + "/x", headers={"Forwarded": "for=1.2.3.4"})
    assert _seen(backend)["forwarded"] == "for=1.2.3.4"  # from the trusted proxy: kept
    config["trusted_proxies"] = ["10.9.9.9"]
    untrusted = gateway(config)
    spoofed = {"Forwarded": "for=1.2.3.4", "X-Forwarded-For": "1.2.3.4"}
    httpx.get(untrusted.url + "/x", headers=spoofed)
    seen = _seen(backend)
    assert "forwarded" not in seen
    assert seen["x-real-ip"] == "127.0.0.1"
    assert seen["x-forwarded-for"] == "127.0.0.1"


def test_http2_requests_are_held_to_the_same_rules(
    backend: Backend, gateway: GatewayFactory, tmp_path: Path
) -> None:
    config = h2_config(tmp_path, backend, trusted_proxies=_TRUSTED)
    proxy = {"upstreams": [backend.url]}
    config["sites"][0]["routes"][1:1] = [
        {"path": "/guarded/", "proxy": proxy, "ip_rules": {"deny": ["1.2.3.4"]}},
        {"path": "/limited/", "proxy": proxy, "rate_limits": [{"rate": "3/m"}]},
    ]
    start(gateway, config)
    base = f"https://localhost:{config['listen']['https'].rsplit(':', 1)[1]}"
    with h2_client(tmp_path) as client:
        answer = client.get(base + "/guarded/x", headers={"X-Forwarded-For": "1.2.3.4:80"})
        assert answer.http_version == "HTTP/2" and answer.status_code == 403
        assert backend.requests == []
        statuses = [
            client.get(base + "/limited/x", headers={"X-Forwarded-For": f"5.6.7.8:{i}"}).status_code
            for i in range(1, 6)
        ]
        assert statuses == [200] * 3 + [429] * 2
        seen = _seen(backend)
        assert seen["x-real-ip"] == "5.6.7.8" and seen["x-forwarded-for"] == "5.6.7.8, 127.0.0.1"
        client.get(base + "/x", headers={"X-Forwarded-For": "garbage"})
        seen = _seen(backend)
        assert seen["x-real-ip"] == "127.0.0.1"
        assert seen["x-forwarded-for"] == "garbage, 127.0.0.1"
    records = _log_lines(tmp_path / "access.log", 7)
    assert [r["client_ip"] for r in records] == ["1.2.3.4"] + ["5.6.7.8"] * 5 + ["127.0.0.1"]
