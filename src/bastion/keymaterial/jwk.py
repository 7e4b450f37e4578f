"""JSON Web Keys and public key files: parsed into `cryptography` key objects.

Pure parsing, no network: the config checks a JWT key file with it when it is loaded (so a
file that does not load is an error with its line) and the JWT policy and the JWKS client
use it at run time.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

__all__ = ["PublicKey", "fits", "jwk_key", "load_key_file", "parse_jwks"]

_CURVES = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}
_ALG_CURVE = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}


@dataclass(frozen=True)
class PublicKey:
    kid: str | None
    key: Any  # a cryptography public key object
    alg: str | None = None  # the JWK's "alg", when it names one


def fits(alg: str, key: Any) -> bool:
    """Whether a token algorithm may be verified with this key object."""
    if alg[:2] in ("RS", "PS"):
        return isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048
    if alg[:2] == "ES":
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == _ALG_CURVE[alg]
    if alg == "EdDSA":
        return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
    return False


def _b64int(value: Any) -> int:
    if not isinstance(value, str):
        raise ValueError("a key parameter is not a base64url string")
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


def _b64bytes(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError("a key parameter is not a base64url string")
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def jwk_key(jwk: dict[str, Any]) -> PublicKey | None:
    """The public key of one JWK, or None for a key not meant for signatures or of a type
    we do not verify with (symmetric "oct" keys are never taken from a JWKS)."""
    if jwk.get("use", "sig") != "sig":
        return None
    kty = jwk.get("kty")
    key: Any
    try:
        if kty == "RSA":
            key = rsa.RSAPublicNumbers(_b64int(jwk["e"]), _b64int(jwk["n"])).public_key()
        elif kty == "EC":
            curve = _CURVES.get(jwk.get("crv", ""))
            if curve is None:
                return None
            numbers = ec.EllipticCurvePublicNumbers(_b64int(jwk["x"]), _b64int(jwk["y"]), curve)
            key = numbers.public_key()
        elif kty == "OKP" and jwk.get("crv") == "Ed25519":
            key = ed25519.Ed25519PublicKey.from_public_bytes(_b64bytes(jwk["x"]))
        elif kty == "OKP" and jwk.get("crv") == "Ed448":
            key = ed448.Ed448PublicKey.from_public_bytes(_b64bytes(jwk["x"]))
        else:
            return None
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"invalid {kty} key {jwk.get('kid')!r}: {exc}") from None
    kid = jwk.get("kid")
    alg = jwk.get("alg")
    return PublicKey(
        kid if isinstance(kid, str) else None, key, alg if isinstance(alg, str) else None
    )


def parse_jwks(data: bytes) -> list[PublicKey]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("not a JSON document") from None
    if isinstance(doc, dict) and "kty" in doc:
        doc = {"keys": [doc]}
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError('expected a JWKS document {"keys": [...]}')
    keys: list[PublicKey] = []
    for item in doc["keys"]:
        if isinstance(item, dict):
            key = jwk_key(item)
            if key is not None:
                keys.append(key)
    return keys


def load_key_file(path: str, algorithms: Sequence[str]) -> list[PublicKey]:
    """The keys of a PEM public key (or certificate) file or a JWKS JSON file; at least one
    must fit one of ``algorithms``."""
    data = Path(path).read_bytes()
    keys: list[PublicKey]
    if data.lstrip().startswith(b"{"):
        keys = parse_jwks(data)
    elif b"-----BEGIN CERTIFICATE-----" in data:
        from cryptography import x509

        keys = [PublicKey(None, x509.load_pem_x509_certificate(data).public_key())]
    elif b"PRIVATE KEY-----" in data:
        raise ValueError("holds a private key: give the public key only")
    else:
        try:
            keys = [PublicKey(None, serialization.load_pem_public_key(data))]
        except ValueError:
            raise ValueError("not a PEM public key, certificate or JWKS document") from None
    if not any(fits(alg, k.key) for k in keys for alg in algorithms):
        raise ValueError(f"no key in it fits the algorithms {', '.join(algorithms)}")
    return keys
