"""Forward auth through the whole gateway, against a real auth service."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from authtokens import ScriptedServer
from conftest import Backend, Gateway


def decide(path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    token = headers.get("authorization", "")
    if token == "Bearer good":
        return 200, {"X-Auth-User": "alice", "X-Auth-Roles": "admin", "X-Other": "no"}, b""
    if token == "Bearer login":
        return 302, {"Location": "https://login.test/?rd=x", "Set-Cookie": "s=1"}, b""
    if token == "Bearer slow":
        return 429, {"Retry-After": "7"}, b"slow down"
    if token == "Bearer broken":
        return 500, {}, b"oops"
    if token == "Bearer sleepy":
        time.sleep(3)
        return 200, {}, b""
    if token == "Bearer no":
        return 403, {}, b"forbidden by policy"
    return 401, {"WWW-Authenticate": 'Bearer realm="sso"'}, b"who are you"


@pytest.fixture
def auth_service() -> Iterator[ScriptedServer]:
    server = ScriptedServer(decide)
    yield server
    server.stop()


def config(backend: Backend, url: str, **extra: Any) -> dict[str, Any]:
    forward = {
        "url": url,
        "copy_headers": ["X-Auth-User", "X-Auth-Roles"],
        "consumer_from": "X-Auth-User",
        "timeout": "1s",
        **extra,
    }
    return {
        "access_log": {"format": "json"},
        "sites": [
            {
                "routes": [
                    {
                        "path": "/app/",
                        "auth": {"forward": forward},
                        "proxy": {"upstreams": [backend.url]},
                    }
                ]
            }
        ],
    }


def problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    return resp.json()


def test_forward_auth(
    auth_service: ScriptedServer, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    gw = gateway(config(backend, auth_service.url + "/check?from=bastion"))
    with httpx.Client(base_url=gw.url, timeout=15, follow_redirects=False) as client:
        r = client.get(
            "/app/page?q=1",
            headers={
                "Authorization": "Bearer good",
                "Cookie": "c=1",
                "X-Auth-Roles": "forged",
                "X-Secret": "not for the auth service",
            },
        )
        assert r.status_code == 200, r.text
        seen = dict(r.json()["headers"])
        assert seen["x-auth-user"] == "alice"
        assert seen["x-auth-roles"] == "admin"
        assert seen["x-consumer"] == "alice"
        assert "x-other" not in seen
        assert [k for k, _ in r.json()["headers"]].count("x-auth-roles") == 1
        path, asked = auth_service.seen[-1]
        assert path == "/check?from=bastion"
        assert asked["authorization"] == "Bearer good" and asked["cookie"] == "c=1"
        assert "x-secret" not in asked
        assert asked["x-forwarded-method"] == "GET"
        assert asked["x-forwarded-uri"] == "/app/page?q=1"
        assert asked["x-forwarded-proto"] == "http"
        assert asked["x-forwarded-for"] == "127.0.0.1"

        before = len(backend.requests)
        r = client.get("/app/x")
        problem(r, 401)
        assert r.headers["www-authenticate"] == 'Bearer realm="sso"'
        r = client.get("/app/x", headers={"Authorization": "Bearer no"})
        problem(r, 403)
        r = client.get("/app/x", headers={"Authorization": "Bearer slow"})
        problem(r, 429)
        assert r.headers["retry-after"] == "7"
        r = client.get("/app/x", headers={"Authorization": "Bearer login"})
        assert r.status_code == 302
        assert r.headers["location"] == "https://login.test/?rd=x"
        assert r.headers["set-cookie"] == "s=1"
        r = client.get("/app/x", headers={"Authorization": "Bearer broken"})
        problem(r, 502)
        r = client.get("/app/x", headers={"Authorization": "Bearer sleepy"})
        problem(r, 504)
        assert len(backend.requests) == before  # nothing refused reached the backend
        # the service's connection is reused between checks
        assert client.get("/app/x", headers={"Authorization": "Bearer good"}).status_code == 200

        auth_service.stop()
        r = client.get("/app/x", headers={"Authorization": "Bearer good"})
        doc = problem(r, 502)
        assert "cannot be reached" in doc["detail"]
    gw.stop()
    assert "forward auth" in gw.stderr and "did not answer within" in gw.stderr
    assert "who are you" not in gw.stdout + gw.stderr
