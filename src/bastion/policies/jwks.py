"""Public keys for JWT verification: PEM files, JWKS documents (RFC 7517/7518) and a JWKS URL
fetched in the background.

A key remembers its type, so that the verifier can refuse a token whose algorithm does not fit
the key (an HS256 token "signed" with an RSA public key as the secret, an ES384 token against a
P-256 key).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from bastion.clock import SYSTEM_CLOCK, Clock
from bastion.policies.authclient import AuthClient, AuthClientError, loggable_url

__all__ = [
    "JwksSource",
    "PublicKey",
    "fits",
    "jwks_source",
    "load_key_file",
    "parse_jwks",
]

log = logging.getLogger("bastion.jwt")

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


class JwksSource:
    """A JWKS URL's keys, fetched in the background and kept while the server is down.

    Requests never wait for a scheduled refresh: they use the keys held. They wait (up to the
    fetch timeout) only when no key was ever fetched, or when a token names an unknown kid and
    the last fetch is older than ``min_interval`` (a key rotation)."""

    def __init__(
        self,
        url: str,
        refresh: float,
        min_interval: float,
        timeout: float,
        ca: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.url = loggable_url(url)  # for log lines
        self._now = clock.monotonic  # intervals and cool-downs: never goes back
        self.refresh = refresh
        self.min_interval = min_interval
        self.timeout = timeout
        self.keys: list[PublicKey] = []
        self.fetched_at = 0.0  # monotonic time of the last successful fetch
        self.tried_at = -1e18  # monotonic time of the last attempt
        self.error = ""
        self._client = AuthClient(url, ca=ca, setting="auth.jwt")  # the full URL
        self._task: asyncio.Task[None] | None = None

    def stale(self) -> bool:
        return self._now() - self.fetched_at > self.refresh

    def refresh_soon(self) -> None:
        """Start a background fetch unless one runs or one was tried very recently."""
        if self._task is None and self._now() - self.tried_at >= min(
            self.min_interval, self.refresh
        ):
            self._task = asyncio.get_running_loop().create_task(self._fetch())

    def prefetch(self) -> None:
        """At load: start fetching now, so that the first request finds the keys, when
        called from the running loop and no key is held yet."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # `bastion check`: no loop serves, nothing to fetch for
        if not self.keys:
            self.refresh_soon()

    async def wait(self, forced: bool = False) -> None:
        """Fetch now (or join the fetch under way), at most once per min_interval; while no
        key is held at all, at most every 5 seconds (an issuer that starts after the
        gateway is found soon)."""
        if self._task is None:
            interval = self.min_interval if self.keys else min(self.min_interval, 5.0)
            if forced and self._now() - self.tried_at < interval:
                return
            self._task = asyncio.get_running_loop().create_task(self._fetch())
        await asyncio.shield(self._task)

    async def _fetch(self) -> None:
        self.tried_at = self._now()
        try:
            answer = await self._client.get([("Accept", b"application/json")], self.timeout)
            if answer.status != 200:
                raise ValueError(f"status {answer.status}")
            keys = parse_jwks(answer.body)
            if not keys:
                raise ValueError("no signature key in the document")
        except (AuthClientError, ValueError, TimeoutError) as exc:
            self.error = str(exc) or type(exc).__name__
            held = (
                f"keeping the {len(self.keys)} keys fetched before"
                if self.keys
                else ("no keys are cached: tokens cannot be verified")
            )
            log.error("JWKS %s cannot be fetched (%s); %s", self.url, self.error, held)
        else:
            self.keys = keys
            self.fetched_at = self._now()
            self.error = ""
            log.info("JWKS %s fetched: %d keys", self.url, len(keys))
        finally:
            self._task = None


# One source per URL and settings, shared by every route (and kept across reloads) so that a
# reload neither drops the keys held nor refetches them.
_SOURCES: dict[tuple[str, float, float, float, str | None, int], JwksSource] = {}


def jwks_source(
    url: str,
    refresh: float,
    min_interval: float,
    timeout: float,
    ca: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> JwksSource:
    # a CA file changed on disk takes effect at the next reload: it makes a new source
    try:
        ca_version = Path(ca).stat().st_mtime_ns if ca is not None else 0
    except OSError:
        ca_version = 0  # gone since the config check: the client reports the failure
    key = (url, refresh, min_interval, timeout, ca, ca_version)
    source = _SOURCES.get(key)
    if source is None:
        source = _SOURCES[key] = JwksSource(url, refresh, min_interval, timeout, ca, clock)
    return source
