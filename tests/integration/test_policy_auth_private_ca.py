"""JWKS and forward auth over https:// from services whose certificate a private CA issued:
refused (with a log line naming the fix) until the route's `ca` names that CA."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from authtokens import Keys, ScriptedServer, check_refuses, claims, json_reply, sign
from conftest import Backend, Gateway
from tlsbackend import TestCA


@pytest.fixture
def private_ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path, "private auth CA")


def _server_context(ca: TestCA) -> ssl.SSLContext:
    cert, key = ca.issue("auth-service", ["127.0.0.1"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


@pytest.fixture
def keys() -> Keys:
    return Keys()


@pytest.fixture
def https_jwks(private_ca: TestCA, keys: Keys) -> Iterator[ScriptedServer]:
    server = ScriptedServer(lambda path, headers: json_reply(keys.jwks()),
                            tls=_server_context(private_ca))  # fmt: skip
    yield server
    server.stop()


def _route(backend: Backend, auth: dict[str, Any]) -> dict[str, Any]:
    return {"sites": [{"routes": [{"path": "/", "auth": auth,
                                   "proxy": {"upstreams": [backend.url]}}]}]}  # fmt: skip


def test_jwks_from_a_private_ca(
    https_jwks: ScriptedServer,
    private_ca: TestCA,
    keys: Keys,
    backend: Backend,
    gateway: Callable[..., Gateway],
) -> None:
    token = {"Authorization": "Bearer " + sign(claims(), "ES256", keys.p256, "p256")}
    jwt = {"algorithms": ["ES256"], "jwks_url": https_jwks.url + "/jwks", "jwks_timeout": "2s"}

    # the system's trust store does not know the CA: no key can be fetched
    gw = gateway(_route(backend, {"jwt": jwt}))
    with httpx.Client(base_url=gw.url, timeout=15) as client:
        r = client.get("/x", headers=token)
        assert r.status_code == 503
        assert "certificate" not in r.text  # the reason is for the operator, not the client
    gw.stop()
    assert "TLS certificate verify failed" in gw.stderr
    assert "set auth.jwt.ca to the CA that issued the server's certificate" in gw.stderr
    assert not https_jwks.seen  # no request was sent over the unverified connection

    gw = gateway(_route(backend, {"jwt": {**jwt, "ca": str(private_ca.cert_file)}}))
    with httpx.Client(base_url=gw.url, timeout=15) as client:
        assert client.get("/x", headers=token).status_code == 200
        r = client.get("/x", headers={"Authorization": "Bearer x.y.z"})
        assert r.status_code == 401
    gw.stop()
    assert len(https_jwks.seen) == 1


def test_forward_auth_to_a_private_ca(
    private_ca: TestCA, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    def decide(path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if headers.get("authorization") == "Bearer good":
            return 200, {"X-Auth-User": "alice"}, b""
        return 401, {"WWW-Authenticate": 'Bearer realm="sso"'}, b""

    service = ScriptedServer(decide, tls=_server_context(private_ca))
    forward = {"url": service.url + "/check", "consumer_from": "X-Auth-User", "timeout": "2s"}
    try:
        gw = gateway(_route(backend, {"forward": forward}))
        with httpx.Client(base_url=gw.url, timeout=15) as client:
            r = client.get("/x", headers={"Authorization": "Bearer good"})
            assert r.status_code == 502
            assert "certificate" not in r.text
        gw.stop()
        assert "set auth.forward.ca to the CA that issued the server's certificate" in gw.stderr
        assert not service.seen

        gw = gateway(_route(backend, {"forward": {**forward, "ca": str(private_ca.cert_file)}}))
        with httpx.Client(base_url=gw.url, timeout=15) as client:
            r = client.get("/x", headers={"Authorization": "Bearer good"})
            assert r.status_code == 200
            assert dict(backend.requests[-1]["headers"]).get("x-consumer") == "alice"
            assert client.get("/x", headers={"Authorization": "Bearer bad"}).status_code == 401
        gw.stop()
    finally:
        service.stop()


def test_ca_config_errors(
    private_ca: TestCA, backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    not_pem = tmp_path / "not-a-ca.pem"
    not_pem.write_text("hello\n")

    def refused(auth: dict[str, Any]) -> str:
        gw = gateway(_route(backend, auth), start=False)
        done = check_refuses(gw.config_path)
        return done.stderr

    jwt = {"algorithms": ["ES256"], "jwks_url": "https://idp.test/jwks"}
    message = refused({"jwt": {**jwt, "ca": str(not_pem)}})
    assert "auth.jwt" in message and "holds no PEM CA certificate that loads" in message
    message = refused({"jwt": {**jwt, "ca": str(tmp_path / "missing.pem")}})
    assert "does not exist" in message
    message = refused({"jwt": {**jwt, "jwks_url": "http://idp.test/jwks",
                               "ca": str(private_ca.cert_file)}})  # fmt: skip
    assert "ca applies to an https:// jwks_url only" in message
    message = refused({"forward": {"url": "http://auth.test/", "ca": str(private_ca.cert_file)}})
    assert "ca applies to an https:// url only" in message
