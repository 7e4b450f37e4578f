"""JWT bearer tokens (RFC 7519, JWS compact form RFC 7515) verified with `cryptography`.

Written on `cryptography` directly rather than PyJWT: the gateway needs a verifier that never
decides the algorithm from the token alone (the route's list and the key's type decide), keys
that come from a background JWKS cache, and answers mapped onto RFC 6750 error codes; that is
a small amount of code, and one dependency fewer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from bastion.clock import SYSTEM_CLOCK, Clock
from bastion.keymaterial.jwk import PublicKey, fits, load_key_file
from bastion.policies.auth_any import MAYBE, SURELY, bearer_token, offered_scheme
from bastion.policies.authcommon import Identity
from bastion.policies.base import Denied
from bastion.policies.jwks import JwksSource, jwks_source

if TYPE_CHECKING:
    from bastion.config.policy_auth import JwtAuth
    from bastion.http.request import Request
    from bastion.observe.events import EventCounters

__all__ = ["JwksJwtPolicy", "JwtError", "JwtPolicy", "JwtVerifier", "jwt_policy"]

_HASH: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_HMAC = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
_EC_SIZE = {"ES256": 32, "ES384": 48, "ES512": 66}
_MAX_TOKEN = 16 * 1024


class JwtError(Exception):
    """A token that must be refused: ``code`` is the RFC 6750 error, ``status`` the answer."""

    def __init__(
        self, message: str, code: str = "invalid_token", status: int = 401, reason: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.reason = reason  # the metrics' label when not told by the status ("expired")


class KeysUnavailable(Exception):
    """No key can be had to check the token (the JWKS server is down and none are cached)."""


def _b64decode(part: str) -> bytes:
    if "=" in part or "+" in part or "/" in part:
        raise JwtError("The token is not base64url encoded.")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise JwtError("The token is not base64url encoded.") from None


def _verify_signature(alg: str, key: Any, signed: bytes, signature: bytes) -> bool:
    try:
        if alg in _HMAC:
            expected = hmac.new(key, signed, _HMAC[alg]).digest()
            return hmac.compare_digest(expected, signature)
        if alg.startswith("RS"):
            key.verify(signature, signed, padding.PKCS1v15(), _HASH[alg[2:]]())
        elif alg.startswith("PS"):
            digest = _HASH[alg[2:]]()
            pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            key.verify(signature, signed, pss, digest)
        elif alg.startswith("ES"):
            size = _EC_SIZE[alg]
            if len(signature) != 2 * size:
                return False
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            key.verify(encode_dss_signature(r, s), signed, ec.ECDSA(_HASH[alg[2:]]()))
        elif alg == "EdDSA":
            key.verify(signature, signed)
        else:
            return False
    except InvalidSignature:
        return False
    return True


class JwtVerifier:
    """Checks one token against a route's settings; pure except for the key source."""

    def __init__(self, conf: JwtAuth, clock: Clock = SYSTEM_CLOCK) -> None:
        self._now = clock.time  # token dates are wall-clock seconds
        self.algorithms = frozenset(conf.algorithms)
        self.secret = conf.secret.get_secret_value().encode() if conf.secret else None
        self.static_keys: list[PublicKey] = (
            load_key_file(conf.key_file, list(conf.algorithms)) if conf.key_file else []
        )
        self.jwks: JwksSource | None = (
            jwks_source(
                conf.jwks_url,
                conf.jwks_refresh,
                conf.jwks_min_interval,
                conf.jwks_timeout,
                conf.ca,
                clock,
            )
            if conf.jwks_url
            else None
        )
        self.issuer = frozenset(conf.issuer) if conf.issuer else None
        self.audience = frozenset(conf.audience) if conf.audience else None
        self.leeway = conf.leeway
        self.required = tuple(conf.required_claims)
        self.scopes = tuple(conf.scopes)

    def parse(self, token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
        """(header, claims, signed part, signature) of a token, its algorithm checked."""
        if len(token) > _MAX_TOKEN:
            raise JwtError("The token is too long.")
        parts = token.split(".")
        if len(parts) != 3:
            raise JwtError("The token is not a signed JWT (header.payload.signature).")
        try:
            header = json.loads(_b64decode(parts[0]))
            claims = json.loads(_b64decode(parts[1]))
        except (ValueError, UnicodeDecodeError):
            raise JwtError("The token's header or payload is not JSON.") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise JwtError("The token's header or payload is not a JSON object.")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            # covers "none" and every algorithm this route did not choose
            raise JwtError("The token's signature algorithm is not accepted.")
        if header.get("crit") is not None:
            raise JwtError("The token has critical header parameters the gateway does not know.")
        signature = _b64decode(parts[2])
        return header, claims, (parts[0] + "." + parts[1]).encode("ascii"), signature

    def candidates(self, header: dict[str, Any]) -> list[Any] | None:
        """Keys that may have signed a token with this header; None when the kid is unknown
        (a JWKS refresh may find it)."""
        alg = header["alg"]
        if alg in _HMAC:
            return [self.secret] if self.secret is not None else []
        keys = self.static_keys if self.jwks is None else self.jwks.keys
        kid = header.get("kid")
        usable = [
            k.key
            for k in keys
            if (kid is None or k.kid == kid)
            and (k.alg is None or k.alg == alg)
            and fits(alg, k.key)
        ]
        if not usable and kid is not None and self.jwks is not None:
            return None
        return usable

    def check_signature(
        self, header: dict[str, Any], signed: bytes, sig: bytes, keys: list[Any]
    ) -> None:
        if not keys:
            raise JwtError("No key of the gateway fits the token's algorithm and key id.")
        alg = header["alg"]
        if not any(_verify_signature(alg, key, signed, sig) for key in keys):
            raise JwtError("The token's signature is invalid.")

    def check_claims(self, claims: dict[str, Any], now: float | None = None) -> None:
        if now is None:
            clock = self._now  # a local: 3.11 does not specialise `self._now()`
            now = clock()
        for name in self.required:
            if name not in claims:
                raise JwtError(f"The token has no '{name}' claim.")
        for name in ("exp", "nbf", "iat"):
            value = claims.get(name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise JwtError(f"The token's '{name}' claim is not a number.")
        exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
        if exp is not None and now >= exp + self.leeway:
            raise JwtError("The token has expired.", reason="expired")
        if nbf is not None and now < nbf - self.leeway:
            raise JwtError("The token is not valid yet.")
        if iat is not None and iat > now + self.leeway:
            raise JwtError("The token was issued in the future.")
        if self.issuer is not None and claims.get("iss") not in self.issuer:
            raise JwtError("The token's issuer is not accepted.")
        if self.audience is not None:
            aud = claims.get("aud")
            auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
            if not any(isinstance(a, str) and a in self.audience for a in auds):
                raise JwtError("The token is not meant for this audience.")
        if self.scopes:
            held = _scopes(claims)
            missing = [s for s in self.scopes if s not in held]
            if missing:
                raise JwtError(
                    "The token lacks the scopes this route needs.", "insufficient_scope", 403
                )


def _scopes(claims: dict[str, Any]) -> set[str]:
    held: set[str] = set()
    scope = claims.get("scope")
    if isinstance(scope, str):
        held.update(scope.split())
    for name in ("scp", "scopes"):
        value = claims.get(name)
        if isinstance(value, list):
            held.update(v for v in value if isinstance(v, str))
        elif isinstance(value, str):
            held.update(value.split())
    return held


def _header_value(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str | int | float):
        text = str(value)
    elif isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        text = ", ".join(str(v) for v in value)
    else:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=True)
    if any(c in text for c in "\r\n\x00"):
        return None
    return text.encode("utf-8")


class JwtPolicy:
    """Route policy: a valid bearer token, or 401/403 with an RFC 6750 challenge."""

    kind = "auth"  # the config key it comes from: what metrics and logs call it
    auth_scheme = "jwt"  # the method, as the auth failure metric labels it
    # counted for the metrics on refusal (set by the builder; `policies/chain.py`)
    events: EventCounters | None = None

    is_async = False

    def __init__(self, conf: JwtAuth, identity: Identity, clock: Clock = SYSTEM_CLOCK) -> None:
        self.verifier = JwtVerifier(conf, clock)
        self.identity = identity
        self.upstream_drops = identity.drops  # a client-sent consumer header
        self.consumer_claim = conf.consumer_claim
        self.claim_headers = [
            (claim, name.encode("latin-1")) for claim, name in conf.claims_to_headers.items()
        ]
        self.drop = [name.lower() for _, name in self.claim_headers]
        self.realm = f'Bearer realm="{conf.realm}"'.encode()
        self.challenge = b"WWW-Authenticate: " + self.realm + b"\r\n"
        self.needs = "a bearer token (JWT)"
        scope = " ".join(conf.scopes)
        self.scope_param = f', scope="{scope}"'.encode() if scope else b""

    def offered(self, req: Request) -> int:
        """How surely the request carries a JWT (several methods on a route): a bearer
        token of three dot-separated parts surely, another bearer token maybe."""
        token = bearer_token(req)
        if token is not None:
            return SURELY if token.count(b".") == 2 else MAYBE
        return offered_scheme(req, b"bearer")

    def _deny(self, exc: JwtError) -> Denied:
        extra = self.scope_param if exc.code == "insufficient_scope" else b""
        line = b"".join(
            (
                b"WWW-Authenticate: ",
                self.realm,
                b', error="',
                exc.code.encode(),
                b'", error_description="',
                str(exc).encode(),
                b'"',
                extra,
                b"\r\n",
            )
        )
        return Denied(exc.status, str(exc), line, exc.reason)

    def _accept(self, req: Request, claims: dict[str, Any]) -> None:
        for lname in self.drop:
            req.drop_upstream_header(lname)
        for claim, name in self.claim_headers:
            value = _header_value(claims.get(claim))
            if value is not None:
                req.add_upstream_header(name, value)
        consumer = claims.get(self.consumer_claim) if self.consumer_claim else None
        if isinstance(consumer, int) and not isinstance(consumer, bool):
            consumer = str(consumer)  # numeric user ids
        self.identity.accept(req, consumer if isinstance(consumer, str) else "")

    def _finish(
        self,
        req: Request,
        header: dict[str, Any],
        claims: dict[str, Any],
        signed: bytes,
        sig: bytes,
        keys: list[Any],
    ) -> Denied | None:
        try:
            self.verifier.check_signature(header, signed, sig, keys)
            self.verifier.check_claims(claims)
        except JwtError as exc:
            return self._deny(exc)
        self._accept(req, claims)
        return None

    def on_request(self, req: Request) -> Denied | None:
        token = self.identity.bearer(req, self.challenge, self.realm)
        if isinstance(token, Denied):
            return token
        try:
            header, claims, signed, sig = self.verifier.parse(token)
        except JwtError as exc:
            return self._deny(exc)
        return self._finish(
            req, header, claims, signed, sig, self.verifier.candidates(header) or []
        )


class JwksJwtPolicy(JwtPolicy):
    """The same with keys from a JWKS URL: async, since the first request (or a token
    signed with a rotated key) may have to wait for a fetch."""

    is_async = True

    def __init__(self, conf: JwtAuth, identity: Identity, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(conf, identity, clock)
        assert self.verifier.jwks is not None
        self.verifier.jwks.prefetch()

    async def on_request(self, req: Request) -> Denied | None:  # type: ignore[override]
        token = self.identity.bearer(req, self.challenge, self.realm)
        if isinstance(token, Denied):
            return token
        try:
            header, claims, signed, sig = self.verifier.parse(token)
        except JwtError as exc:
            return self._deny(exc)
        jwks = self.verifier.jwks
        assert jwks is not None
        if not jwks.keys:
            await jwks.wait(forced=True)
            if not jwks.keys:
                return Denied(
                    503,
                    "The keys needed to verify the token cannot be fetched; try again later.",
                    b"Retry-After: " + str(max(1, int(jwks.min_interval))).encode() + b"\r\n",
                )
        elif jwks.stale():
            jwks.refresh_soon()
        keys = self.verifier.candidates(header)
        if keys is None:
            # unknown kid: the issuer may have rotated its keys; refetch (rate limited)
            await jwks.wait(forced=True)
            keys = self.verifier.candidates(header) or []
        return self._finish(req, header, claims, signed, sig, keys)


def jwt_policy(conf: JwtAuth, identity: Identity, clock: Clock = SYSTEM_CLOCK) -> JwtPolicy:
    policy = JwksJwtPolicy if conf.jwks_url else JwtPolicy
    return policy(conf, identity, clock)
