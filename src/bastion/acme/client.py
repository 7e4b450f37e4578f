"""A small RFC 8555 (ACME) client: account, order, HTTP-01, finalize, download.

Synchronous on purpose: it runs in a worker thread (``asyncio.to_thread``), never on the
event loop, and talks to the CA with the standard library's ``urllib`` over TLS. Signing
(JWS ES256, ``jws.py``) and keys use ``cryptography``, which bastion already depends on. Why not
certbot's ``acme`` library: it would add pyOpenSSL, requests and josepy for a protocol that
is a dozen JSON requests, and it retries ``badNonce`` only once; here every request retries
``badNonce`` several times, honours ``Retry-After``, and every problem document becomes a
typed :class:`AcmeProblem` whose ``hint`` says what the operator should do (``problems.py``).

The client never knows about routes or sites: it is given names and challenge solvers
(HTTP-01 files, TLS-ALPN-01 certificates, DNS-01 hook; see ``solvers.py``) and gives back a
PEM chain. It also asks for ACME Renewal Information (RFC 9773) and revokes (section 7.6).
"""

from __future__ import annotations

import json
import logging
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.acme.jws import CertKey, Eab, ari_cert_id, b64, csr_der, eab_binding, jwk_thumbprint
from bastion.acme.jws import sign as sign_jws
from bastion.acme.problems import ERR, AcmeError, AcmeProblem, invalid_problem

__all__ = [
    "LETSENCRYPT_PRODUCTION",
    "LETSENCRYPT_STAGING",
    "AcmeClient",
    "Solver",
]

log = logging.getLogger("bastion.acme")

LETSENCRYPT_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"
LETSENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"

_NONCE_RETRIES = 30
_USER_AGENT = "bastion-acme/0.1"


class Solver(Protocol):
    """Makes one challenge type answerable, then tidies up."""

    type: str

    def present(self, domain: str, token: str, key_authorization: str) -> None: ...

    def cleanup(self, domain: str, token: str, key_authorization: str) -> None: ...


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


@dataclass
class Response:
    status: int
    headers: Any
    body: bytes

    def json(self) -> dict[str, Any]:
        try:
            data = json.loads(self.body)
        except ValueError as exc:
            raise AcmeError(f"the CA answered with invalid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise AcmeError("the CA answered with a JSON value that is not an object")
        return data


class AcmeClient:
    def __init__(
        self,
        directory: str,
        account_key: ec.EllipticCurvePrivateKey,
        *,
        cafile: str | None = None,
        timeout: float = 30.0,
        poll_timeout: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.directory_url = directory
        self.key = account_key
        self.kid: str | None = None
        self.timeout = timeout
        self.poll_timeout = poll_timeout
        self.sleep = sleep
        self._ssl = ssl.create_default_context(cafile=cafile)
        self._dir: dict[str, Any] | None = None
        self._nonce: str | None = None
        self.thumbprint = jwk_thumbprint(account_key)

    # ------------------------------------------------------------- transport
    def _http(
        self, method: str, url: str, body: bytes | None = None, ctype: str | None = None
    ) -> Response:
        request = urllib.request.Request(url, data=body, method=method)
        request.add_header("User-Agent", _USER_AGENT)
        if ctype:
            request.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._ssl) as resp:
                result = Response(resp.status, resp.headers, resp.read())
        except urllib.error.HTTPError as exc:
            result = Response(exc.code, exc.headers, exc.read())
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AcmeError(f"cannot reach the ACME server {url}: {reason}") from None
        nonce = result.headers.get("Replay-Nonce") if result.headers else None
        if nonce:
            self._nonce = nonce
        return result

    def directory(self) -> dict[str, Any]:
        if self._dir is None:
            resp = self._http("GET", self.directory_url)
            if resp.status != 200:
                raise AcmeError(f"GET {self.directory_url} answered {resp.status}")
            self._dir = resp.json()
            for needed in ("newNonce", "newAccount", "newOrder"):
                if needed not in self._dir:
                    raise AcmeError(f"the ACME directory has no {needed}: wrong directory URL?")
        return self._dir

    def _new_nonce(self) -> str:
        resp = self._http("HEAD", self.directory()["newNonce"])
        if not self._nonce:
            raise AcmeError("the CA sent no Replay-Nonce")
        del resp
        nonce, self._nonce = self._nonce, None
        assert nonce is not None
        return nonce

    def _sign(self, url: str, payload: dict[str, Any] | None, use_jwk: bool) -> bytes:
        nonce = self._nonce
        self._nonce = None
        if nonce is None:
            nonce = self._new_nonce()
        return sign_jws(self.key, url, nonce, payload, None if use_jwk else self.kid)

    def post(self, url: str, payload: dict[str, Any] | None, use_jwk: bool = False) -> Response:
        """A signed POST (``payload=None`` is POST-as-GET). Retries ``badNonce`` and
        ``Retry-After`` answers to 503; raises :class:`AcmeProblem` on a problem document."""
        for attempt in range(_NONCE_RETRIES):
            resp = self._http(
                "POST", url, self._sign(url, payload, use_jwk), "application/jose+json"
            )
            if resp.status < 400:
                return resp
            problem = self._problem(resp)
            if problem.short_type == "badNonce" and attempt + 1 < _NONCE_RETRIES:
                log.debug("acme: badNonce from the CA, retrying with a fresh nonce")
                continue
            if resp.status == 503 and problem.retry_after is not None and attempt < 2:
                self.sleep(min(problem.retry_after, 60.0))
                continue
            raise problem
        raise AcmeError("unreachable")  # pragma: no cover

    def _problem(self, resp: Response) -> AcmeProblem:
        try:
            data = json.loads(resp.body)
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        return AcmeProblem(
            type=str(data.get("type", "about:blank")),
            detail=str(data.get("detail", f"HTTP {resp.status}")),
            status=resp.status,
            subproblems=list(data.get("subproblems") or []),
            retry_after=_retry_after(resp.headers),
        )

    # --------------------------------------------------------------- account
    def register(self, email: str | None, eab: Eab | None = None) -> str:
        """Create the account, or find the existing one for this key. Returns its URL."""
        payload: dict[str, Any] = {"termsOfServiceAgreed": True}
        if email:
            payload["contact"] = [f"mailto:{email}"]
        url = self.directory()["newAccount"]
        if eab is not None:
            payload["externalAccountBinding"] = eab_binding(self.key, url, eab)
        resp = self.post(url, payload, use_jwk=True)
        kid = resp.headers.get("Location")
        if not kid:
            raise AcmeError("the CA sent no account URL (Location) for newAccount")
        self.kid = kid
        return str(kid)

    # ------------------------------------------------------------------- ARI
    def renewal_window(self, cert: x509.Certificate) -> tuple[float, float] | None:
        """The CA's suggested renewal window (RFC 9773) as Unix times, or None when the
        CA has no renewalInfo endpoint or answers nothing usable."""
        base = self.directory().get("renewalInfo")
        if not base:
            return None
        cert_id = ari_cert_id(cert)
        if cert_id is None:
            return None
        resp = self._http("GET", f"{str(base).rstrip('/')}/{cert_id}")
        if resp.status != 200:
            return None
        try:
            window = resp.json()["suggestedWindow"]
            from datetime import datetime

            start = datetime.fromisoformat(str(window["start"]).replace("Z", "+00:00"))
            end = datetime.fromisoformat(str(window["end"]).replace("Z", "+00:00"))
        except (AcmeError, KeyError, TypeError, ValueError):
            return None
        if end <= start:
            return None
        return start.timestamp(), end.timestamp()

    # ---------------------------------------------------------------- revoke
    def revoke(self, cert: x509.Certificate, reason: int = 0) -> None:
        """Revoke with the account key (RFC 8555 7.6)."""
        assert self.kid is not None, "register() first"
        url = self.directory().get("revokeCert")
        if not url:
            raise AcmeError("the ACME directory has no revokeCert")
        der = cert.public_bytes(serialization.Encoding.DER)
        self.post(str(url), {"certificate": b64(der), "reason": reason})

    # ----------------------------------------------------------------- order
    def order(
        self,
        names: list[str],
        cert_key: CertKey,
        solvers: Sequence[Solver],
        replaces: str | None = None,
    ) -> bytes:
        """Order a certificate for ``names`` (SAN, the first one also the CN), answering
        each authorization with the first solver whose type the CA offers (wildcards only
        with dns-01); returns the PEM chain the CA sends (leaf first). ``replaces`` is the
        ARI id of the certificate being renewed, sent when the CA supports ARI."""
        assert self.kid is not None, "register() first"
        identifiers = [{"type": "dns", "value": n} for n in names]
        payload: dict[str, Any] = {"identifiers": identifiers}
        if replaces and self.directory().get("renewalInfo"):
            payload["replaces"] = replaces
        resp = self.post(self.directory()["newOrder"], payload)
        order_url = resp.headers.get("Location")
        order = resp.json()
        if not order_url:
            raise AcmeError("the CA sent no order URL (Location) for newOrder")
        log.info("acme: order %s created for %s", order_url, ", ".join(names))
        presented: list[tuple[Solver, str, str, str]] = []
        try:
            for authz_url in order.get("authorizations", []):
                self._authorize(str(authz_url), solvers, presented)
        finally:
            for solver, domain, token, key_auth in presented:
                try:
                    solver.cleanup(domain, token, key_auth)
                except (AcmeError, OSError) as exc:
                    log.warning("acme: %s cleanup for %s failed: %s", solver.type, domain, exc)
        order = self._poll(order_url, ("ready", "valid"), "order")
        if order.get("status") == "ready":
            csr = csr_der(names, cert_key)
            self.post(str(order["finalize"]), {"csr": b64(csr)})
            order = self._poll(order_url, ("valid",), "order")
        cert_url = order.get("certificate")
        if not cert_url:
            raise AcmeError("the order is valid but has no certificate URL")
        resp = self.post(str(cert_url), None)
        if b"-----BEGIN CERTIFICATE-----" not in resp.body:
            raise AcmeError("the CA's certificate download is not a PEM chain")
        return resp.body

    def _authorize(
        self, url: str, solvers: Sequence[Solver], presented: list[tuple[Solver, str, str, str]]
    ) -> None:
        authz = self.post(url, None).json()
        ident = str(authz.get("identifier", {}).get("value", "?"))
        if authz.get("status") == "valid":
            return  # the CA remembers an earlier validation
        wildcard = bool(authz.get("wildcard"))
        offered = {str(c.get("type")): c for c in authz.get("challenges", [])}
        usable = [s for s in solvers if s.type in offered and (s.type == "dns-01" or not wildcard)]
        if not usable:
            kinds = ", ".join(sorted(offered)) or "none"
            raise AcmeProblem(
                ERR + "noChallenge",
                f"for {'*.' if wildcard else ''}{ident} the CA offers {kinds}; allowed here: "
                + (", ".join(s.type for s in solvers) or "none"),
            )
        solver = usable[0]
        challenge = offered[solver.type]
        token = str(challenge["token"])
        key_auth = f"{token}.{self.thumbprint}"
        log.info("acme: answering %s for %s", solver.type, ident)
        solver.present(ident, token, key_auth)
        presented.append((solver, ident, token, key_auth))
        self.post(str(challenge["url"]), {})
        self._poll(url, ("valid",), f"authorization for {ident}")

    def _poll(self, url: str, done: tuple[str, ...], what: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.poll_timeout
        delay = 0.5
        while True:
            resp = self.post(url, None)
            data = resp.json()
            status = data.get("status")
            if status in done:
                return data
            if status == "invalid":
                raise invalid_problem(data, what)
            if time.monotonic() > deadline:
                raise AcmeProblem(
                    ERR + "timeout", f"{what} still {status} after {self.poll_timeout:.0f}s"
                )
            wait = _retry_after(resp.headers)
            self.sleep(min(wait if wait is not None else delay, 10.0))
            delay = min(delay * 2, 5.0)
