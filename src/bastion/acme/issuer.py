"""Issuance: the account, stored certificates, ordering under the store's lock.

The issuer is told names and hands back certificates (``CertFiles``); it keeps nothing
itself: the account key, certificates and the issuance lock are the ``CertStore``'s
(``bastion.state.certs``), HTTP-01 answers go to ``ChallengeTokens``
(``bastion.state.challenges``). Several workers may start together: ordering for a name
set happens under its issuance lock, and whoever gets the lock second finds the stored
certificate and orders nothing. All of this is blocking I/O: the worker calls it through
``asyncio.to_thread``.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bastion.acme.client import AcmeClient, Solver
from bastion.acme.jws import CertKey, Eab, ari_cert_id
from bastion.acme.problems import AcmeError, AcmeProblem
from bastion.acme.solvers import Dns01Solver, DnsHook, Http01Solver, TlsAlpn01Solver
from bastion.state.certs import CertFiles, CertStore, usable
from bastion.state.challenges import ChallengeCertificates, ChallengeTokens

__all__ = ["AcmeIssuer", "AcmeSettings", "new_cert_key"]

log = logging.getLogger("bastion.acme")


@dataclass(frozen=True)
class AcmeSettings:
    directory: str
    email: str | None = None
    trusted_roots: str | None = None
    challenges: tuple[str, ...] = ("http-01",)
    dns_hook: DnsHook | None = None
    eab: Eab | None = None
    key_type: str = "ecdsa-p256"


def new_cert_key(key_type: str) -> CertKey:
    if key_type == "rsa2048":
        return rsa.generate_private_key(65537, 2048)
    if key_type == "rsa3072":
        return rsa.generate_private_key(65537, 3072)
    return ec.generate_private_key(ec.SECP256R1())


def _key_type_of(key: object) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return f"rsa{key.key_size}"
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1":
        return "ecdsa-p256"
    return "other"


def _key_pem(key: CertKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class AcmeIssuer:
    """Certificates from one CA (``settings.directory``), kept in ``certs``.

    ``alpn_data_dir`` is the local data dir under which TLS-ALPN-01 challenge certificates
    are written for this machine's https listeners (see ``solvers.alpn_dir``).
    """

    def __init__(
        self,
        settings: AcmeSettings,
        certs: CertStore,
        tokens: ChallengeTokens,
        alpn_data_dir: Path,
    ) -> None:
        self.settings = settings
        self.certs = certs
        self.challenges = tokens
        self.alpn_data_dir = alpn_data_dir
        self._client: AcmeClient | None = None
        # serials this issuer ordered (not those taken up from the store: another worker's
        # or instance's order), for the metrics
        self.ordered: set[int] = set()

    # ----------------------------------------------------------------- stored
    def stored(self, names: list[str], now: dt.datetime | None = None) -> CertFiles | None:
        """The stored certificate for exactly these names, if it is valid now, covers them
        all and matches its key (it may already be due for renewal: see ``due``)."""
        return usable(self.certs, names, now)

    def due(self, found: CertFiles, now: dt.datetime | None = None) -> bool:
        """Past two thirds of its lifetime, or ordered with another key type than the one
        configured now."""
        now = now or dt.datetime.now(dt.UTC)
        if now >= found.renew_at():
            return True
        try:
            key = serialization.load_pem_private_key(found.key.read_bytes(), password=None)
        except (OSError, ValueError, TypeError):
            return True
        return _key_type_of(key) != self.settings.key_type

    def write_status(self, names: list[str], **fields: object) -> None:
        """Next renewal and last error, for ``bastion certs list`` (best effort)."""
        self.certs.update_status(names, **fields)

    # ---------------------------------------------------------------- account
    def client(self) -> AcmeClient:
        if self._client is None:
            with self.certs.account_lock():
                pem = self.certs.read_account_key()
                if pem is None:
                    pem = _key_pem(ec.generate_private_key(ec.SECP256R1()))
                    self.certs.write_account_key(pem)
                    log.info("acme: created the account key %s", self.certs.account_key_where())
                key = serialization.load_pem_private_key(pem, password=None)
                if not isinstance(key, ec.EllipticCurvePrivateKey):
                    raise ValueError(f"{self.certs.account_key_where()} is not an ECDSA key")
                client = AcmeClient(
                    self.settings.directory, key, cafile=self.settings.trusted_roots
                )
                kid = self.certs.read_account_url()
                if kid:
                    client.kid = kid
                else:
                    kid = client.register(self.settings.email, self.settings.eab)
                    self.certs.write_account_url(kid)
                    log.info("acme: account %s registered with %s", kid, self.settings.directory)
            self._client = client
        return self._client

    # ------------------------------------------------------------------ order
    def solvers(self) -> list[Solver]:
        made: list[Solver] = []
        for kind in self.settings.challenges:
            if kind == "http-01":
                made.append(Http01Solver(self.challenges))
            elif kind == "tls-alpn-01":
                shared = self.challenges
                made.append(
                    TlsAlpn01Solver(
                        self.alpn_data_dir,
                        shared if isinstance(shared, ChallengeCertificates) else None,
                    )
                )
            elif kind == "dns-01" and self.settings.dns_hook is not None:
                made.append(Dns01Solver(self.settings.dns_hook))
        return made

    def obtain(
        self, names: list[str], *, force: bool = False, replacing: int | None = None
    ) -> CertFiles:
        """A valid certificate for ``names``: the stored one unless it is due (or ``force``),
        else a new order. ``replacing`` is the serial the caller serves: when the store
        already holds another one (a second worker or ``bastion certs renew`` renewed
        it), that one is returned and nothing is ordered. Blocking."""
        with self.certs.issuance_lock(names):
            found = self.stored(names)
            if found is not None:
                if replacing is not None and found.serial != replacing:
                    return found
                if not force and not self.due(found):
                    return found
            client = self.client()
            log.info(
                "acme: ordering a certificate for %s from %s",
                ", ".join(names),
                client.directory_url,
            )
            cert_key = new_cert_key(self.settings.key_type)
            replaces = ari_cert_id(found.load()) if found is not None else None
            chain = client.order(names, cert_key, self.solvers(), replaces=replaces)
            self.certs.save(names, chain, _key_pem(cert_key))
            found = self.stored(names)
            if found is None:
                raise ValueError("the CA issued a certificate that does not cover the names")
            self.ordered.add(found.serial)
            log.info(
                "acme: certificate for %s obtained, valid until %s",
                ", ".join(names),
                found.not_after.isoformat(timespec="seconds"),
            )
            return found

    def renewal_window(self, found: CertFiles) -> tuple[float, float] | None:
        """The CA's ARI window for the certificate, or None (no ARI, or unreachable)."""
        try:
            return self.client().renewal_window(found.load())
        except (AcmeError, OSError, ValueError) as exc:
            log.debug("acme: no renewal information: %s", exc)
            return None

    def revoke(self, names: list[str]) -> CertFiles:
        """Revoke the stored certificate with the account key and remove it from the store."""
        with self.certs.issuance_lock(names):
            found = self.stored(names)
            if found is None:
                raise ValueError(f"no valid stored certificate for {', '.join(names)}")
            try:
                self.client().revoke(found.load())
            except AcmeProblem as problem:
                # revoked by an earlier run that could not tell the store: tell it now
                if not problem.type.endswith(":alreadyRevoked"):
                    raise
            self.certs.revoke(names, found.serial)
            return found
