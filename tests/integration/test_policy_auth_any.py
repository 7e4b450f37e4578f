"""Several authentication methods on one route (`satisfy: any`) through the whole gateway:
each method admits on its own, and a refusal names what the client got wrong."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from authtokens import HS_SECRET, ScriptedServer, check_refuses, claims, create_key, keys_cli, sign
from conftest import Backend, Gateway, raw_request


def config(backend: Backend, data_dir: Path, auth: dict[str, Any]) -> dict[str, Any]:
    return {
        "data_dir": str(data_dir),
        "sites": [{"routes": [{"path": "/", "auth": {**auth, "satisfy": "any"},
                               "proxy": {"upstreams": [backend.url]}}]}],
    }  # fmt: skip


def consumer_upstream(resp: httpx.Response) -> str | None:
    headers = dict(resp.json()["headers"])
    return headers.get("x-consumer")


def problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    return resp.json()


def test_api_keys_or_jwt(backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    data = tmp_path / "data"
    key = create_key(data, "svc-bot")
    revoked = create_key(data, "old-bot")
    assert keys_cli(data, "revoke", "--consumer", "old-bot").returncode == 0
    jwt = {"algorithms": ["HS256"], "secret": HS_SECRET, "audience": "api"}
    gw = gateway(config(backend, data, {"api_keys": {}, "jwt": jwt}))
    token = sign(claims(sub="alice", aud="api"))
    forged = {"X-Consumer": "root"}
    with httpx.Client(base_url=gw.url, timeout=15) as client:
        # each method admits on its own, and names its consumer upstream
        r = client.get("/x", headers={"X-API-Key": key, **forged})
        assert r.status_code == 200 and consumer_upstream(r) == "svc-bot"
        r = client.get("/x", headers={"Authorization": f"Bearer {token}", **forged})
        assert r.status_code == 200 and consumer_upstream(r) == "alice"
        # a bearer token that is not a JWT may be an API key
        r = client.get("/x", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200 and consumer_upstream(r) == "svc-bot"

        # nothing offered: one 401 with both challenges
        r = client.get("/x", headers=forged)
        doc = problem(r, 401)
        assert "an API key in the X-API-Key header" in doc["detail"]
        assert "a bearer token (JWT)" in doc["detail"]
        challenges = r.headers.get_list("www-authenticate")
        assert len(challenges) == 2 and all(c.startswith("Bearer realm=") for c in challenges)

        # the refusal of the method the credential surely belongs to
        expired = sign(claims(sub="alice", aud="api", exp=int(time.time()) - 3600))
        r = client.get("/x", headers={"Authorization": f"Bearer {expired}"})
        assert "expired" in problem(r, 401)["detail"]
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
        wrong_aud = sign(claims(sub="alice", aud="other"))
        r = client.get("/x", headers={"Authorization": f"Bearer {wrong_aud}"})
        assert "audience" in problem(r, 401)["detail"]
        r = client.get("/x", headers={"X-API-Key": revoked})
        assert problem(r, 401)["detail"] == "The API key is unknown or revoked."
        r = client.get("/x", headers={"Authorization": f"Bearer {revoked}"})
        assert problem(r, 401)["detail"] == "The API key is unknown or revoked."
        # a malformed Authorization field is still a 400, and so are two of them
        r = client.get("/x", headers={"Authorization": "Bearer a b c"})
        problem(r, 400)
    answer = raw_request(
        gw.port,
        b"GET /x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer " + key.encode()
        + b"\r\nAuthorization: Bearer " + token.encode() + b"\r\nConnection: close\r\n\r\n",
    )  # fmt: skip
    assert answer.startswith(b"HTTP/1.1 400 ") and b"Several Authorization fields" in answer
    assert len(backend.requests) == 3


def test_a_refused_query_key_is_cut_out_when_a_jwt_admits(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    """The key in the query is tried first and refused, the JWT admits: the refused key's
    query parameter is not forwarded either."""
    data = tmp_path / "data"
    key = create_key(data, "svc-bot")
    jwt = {"algorithms": ["HS256"], "secret": HS_SECRET, "audience": "api"}
    auth = {"jwt": jwt, "api_keys": {"query": "key", "header": None, "bearer": False}}
    gw = gateway(config(backend, data, auth))
    token = sign(claims(sub="alice", aud="api"))
    with httpx.Client(base_url=gw.url, timeout=15) as client:
        r = client.get("/x", params={"key": "bk_0000_wrong", "q": "1"},
                       headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        assert r.status_code == 200 and consumer_upstream(r) == "alice"
        assert r.json()["path"] == "/x?q=1"
        r = client.get("/x", params={"key": key})
        assert r.status_code == 200 and consumer_upstream(r) == "svc-bot"
        assert r.json()["path"] == "/x"


def test_api_keys_or_forward_auth(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    """A key admits without asking the auth service; without one the service decides, and
    while it is down the keys keep working."""

    def decide(path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if "session=ok" in headers.get("cookie", ""):
            return 200, {"X-Auth-User": "carol"}, b""
        return 302, {"Location": "https://login.test/"}, b""

    data = tmp_path / "data"
    key = create_key(data, "svc-bot")
    other = create_key(data, "other-bot")
    service = ScriptedServer(decide)
    forward = {"url": service.url + "/check", "consumer_from": "X-Auth-User", "timeout": "2s"}
    gw = gateway(config(backend, data, {"api_keys": {"consumers": ["svc-bot"]},
                                        "forward": forward}))  # fmt: skip
    try:
        with httpx.Client(base_url=gw.url, timeout=15) as client:
            r = client.get("/x", headers={"X-API-Key": key})
            assert r.status_code == 200 and consumer_upstream(r) == "svc-bot"
            assert not service.seen
            r = client.get("/x", headers={"Cookie": "session=ok"})
            assert r.status_code == 200 and consumer_upstream(r) == "carol"
            r = client.get("/x")
            assert r.status_code == 302 and r.headers["location"] == "https://login.test/"
            # a wrong key, and the service would redirect to its login page: the client
            # sent a key, so the key's refusal is what it needs
            r = client.get("/x", headers={"X-API-Key": "bk_wrong"})
            assert problem(r, 401)["detail"] == "The API key is unknown or revoked."
            # a valid key of a consumer not allowed on the route
            r = client.get("/x", headers={"X-API-Key": other})
            problem(r, 403)
            service.stop()
            r = client.get("/x", headers={"X-API-Key": key})
            assert r.status_code == 200 and consumer_upstream(r) == "svc-bot"
            problem(client.get("/x", headers={"Cookie": "session=ok"}), 502)
            r = client.get("/x", headers={"X-API-Key": "bk_wrong"})
            assert problem(r, 401)["detail"] == "The API key is unknown or revoked."
    finally:
        service.stop()


def test_several_methods_need_satisfy_any(gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    conf = {"sites": [{"routes": [{"path": "/", "respond": {}, "auth": {
        "api_keys": {}, "basic": {"users": {"a": "$2b$04$" + "x" * 53}}}}]}]}  # fmt: skip
    gw = gateway(conf, start=False)
    done = check_refuses(gw.config_path)
    assert "several methods are set (api_keys, basic): add satisfy: any" in done.stderr
