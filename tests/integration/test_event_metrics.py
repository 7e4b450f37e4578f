"""The event metrics of `/metrics` through a real `bastion run`: each moves for its cause
(a dead upstream, a slow one, one that resets, a 500; API keys missing or wrong, an
expired JWT; a rate limit and a quota; a bad and a good reload; the local CA's
certificate), and a counter is the total of two workers whichever one is scraped."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from test_metrics import Samples, scrape, until

from authtokens import HS_SECRET, claims, create_key, sign
from conftest import Backend, Gateway, free_port, wait_for_port


def errors(got: Samples, pool: str, endpoint: str, kind: str) -> float:
    labels = (("endpoint", endpoint), ("kind", kind), ("pool", pool))
    return got.get(("bastion_upstream_errors_total", labels), 0.0)


def auth(got: Samples, route: str, scheme: str, reason: str) -> float:
    labels = (("reason", reason), ("route", route), ("scheme", scheme))
    return got.get(("bastion_auth_failures_total", labels), 0.0)


def refusals(got: Samples, route: str, limit: str) -> float:
    labels = (("limit", limit), ("route", route))
    return got.get(("bastion_rate_limit_refusals_total", labels), 0.0)


def events_config(backend: Backend, data: Path, metrics: int, dead: int) -> dict[str, Any]:
    http, https = free_port(), free_port()
    upstream = {"upstreams": [backend.url], "timeouts": {"read": "1s"}}
    nowhere = f"http://127.0.0.1:{dead}"
    return {
        "listen": {"http": f"127.0.0.1:{http}", "https": f"127.0.0.1:{https}"},
        "data_dir": str(data),
        "access_log": {"format": "off"},
        "metrics": {"listen": f"127.0.0.1:{metrics}"},
        "sites": [
            {
                "hosts": ["*"],
                "tls": "off",
                "routes": [
                    {"path": "/api/", "proxy": upstream},
                    {"path": "/dead/", "proxy": {"upstreams": [nowhere]}},
                    {
                        "path": "/down/",
                        "proxy": {
                            "upstreams": [nowhere],
                            "health": {"path": "/", "interval": "200ms", "fall": 1},
                        },
                    },
                    {"path": "/keys/", "auth": {"api_keys": {}}, "proxy": upstream},
                    {
                        "path": "/jwt/",
                        "auth": {"jwt": {"algorithms": ["HS256"], "secret": HS_SECRET}},
                        "proxy": upstream,
                    },
                    {"path": "/limited", "rate_limits": [{"rate": "1/1h"}], "respond": {}},
                    {
                        "path": "/quota",
                        "quotas": [{"limit": 1, "per": "day", "key": "client_ip"}],
                        "respond": {},
                    },
                ],
            },
            {"hosts": ["localhost"], "routes": [{"path": "/", "respond": {}}]},
        ],
    }


def test_each_event_metric_moves_for_its_cause(
    backend: Backend, gateway: Any, tmp_path: Path
) -> None:
    metrics, dead = free_port(), free_port()
    data = tmp_path / "data"
    config = events_config(backend, data, metrics, dead)
    gw: Gateway = gateway(config)
    wait_for_port(metrics)
    endpoint, nowhere = backend.url, f"http://127.0.0.1:{dead}"
    got = scrape(metrics)
    # nothing went wrong yet: the families exist, with nothing counted
    assert errors(got, "* /api/", endpoint, "5xx") == 0
    assert got[("bastion_config_reloads_total", (("result", "failure"),))] == 0
    assert got[("bastion_acme_orders_total", (("result", "issued"),))] == 0
    assert got[("bastion_upstream_up", (("endpoint", endpoint), ("pool", "* /api/")))] == 1

    with httpx.Client(base_url=gw.url, timeout=10) as client:
        assert client.get("/api/ok").status_code == 200
        assert client.get("/api/status?code=500").status_code == 500
        assert client.get("/api/slow?s=3").status_code == 504
        assert client.get("/api/die-before").status_code == 502
        for _ in range(2):
            assert client.get("/dead/x").status_code == 502
        # API keys: none, then a wrong one; an expired JWT
        assert client.get("/keys/x").status_code == 401
        assert client.get("/keys/x", headers={"X-API-Key": "bst_wrong_key"}).status_code == 401
        expired = sign(claims(exp=int(time.time()) - 3600))
        r = client.get("/jwt/x", headers={"Authorization": f"Bearer {expired}"})
        assert r.status_code == 401
        assert client.get("/jwt/x").status_code == 401  # no token at all
        for path in ("/limited", "/quota"):
            assert client.get(path).status_code == 200
            assert client.get(path).status_code == 429

    got = until(
        metrics,
        lambda got: (
            got.get(("bastion_upstream_up", (("endpoint", nowhere), ("pool", "* /down/")))) == 0
        ),
    )
    assert errors(got, "* /api/", endpoint, "5xx") == 1
    assert errors(got, "* /api/", endpoint, "timeout") == 1
    assert errors(got, "* /api/", endpoint, "reset") >= 1
    assert errors(got, "* /dead/", nowhere, "connect") == 2
    # the happy request counted nothing: only the four kinds above for /api/
    assert errors(got, "* /api/", endpoint, "connect") == 0
    assert got[("bastion_upstream_up", (("endpoint", nowhere), ("pool", "* /down/")))] == 0
    assert got[("bastion_upstream_up", (("endpoint", endpoint), ("pool", "* /api/")))] == 1
    assert auth(got, "/keys/", "api_key", "missing") == 1
    assert auth(got, "/keys/", "api_key", "invalid") == 1
    assert auth(got, "/jwt/", "jwt", "expired") == 1
    assert auth(got, "/jwt/", "jwt", "missing") == 1
    assert refusals(got, "/limited", "rate") == 1 and refusals(got, "/limited", "quota") == 0
    assert refusals(got, "/quota", "quota") == 1 and refusals(got, "/quota", "rate") == 0
    # labels are bounded: no refusal detail, no path of a request
    text = " ".join(v for _, labels in got for _, v in labels)
    assert "expired" in text and "The token" not in text and "wrong" not in text

    # the local CA's certificate for the HTTPS site: its expiry, in the future
    expiry = got[("bastion_certificate_expiry_timestamp_seconds", (("name", "localhost"),))]
    assert expiry > time.time() + 86400

    # a reload with a bad config is a failure; a good one a success, with its time
    assert ("bastion_config_last_reload_success_timestamp_seconds", ()) not in got
    gw.reload("sites: [", wait_for="reload rejected")
    got = scrape(metrics)
    assert got[("bastion_config_reloads_total", (("result", "failure"),))] == 1
    assert got[("bastion_config_reloads_total", (("result", "success"),))] == 0
    before = time.time()
    gw.reload(yaml.safe_dump(config), wait_for="configuration reloaded")
    got = scrape(metrics)
    assert got[("bastion_config_reloads_total", (("result", "success"),))] == 1
    when = got[("bastion_config_last_reload_success_timestamp_seconds", ())]
    assert before - 1 <= when <= time.time() + 1
    # counters survive the reload (they belong to the process, not to the plan)
    assert errors(got, "* /dead/", nowhere, "connect") == 2


def test_event_counters_are_totals_of_all_workers(
    backend: Backend, gateway: Any, tmp_path: Path
) -> None:
    metrics, dead = free_port(), free_port()
    data = tmp_path / "data"
    create_key(data, "alice")
    config = events_config(backend, data, metrics, dead)
    config["workers"] = 2
    gw: Gateway = gateway(config)
    wait_for_port(metrics)
    for _ in range(30):  # a new connection each: the kernel spreads them over the workers
        r = httpx.get(f"{gw.url}/keys/x", headers={"Connection": "close"})
        assert r.status_code == 401
    for _ in range(6):  # each scrape reaches one worker or the other: both sum both
        got = until(metrics, lambda got: auth(got, "/keys/", "api_key", "missing") == 30)
        assert auth(got, "/keys/", "api_key", "missing") == 30
