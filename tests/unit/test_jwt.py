"""The JWT verifier on its own: parsing, signature checks per algorithm, claims and leeway."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from authtokens import HS_SECRET, KID, Keys, b64, claims, sign
from bastion.config.policy_auth import JwtAuth
from bastion.keymaterial.jwk import load_key_file, parse_jwks
from bastion.policies.jwt import JwtError, JwtVerifier


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def hs(**extra: Any) -> JwtVerifier:
    return JwtVerifier(JwtAuth(algorithms=["HS256"], secret=HS_SECRET, **extra))


def verify(v: JwtVerifier, token: str, now: float | None = None) -> dict[str, Any]:
    header, payload, signed, sig = v.parse(token)
    v.check_signature(header, signed, sig, v.candidates(header) or [])
    v.check_claims(payload, now)
    return payload


def test_hs256_roundtrip_and_tampering() -> None:
    v = hs()
    token = sign(claims())
    assert verify(v, token)["sub"] == "alice"
    head, body, sig = token.split(".")
    with pytest.raises(JwtError, match="signature is invalid"):
        verify(v, f"{head}.{b64(json.dumps(claims(sub='root')).encode())}.{sig}")
    with pytest.raises(JwtError, match="not base64url"):
        verify(v, f"{head}.{body}.{sig}==")
    with pytest.raises(JwtError, match="signature is invalid"):
        verify(v, f"{head}.{body}.")


@pytest.mark.parametrize("alg", ["none", "None", "HS512", "RS256", ""])
def test_algorithms_outside_the_list_are_refused(alg: str) -> None:
    token = sign(claims(), "HS256", header={"alg": alg})
    with pytest.raises(JwtError, match="algorithm is not accepted"):
        hs().parse(token)


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "ES384", "EdDSA"])
def test_public_key_algorithms(alg: str, keys: Keys, tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(keys.jwks()))
    v = JwtVerifier(JwtAuth(algorithms=[alg], key_file=str(path)))
    assert verify(v, sign(claims(), alg, keys.for_alg(alg), KID[alg]))["sub"] == "alice"
    with pytest.raises(JwtError):
        verify(v, sign(claims(), alg, Keys().for_alg(alg), KID[alg]))


def test_key_type_must_fit_the_algorithm(keys: Keys, tmp_path: Path) -> None:
    # an ES384 verifier never tries the P-256 key, whatever the kid says
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(keys.jwks()))
    v = JwtVerifier(JwtAuth(algorithms=["ES256", "ES384"], key_file=str(path)))
    token = sign(claims(), "ES256", keys.p256, "p256", header={"alg": "ES384"})
    with pytest.raises(JwtError, match="No key"):
        verify(v, token)


def test_claims_and_leeway() -> None:
    v = hs(leeway=10, issuer=["a", "b"], audience="api", required_claims=["exp", "sub"])
    now = time.time()
    ok = claims(iss="a", aud=["x", "api"], exp=int(now) - 5)
    assert verify(v, sign(ok), now)
    for bad, message in (
        (claims(iss="a", aud="api", exp=int(now) - 11), "expired"),
        (claims(iss="a", aud="api", nbf=int(now) + 11), "not valid yet"),
        (claims(iss="a", aud="api", iat=int(now) + 11), "in the future"),
        (claims(iss="c", aud="api"), "issuer"),
        (claims(iss="a", aud=["x"]), "audience"),
        (claims(iss="a"), "audience"),
        ({"iss": "a", "aud": "api", "sub": "x"}, "'exp'"),
        (claims(iss="a", aud="api", exp="tomorrow"), "not a number"),
        (claims(iss="a", aud="api", exp=True), "not a number"),
    ):
        with pytest.raises(JwtError, match=message):
            verify(v, sign(bad), now)


def test_scopes_give_403() -> None:
    v = hs(scopes=["read", "write"])
    assert verify(v, sign(claims(scope="read write extra")))
    assert verify(v, sign(claims(scp=["write", "read"])))
    with pytest.raises(JwtError) as info:
        verify(v, sign(claims(scope="read")))
    assert info.value.status == 403 and info.value.code == "insufficient_scope"


def test_garbage_tokens() -> None:
    v = hs()
    for token in ("", "a", "a.b", "a.b.c.d", "!!.??.**", "e30.e30", "W10.e30.x", "x" * 20000):
        with pytest.raises(JwtError):
            verify(v, token)


def test_key_files(keys: Keys, tmp_path: Path) -> None:
    pem = tmp_path / "k.pem"
    pem.write_bytes(keys.rsa_public_pem())
    assert len(load_key_file(str(pem), ["RS256"])) == 1
    with pytest.raises(ValueError, match="no key in it fits"):
        load_key_file(str(pem), ["ES256"])
    junk = tmp_path / "junk"
    junk.write_text("hello")
    with pytest.raises(ValueError, match="not a PEM"):
        load_key_file(str(junk), ["RS256"])
    # symmetric and encryption keys in a JWKS are ignored
    doc = {"keys": [{"kty": "oct", "k": "c2VjcmV0"}, {**keys.jwks()["keys"][0], "use": "enc"}]}
    assert parse_jwks(json.dumps(doc).encode()) == []
    with pytest.raises(ValueError, match="JWKS"):
        parse_jwks(b"[]")
