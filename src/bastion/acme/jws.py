"""Keys and signatures of the ACME protocol: JWS (RFC 7515) in ES256 with the account key,
the JWK and its RFC 7638 thumbprint, the External Account Binding (HS256), the CSR, and
the RFC 9773 certificate id. Pure functions: no I/O, no nonces (the client has those).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

__all__ = [
    "CertKey",
    "Eab",
    "ari_cert_id",
    "b64",
    "csr_der",
    "eab_binding",
    "jwk",
    "jwk_thumbprint",
    "sign",
]

CertKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Eab:
    """External Account Binding credentials; ``repr`` never shows the key."""

    key_id: str
    hmac_key: str = field(repr=False)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {
        "crv": "P-256",
        "kty": "EC",
        "x": b64(numbers.x.to_bytes(32, "big")),
        "y": b64(numbers.y.to_bytes(32, "big")),
    }


def jwk_thumbprint(key: ec.EllipticCurvePrivateKey) -> str:
    """RFC 7638 thumbprint: the members in lexical order, no whitespace."""
    canonical = json.dumps(jwk(key), sort_keys=True, separators=(",", ":"))
    return b64(hashlib.sha256(canonical.encode()).digest())


def sign(
    key: ec.EllipticCurvePrivateKey,
    url: str,
    nonce: str,
    payload: dict[str, Any] | None,
    kid: str | None,
) -> bytes:
    """A flattened JWS (RFC 8555 6.2): ``payload=None`` is POST-as-GET's empty payload;
    the account is named by ``kid`` once registered, by its ``jwk`` before."""
    protected: dict[str, Any] = {"alg": "ES256", "nonce": nonce, "url": url}
    if kid is None:
        protected["jwk"] = jwk(key)
    else:
        protected["kid"] = kid
    p64 = b64(json.dumps(protected).encode())
    body64 = "" if payload is None else b64(json.dumps(payload).encode())
    der = key.sign(f"{p64}.{body64}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    signature = b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    return json.dumps({"protected": p64, "payload": body64, "signature": signature}).encode()


def eab_binding(key: ec.EllipticCurvePrivateKey, url: str, eab: Eab) -> dict[str, str]:
    """The inner JWS binding this account key to the CA's external account: the
    account's JWK signed with HS256 under the CA-given MAC key (RFC 8555 7.3.4)."""
    raw = eab.hmac_key.strip()
    mac_key = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    protected = b64(json.dumps({"alg": "HS256", "kid": eab.key_id, "url": url}).encode())
    payload = b64(json.dumps(jwk(key)).encode())
    mac = hmac.new(mac_key, f"{protected}.{payload}".encode(), hashlib.sha256).digest()
    return {"protected": protected, "payload": payload, "signature": b64(mac)}


def ari_cert_id(cert: x509.Certificate) -> str | None:
    """RFC 9773 certificate identifier: base64url(AKI keyIdentifier) "." base64url(the
    serial's DER integer content bytes); None without an AKI key identifier."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return None
    if aki.key_identifier is None:
        return None
    serial = cert.serial_number
    length = serial.bit_length() // 8 + 1  # room for the sign bit, as DER encodes it
    return f"{b64(aki.key_identifier)}.{b64(serial.to_bytes(length, 'big'))}"


def csr_der(names: list[str], key: CertKey) -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])]))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)
