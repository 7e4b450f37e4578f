"""Which tls: auto names go to ACME, and the JWK thumbprint."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from bastion.acme.jws import jwk_thumbprint
from bastion.config.matching import is_private_acme, uses_acme
from bastion.state.challenges import FileChallengeTokens


def test_public_names_use_acme() -> None:
    assert uses_acme("example.com")
    assert uses_acme("*.example.com")
    for local in ("localhost", "127.0.0.1", "[::1]", "api", "a.test", "x.localhost", "*"):
        assert not uses_acme(local)


def test_private_ca_also_certifies_reserved_suffixes() -> None:
    assert is_private_acme("https://127.0.0.1:14000/dir")
    assert not is_private_acme("https://acme-staging-v02.api.letsencrypt.org/directory")
    assert not is_private_acme(None)
    assert uses_acme("bastion.test", private_ca=True)
    assert uses_acme("a.internal", private_ca=True)
    for local in ("localhost", "127.0.0.1", "api", "x.localhost", "*"):
        assert not uses_acme(local, private_ca=True)


def test_thumbprint_is_rfc7638() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    numbers = key.public_key().public_numbers()

    def b64(n: int) -> str:
        return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()

    canonical = f'{{"crv":"P-256","kty":"EC","x":"{b64(numbers.x)}","y":"{b64(numbers.y)}"}}'
    digest = hashlib.sha256(canonical.encode()).digest()
    assert jwk_thumbprint(key) == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert json.loads(canonical)["crv"] == "P-256"


def test_challenge_store_rejects_path_tricks(tmp_path: Path) -> None:
    store = FileChallengeTokens(tmp_path)
    store.publish("tok_en-1", "tok_en-1.thumb")
    assert store.lookup("tok_en-1") == b"tok_en-1.thumb"
    assert store.lookup("../challenges/tok_en-1") is None
    assert store.lookup("") is None
    store.unpublish("tok_en-1")
    assert store.lookup("tok_en-1") is None
