"""API keys through the whole gateway: `bastion keys` manages them in the data dir, a route
requires them, the consumer reaches the backend and the access log, and no key ever shows up
in a log or an error body."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from authtokens import check_refuses, create_key, keys_cli
from conftest import Backend, Gateway, raw_request


def config(backend: Backend, data_dir: Path, **api_keys: Any) -> dict[str, Any]:
    return {
        "data_dir": str(data_dir),
        "access_log": {"format": "json"},
        "log_level": "debug",  # the most the operational log ever says
        "sites": [
            {
                "routes": [
                    {
                        "path": "/api/",
                        "auth": {"api_keys": api_keys},
                        "proxy": {"upstreams": [backend.url]},
                    },
                    {
                        "path": "/admin/",
                        "auth": {"api_keys": {"consumers": ["alice"]}},
                        "proxy": {"upstreams": [backend.url]},
                    },
                    {"path": "/open/", "proxy": {"upstreams": [backend.url]}},
                ]
            }
        ],
    }


def upstream_headers(resp: httpx.Response) -> dict[str, str]:
    return dict(resp.json()["headers"])


def assert_problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    doc = resp.json()
    assert doc["status"] == status
    return doc


def access_lines(gw: Gateway) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gw.stdout.splitlines() if line.startswith("{")]


def test_keys_cli_stores_only_hashes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    key = create_key(data, "alice")
    store = data / "api_keys.json"
    text = store.read_text()
    assert key not in text and key.split("_", 2)[2] not in text
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    listing = keys_cli(data, "list")
    assert listing.returncode == 0
    assert "alice" in listing.stdout and "active" in listing.stdout
    assert key not in listing.stdout + listing.stderr
    bad = keys_cli(data, "create", "--consumer", "no spaces please")
    assert bad.returncode == 1 and "invalid consumer name" in bad.stderr
    assert keys_cli(data, "create").returncode == 2
    gone = keys_cli(data, "revoke", "--consumer", "nobody")
    assert gone.returncode == 1 and "no active key" in gone.stderr


def test_api_keys_route(backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    data = tmp_path / "data"
    alice = create_key(data, "alice")
    bob = create_key(data, "bob")
    gw = gateway(config(backend, data))
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        # missing key: 401 with a challenge, and the backend is never asked
        before = len(backend.requests)
        r = client.get("/api/x")
        doc = assert_problem(r, 401)
        assert r.headers["www-authenticate"] == 'Bearer realm="api"'
        assert "X-API-Key" in doc["detail"]
        assert len(backend.requests) == before

        # a valid key in X-API-Key: the backend sees the consumer, not the key, and a
        # client-sent consumer header is replaced
        r = client.get("/api/x", headers={"X-API-Key": alice, "X-Consumer": "root"})
        assert r.status_code == 200
        seen = upstream_headers(r)
        assert seen["x-consumer"] == "alice"
        assert "x-api-key" not in seen
        assert [k for k, _ in r.json()["headers"]].count("x-consumer") == 1

        # the same key as a bearer token
        r = client.get("/api/x", headers={"Authorization": f"Bearer {bob}"})
        assert r.status_code == 200
        seen = upstream_headers(r)
        assert seen["x-consumer"] == "bob" and "authorization" not in seen

        # unknown key: 401 invalid_token, the key not echoed
        r = client.get("/api/x", headers={"X-API-Key": alice[:-4] + "AAAA"})
        doc = assert_problem(r, 401)
        assert alice[:-4] not in r.text and alice[:-4] not in str(r.headers)
        assert r.headers["www-authenticate"] == 'Bearer realm="api", error="invalid_token"'
        assert "unknown or revoked" in doc["detail"]

        # valid key, consumer not allowed on the route: 403, no challenge
        r = client.get("/admin/x", headers={"X-API-Key": bob})
        assert_problem(r, 403)
        assert bob not in r.text and bob not in str(r.headers)
        assert "www-authenticate" not in r.headers
        assert client.get("/admin/x", headers={"X-API-Key": alice}).status_code == 200

        # malformed Authorization field: 400 invalid_request
        r = client.get("/api/x", headers={"Authorization": f"Bearer {alice} words"})
        assert alice not in r.text and alice not in str(r.headers)
        assert_problem(r, 400)
        assert 'error="invalid_request"' in r.headers["www-authenticate"]
        # another scheme is no bearer token at all
        r = client.get("/api/x", headers={"Authorization": "Basic YTpi"})
        assert_problem(r, 401)

        # a client-sent consumer header on a route without auth is left alone
        r = client.get("/open/x", headers={"X-Consumer": "whoever"})
        assert upstream_headers(r)["x-consumer"] == "whoever"

        # revoking takes effect in the running gateway, without a reload
        done = keys_cli(data, "revoke", "--consumer", "bob")
        assert done.returncode == 0 and "revoked key" in done.stdout
        deadline = time.monotonic() + 10
        while client.get("/api/x", headers={"X-API-Key": bob}).status_code != 401:
            assert time.monotonic() < deadline, "revoked key still accepted"
            time.sleep(0.2)
        # and a key created now works without a reload
        carol = create_key(data, "carol")
        deadline = time.monotonic() + 10
        while client.get("/api/x", headers={"X-API-Key": carol}).status_code != 200:
            assert time.monotonic() < deadline, "new key not accepted"
            time.sleep(0.2)
        assert client.get("/api/x", headers={"X-API-Key": alice}).status_code == 200

    gw.stop()
    lines = access_lines(gw)
    consumers = {line.get("consumer") for line in lines}
    assert {"alice", "bob", "carol"} <= consumers
    # keys never reach the access log, the operational log or the problem bodies above
    logs = gw.stdout + gw.stderr
    for key in (alice, bob, carol):
        assert key not in logs
        assert key.split("_", 2)[2] not in logs


def test_query_key_is_cut_from_upstream_and_log(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    key = create_key(data, "alice")
    gw = gateway(config(backend, data, query="api_key", header=None, bearer=False))
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        r = client.get("/api/items", params={"a": "1", "api_key": key, "b": "2"})
        assert r.status_code == 200
        assert r.json()["path"] == "/api/items?a=1&b=2"
        assert upstream_headers(r)["x-consumer"] == "alice"
        r = client.get("/api/items", params={"api_key": key})
        assert r.json()["path"] == "/api/items"
        # header and bearer are not accepted on this route
        r = client.get("/api/items", headers={"X-API-Key": key})
        assert_problem(r, 401)
        assert r.headers["www-authenticate"] == 'ApiKey realm="api", query="api_key"'
        r = client.get("/api/items", params={"api_key": "bk_0000_wrong"})
        assert_problem(r, 401)
    gw.stop()
    targets = [line.get("target", "") for line in access_lines(gw)]
    assert "/api/items?a=1&b=2" in targets
    assert key not in gw.stdout + gw.stderr
    assert "bk_0000_wrong" not in gw.stdout + gw.stderr


def test_query_key_never_forwarded_or_logged_whatever_answers(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    """The key's query parameter is cut out even when a key header is what admits the
    request, and is masked in the access log of requests that never reach the key check:
    a malformed request, a route without keys."""
    data = tmp_path / "data"
    alice, bob = create_key(data, "alice"), create_key(data, "bob")
    gw = gateway(config(backend, data, query="api_key"))
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        # alice's key in the header and bob's in the query: which one is meant? 400, and
        # bob's key goes nowhere
        r = client.get(
            "/api/items", params={"api_key": bob, "a": "1"}, headers={"X-API-Key": alice}
        )
        assert r.status_code == 400
        # the same key in both places is one key, and the query's copy goes nowhere
        r = client.get(
            "/api/items", params={"api_key": alice, "a": "1"}, headers={"X-API-Key": alice}
        )
        assert r.status_code == 200
        assert upstream_headers(r)["x-consumer"] == "alice"
        assert r.json()["path"] == "/api/items?a=1"
        # twice, now that alice's header is remembered
        r = client.get("/api/items", params={"api_key": alice}, headers={"X-API-Key": alice})
        assert r.json()["path"] == "/api/items"
        # a route without keys forwards its query as sent, but the log masks the name
        r = client.get(
            "/open/x",
            params={"api_key": bob},
            headers={"Referer": f"https://a.example/api/doc?api_key={bob}"},
        )
        assert r.status_code == 200
    # refused once its head is read, before any route (a body over the limit): the
    # target is logged, masked; the name percent-encoded, as the key check reads it too
    reply = raw_request(
        gw.port,
        b"POST /api/items?%61pi_key=" + bob.encode() + b" HTTP/1.1\r\nHost: a\r\n"
        b"Content-Length: 999999999999\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 413 ")
    gw.stop()
    targets = [line["target"] for line in access_lines(gw)]
    assert "/open/x?api_key=REDACTED" in targets
    referers = [line["referer"] for line in access_lines(gw) if line["referer"]]
    assert referers == ["https://a.example/api/doc?api_key=REDACTED"]
    assert "/api/items?%61pi_key=REDACTED" in targets
    assert bob not in gw.stdout + gw.stderr
    assert bob.split("_", 2)[2] not in gw.stdout + gw.stderr
    assert [r["path"] for r in backend.requests if r["path"].startswith("/api/")] == [
        "/api/items?a=1",
        "/api/items",
    ]


def test_raw_malformed_requests_get_clean_answers(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    key = create_key(data, "alice")
    gw = gateway(config(backend, data))
    # two Authorization fields are refused as a malformed request
    reply = raw_request(
        gw.port,
        b"GET /api/x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer "
        + key.encode()
        + b"\r\nAuthorization: Bearer other\r\nConnection: close\r\n\r\n",
    )
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"invalid_request" in head
    assert json.loads(body)["status"] == 400
    assert key.encode() not in reply


def test_config_errors(gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    base = {
        "sites": [
            {
                "routes": [
                    {
                        "path": "/",
                        "auth": {"api_keys": {"header": None, "bearer": False}},
                        "respond": {"body": "x"},
                    }
                ]
            }
        ]
    }
    gw = gateway(base, start=False)
    done = check_refuses(gw.config_path)
    assert "auth.api_keys" in done.stderr and "accepted nowhere" in done.stderr
