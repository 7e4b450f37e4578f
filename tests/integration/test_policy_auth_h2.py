"""The auth policies over HTTPS and HTTP/2: refusals carry their challenge on the stream,
async checks (JWKS, forward auth, Basic) complete, and forward auth is told the scheme."""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Callable
from pathlib import Path

import bcrypt
import httpx
from test_policy_auth_keys import create_key

from authtokens import Keys, ScriptedServer, claims, json_reply, sign
from conftest import Backend, Gateway, free_port, wait_for_port


def test_auth_over_h2(backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    keys = Keys()
    jwks = ScriptedServer(lambda path, headers: json_reply(keys.jwks()))
    forward = ScriptedServer(
        lambda path, headers: (
            (200, {"X-User": "fwd"}, b"")
            if headers.get("authorization") == "Bearer ok"
            else (401, {"WWW-Authenticate": 'Bearer realm="sso"'}, b"")
        )
    )
    data = tmp_path / "data"
    api_key = create_key(data, "alice")
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    http, https = free_port(), free_port()
    upstream = {"upstreams": [backend.url]}
    config = {
        "listen": {"http": f"127.0.0.1:{http}", "https": f"127.0.0.1:{https}"},
        "data_dir": str(data),
        "access_log": {"format": "json"},
        "sites": [
            {
                "hosts": ["localhost"],
                "routes": [
                    {"path": "/keys/", "auth": {"api_keys": {}}, "proxy": upstream},
                    {
                        "path": "/jwt/",
                        "auth": {"jwt": {"algorithms": ["ES256"], "jwks_url": jwks.url}},
                        "proxy": upstream,
                    },
                    {
                        "path": "/basic/",
                        "auth": {"basic": {"users": {"bob": hashed}}},
                        "proxy": upstream,
                    },
                    {
                        "path": "/fwd/",
                        "auth": {"forward": {"url": forward.url, "consumer_from": "X-User"}},
                        "proxy": upstream,
                    },
                ],
            }
        ],
    }
    gw = gateway(config)
    wait_for_port(https)
    context = ssl.create_default_context(cafile=str(data / "ca" / "root.crt"))
    base = f"https://localhost:{https}"
    try:
        with httpx.Client(http1=False, http2=True, verify=context, timeout=30) as client:
            r = client.get(base + "/keys/x")
            assert r.http_version == "HTTP/2"
            assert r.status_code == 401
            assert r.headers["www-authenticate"] == 'Bearer realm="api"'
            assert r.headers["content-type"] == "application/problem+json"
            assert json.loads(r.content)["status"] == 401

            def consumer(path: str, headers: dict[str, str]) -> str:
                r = client.get(base + path, headers=headers)
                assert r.status_code == 200, r.text
                return dict(r.json()["headers"])["x-consumer"]

            assert consumer("/keys/x", {"X-API-Key": api_key}) == "alice"
            token = sign(claims(sub="carol"), "ES256", keys.p256, "p256")
            assert consumer("/jwt/x", {"Authorization": f"Bearer {token}"}) == "carol"
            r = client.get(base + "/jwt/x", headers={"Authorization": "Bearer a.b.c"})
            assert r.status_code == 401
            assert 'error="invalid_token"' in r.headers["www-authenticate"]
            basic = "Basic " + base64.b64encode(b"bob:pw").decode()
            assert consumer("/basic/x", {"Authorization": basic}) == "bob"
            assert consumer("/fwd/x", {"Authorization": "Bearer ok"}) == "fwd"
            assert forward.seen[-1][1]["x-forwarded-proto"] == "https"
            r = client.get(base + "/fwd/x")
            assert r.status_code == 401
            assert r.headers["www-authenticate"] == 'Bearer realm="sso"'
    finally:
        jwks.stop()
        forward.stop()
    gw.stop()
    assert api_key not in gw.stdout + gw.stderr
