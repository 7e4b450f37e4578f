"""JWT bearer tokens through the whole gateway: every algorithm family, the claims checks, the
RFC 6750 answers, algorithm confusion and alg:none, and JWKS URLs that rotate or go down."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from authtokens import (
    HS_SECRET,
    KID,
    JwksServer,
    Keys,
    ScriptedServer,
    check_refuses,
    claims,
    json_reply,
    sign,
)
from conftest import Backend, Gateway, free_port


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def route(backend: Backend, path: str, jwt: dict[str, Any]) -> dict[str, Any]:
    return {"path": path, "auth": {"jwt": jwt}, "proxy": {"upstreams": [backend.url]}}


def problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    doc = resp.json()
    assert doc["status"] == status
    return doc


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def hs_gateway(backend: Backend, gateway: Callable[..., Gateway]) -> Gateway:
    jwt = {
        "algorithms": ["HS256", "HS384"],
        "secret": HS_SECRET,
        "issuer": "https://issuer.test",
        "audience": ["api", "other"],
        "required_claims": ["exp", "sub"],
        "claims_to_headers": {"sub": "X-User", "roles": "X-Roles", "org": "X-Org"},
    }
    scoped = dict(jwt, scopes=["write", "admin"])
    return gateway(
        {
            "access_log": {"format": "json"},
            "sites": [
                {
                    "routes": [
                        route(backend, "/api/", jwt),
                        route(backend, "/write/", scoped),
                    ]
                }
            ],
        }
    )


def good(**extra: Any) -> dict[str, Any]:
    return claims(**{"iss": "https://issuer.test", "aud": "api", **extra})


def test_hs_tokens(hs_gateway: Gateway) -> None:
    with httpx.Client(base_url=hs_gateway.url, timeout=10) as client:
        # a good token: claims mapped to upstream headers, client-sent copies replaced
        token = sign(good(roles=["reader", "writer"], org={"id": 7}))
        r = client.get("/api/x", headers={**bearer(token), "X-User": "mallory"})
        assert r.status_code == 200, r.text
        seen = dict(r.json()["headers"])
        assert seen["x-user"] == "alice"
        assert seen["x-consumer"] == "alice"
        assert seen["x-roles"] == "reader, writer"
        assert json.loads(seen["x-org"]) == {"id": 7}
        assert [k for k, _ in r.json()["headers"]].count("x-user") == 1
        assert seen["authorization"] == f"Bearer {token}"  # the backend may read it too
        assert client.get("/api/x", headers=bearer(sign(good(), "HS384"))).status_code == 200

        # no token at all: a bare challenge (RFC 6750 section 3.1)
        r = client.get("/api/x")
        problem(r, 401)
        assert r.headers["www-authenticate"] == 'Bearer realm="bastion"'

        def refused(token: str, fragment: str, status: int = 401) -> None:
            r = client.get("/api/x", headers=bearer(token))
            doc = problem(r, status)
            assert fragment in doc["detail"], doc
            challenge = r.headers["www-authenticate"]
            assert challenge.startswith('Bearer realm="bastion", error="invalid_token"')
            assert token not in r.text

        now = int(time.time())
        refused(sign(good(exp=now - 120)), "expired")
        refused(sign(good(nbf=now + 600)), "not valid yet")
        refused(sign(good(iat=now + 600)), "issued in the future")
        refused(sign(good(), key="another-secret-that-is-long-enough-too"), "signature is invalid")
        refused(sign(good(aud="someone-else")), "audience")
        refused(sign(good(iss="https://evil.test")), "issuer")
        no_sub = good()
        del no_sub["sub"]
        refused(sign(no_sub), "'sub'")
        refused(sign(good(), "none"), "algorithm is not accepted")
        refused(sign(good(), "HS512"), "algorithm is not accepted")
        refused(sign(good(), header={"crit": ["exp"]}), "critical")
        refused("eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln", "not JSON")
        refused("abc.def", "not a signed JWT")
        # within the leeway (30 s by default) a just-expired token still passes
        assert client.get("/api/x", headers=bearer(sign(good(exp=now - 5)))).status_code == 200

        # a tampered payload with the original signature
        head, _, sig = token.split(".")
        forged_payload = sign(good(sub="admin")).split(".")[1]
        refused(f"{head}.{forged_payload}.{sig}", "signature is invalid")

        # malformed Authorization fields: 400 invalid_request
        for value in (b"Bearer", b"Bearer two tokens", "Bearer tok\u00e9n".encode()):
            r = client.get("/api/x", headers={"Authorization": value})
            problem(r, 400)
            assert 'error="invalid_request"' in r.headers["www-authenticate"]
        r = client.get("/api/x", headers={"Authorization": "Basic YWxpY2U6cHc="})
        problem(r, 401)

        # scopes: a valid token without them is 403 insufficient_scope
        r = client.get("/write/x", headers=bearer(sign(good(scope="read write"))))
        problem(r, 403)
        assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
        assert 'scope="write admin"' in r.headers["www-authenticate"]
        ok = sign(good(scope="read write admin"))
        assert client.get("/write/x", headers=bearer(ok)).status_code == 200
        ok = sign(good(scp=["write", "admin"]))
        assert client.get("/write/x", headers=bearer(ok)).status_code == 200
    hs_gateway.stop()
    lines = [json.loads(x) for x in hs_gateway.stdout.splitlines() if x.startswith("{")]
    assert any(line.get("consumer") == "alice" and line["status"] == 200 for line in lines)
    assert HS_SECRET not in hs_gateway.stdout + hs_gateway.stderr


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "ES384", "EdDSA"])
def test_public_key_algorithms_from_jwks_file(
    alg: str, keys: Keys, backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(keys.jwks()))
    gw = gateway(
        {
            "sites": [
                {
                    "routes": [
                        route(
                            backend,
                            "/",
                            {"algorithms": [alg], "key_file": str(jwks)},
                        )
                    ]
                }
            ]
        }
    )
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        private = keys.for_alg(alg)
        r = client.get("/x", headers=bearer(sign(claims(), alg, private, KID[alg])))
        assert r.status_code == 200, r.text
        # without a kid, every key that fits the algorithm is tried
        assert client.get("/x", headers=bearer(sign(claims(), alg, private))).status_code == 200
        # signed by another key of the same type
        other = Keys().for_alg(alg)
        r = client.get("/x", headers=bearer(sign(claims(), alg, other, KID[alg])))
        assert problem(r, 401)["detail"] == "The token's signature is invalid."
        # alg:none is refused whatever the route accepts
        r = client.get("/x", headers=bearer(sign(claims(), "none")))
        problem(r, 401)


def test_algorithm_confusion_is_refused(
    keys: Keys, backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    pem = tmp_path / "rsa.pem"
    pem.write_bytes(keys.rsa_public_pem())
    gw = gateway(
        {
            "sites": [
                {"routes": [route(backend, "/", {"algorithms": ["RS256"], "key_file": str(pem)})]}
            ]
        }
    )
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        good_token = sign(claims(), "RS256", keys.rsa)
        assert client.get("/x", headers=bearer(good_token)).status_code == 200
        # the classic forgery: HS256 with the public key's PEM as the HMAC secret
        forged = sign(claims(sub="admin"), "HS256", keys.rsa_public_pem())
        r = client.get("/x", headers=bearer(forged))
        assert problem(r, 401)["detail"] == "The token's signature algorithm is not accepted."
        # an RS256 header on an ES signature
        mixed = sign(claims(), "ES256", keys.p256, header={"alg": "RS256"})
        problem(client.get("/x", headers=bearer(mixed)), 401)

    # and the config cannot even ask for it: HS algorithms with a public key
    bad = {
        "sites": [
            {
                "routes": [
                    route(backend, "/", {"algorithms": ["RS256", "HS256"], "key_file": str(pem)})
                ]
            }
        ]
    }
    gw2 = gateway(bad, start=False)
    done = check_refuses(gw2.config_path)
    assert "auth.jwt" in done.stderr and "HS256 need a secret" in done.stderr


def test_config_errors_are_clear(gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    def check(jwt: dict[str, Any]) -> str:
        conf = {
            "sites": [{"routes": [{"path": "/", "auth": {"jwt": jwt}, "respond": {}}]}],
        }
        gw = gateway(conf, start=False)
        done = check_refuses(gw.config_path)
        return done.stderr

    short = "too-short-secret"
    out = check({"algorithms": ["HS256"], "secret": short})
    assert "at least 32 bytes" in out
    assert "none" in check({"algorithms": ["none"], "secret": HS_SECRET})
    assert "exactly one of" in check({"algorithms": ["RS256"]})
    private = tmp_path / "private.pem"
    from cryptography.hazmat.primitives import serialization

    private.write_bytes(
        Keys().p256.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    assert "private key" in check({"algorithms": ["ES256"], "key_file": str(private)})
    assert "https:// URL" in check({"algorithms": ["ES256"], "jwks_url": "ftp://x"})


# ------------------------------------------------------------------ JWKS URL
@pytest.fixture
def jwks_server(keys: Keys) -> Iterator[JwksServer]:
    server = JwksServer(keys.jwks())
    yield server
    server.stop()


def jwks_config(backend: Backend, url: str, **extra: Any) -> dict[str, Any]:
    jwt = {"algorithms": ["RS256", "ES256"], "jwks_url": url, **extra}
    return {"sites": [{"routes": [route(backend, "/", jwt)]}]}


def test_jwks_url_cached_rotated_and_down(
    keys: Keys, jwks_server: JwksServer, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    gw = gateway(jwks_config(backend, jwks_server.url, jwks_min_interval="1s"))
    with httpx.Client(base_url=gw.url, timeout=15) as client:
        token = sign(claims(), "RS256", keys.rsa, "rsa")
        for _ in range(5):
            assert client.get("/x", headers=bearer(token)).status_code == 200
        # fetched once, not per request
        assert jwks_server.fetches == 1

        # rotation: the issuer publishes a new key; a token naming it triggers one refetch
        rotated = Keys()
        jwks_server.doc = {"keys": keys.jwks()["keys"] + rotated.jwks("new-")["keys"]}
        time.sleep(1.1)  # past jwks_min_interval
        new_token = sign(claims(), "ES256", rotated.p256, "new-p256")
        r = client.get("/x", headers=bearer(new_token))
        assert r.status_code == 200, r.text
        assert jwks_server.fetches == 2

        # made-up kids do not make the gateway hammer the JWKS server
        for i in range(10):
            fake = sign(claims(), "ES256", rotated.p256, f"unknown-{i}")
            r = client.get("/x", headers=bearer(fake))
            assert problem(r, 401)["detail"].startswith("No key of the gateway fits")
        assert jwks_server.fetches <= 3

        # the JWKS server goes down: cached keys keep working
        jwks_server.server.stop()
        time.sleep(1.1)
        assert client.get("/x", headers=bearer(token)).status_code == 200
        assert client.get("/x", headers=bearer(new_token)).status_code == 200
        r = client.get("/x", headers=bearer(sign(claims(), "ES256", rotated.p256, "gone")))
        problem(r, 401)
    gw.stop()
    assert "cannot be fetched" in gw.stderr and "keeping the" in gw.stderr


def test_jwks_down_with_nothing_cached(
    keys: Keys, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/jwks"  # nothing listens there yet
    gw = gateway(jwks_config(backend, url, jwks_timeout="2s", jwks_min_interval="1s"))
    with httpx.Client(base_url=gw.url, timeout=15) as client:
        token = sign(claims(), "RS256", keys.rsa, "rsa")
        r = client.get("/x", headers=bearer(token))
        doc = problem(r, 503)
        assert "cannot be fetched" in doc["detail"]
        assert int(r.headers["retry-after"]) >= 1
        # a token that is refused anyway does not need the keys
        problem(client.get("/x"), 401)
        # the issuer comes up after the gateway: its keys are found without a restart
        server = ScriptedServer(lambda path, headers: json_reply(keys.jwks()), port)
        try:
            deadline = time.monotonic() + 15
            while client.get("/x", headers=bearer(token)).status_code != 200:
                assert time.monotonic() < deadline, "the JWKS server was never asked again"
                time.sleep(0.3)
        finally:
            server.stop()
    gw.stop()
    assert f"JWKS {url} cannot be fetched" in gw.stderr
    assert "no keys are cached" in gw.stderr
    assert f"JWKS {url} fetched" in gw.stderr


def test_jwks_error_status_is_logged(
    keys: Keys, jwks_server: JwksServer, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    jwks_server.status = 500
    gw = gateway(jwks_config(backend, jwks_server.url))
    with httpx.Client(base_url=gw.url, timeout=15) as client:
        token = sign(claims(), "RS256", keys.rsa, "rsa")
        problem(client.get("/x", headers=bearer(token)), 503)
        # the server recovers: after jwks_min_interval (30 s default) the next request
        # would fetch again; here the first failure is what matters
    gw.stop()
    assert "status 500" in gw.stderr
