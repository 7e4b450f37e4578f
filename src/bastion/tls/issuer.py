"""ACME certificates on disk: the account, stored certificates, ordering under a lock.

Layout under the data dir (``<host>`` is the ACME directory's host, so staging and
production never mix)::

    acme/<host>/account.key          ECDSA P-256 account key (0600), created once
    acme/<host>/account.json         the account URL for that key
    certs/acme/<host>/<site>/cert.pem, key.pem   the chain (leaf first) and its key (0600)
    certs/acme/<host>/<site>/status.json         next renewal and last error (bastion certs)

Several workers may start together: ordering for a site happens under a file lock in the
site's directory, and whoever gets the lock second finds the stored certificate and orders
nothing. All of this is blocking I/O: the worker calls it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bastion.tls.acme import AcmeClient, AcmeError, CertKey, Eab, Solver, ari_cert_id
from bastion.tls.challenges import ChallengeStore
from bastion.tls.solvers import Dns01Solver, DnsHook, Http01Solver, TlsAlpn01Solver
from bastion.tls.store import atomic_write, ensure_dir, file_lock, resolve_data_dir

if TYPE_CHECKING:
    from bastion.config.models import Config

__all__ = [
    "AcmeIssuer",
    "AcmeSettings",
    "CertFiles",
    "default_challenges",
    "issuer_for",
    "new_cert_key",
]

log = logging.getLogger("bastion.acme")
_PRIVATE = 0o600


@dataclass(frozen=True)
class AcmeSettings:
    directory: str
    email: str | None = None
    trusted_roots: str | None = None
    challenges: tuple[str, ...] = ("http-01",)
    dns_hook: DnsHook | None = None
    eab: Eab | None = None
    key_type: str = "ecdsa-p256"


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path
    not_after: dt.datetime
    not_before: dt.datetime = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    serial: int = 0

    def renew_at(self) -> dt.datetime:
        """Two thirds into the lifetime (the default schedule without ARI)."""
        return self.not_before + (self.not_after - self.not_before) * 2 / 3

    def load(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert.read_bytes())


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


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"


class AcmeIssuer:
    def __init__(self, data_dir: Path, settings: AcmeSettings) -> None:
        self.settings = settings
        host = urllib.parse.urlsplit(settings.directory).netloc or "acme"
        self.account_dir = data_dir / "acme" / _safe(host)
        self.cert_root = data_dir / "certs" / "acme" / _safe(host)
        self.challenges = ChallengeStore(data_dir)
        self._client: AcmeClient | None = None

    # ----------------------------------------------------------------- stored
    def site_dir(self, names: list[str]) -> Path:
        return self.cert_root / _safe(names[0].lower())

    def stored(self, names: list[str], now: dt.datetime | None = None) -> CertFiles | None:
        """The stored certificate for exactly these names, if it is valid now, covers them
        all and matches its key (it may already be due for renewal: see ``due``)."""
        directory = self.site_dir(names)
        files = (directory / "cert.pem", directory / "key.pem")
        try:
            cert = x509.load_pem_x509_certificate(files[0].read_bytes())
            key = serialization.load_pem_private_key(files[1].read_bytes(), password=None)
        except (OSError, ValueError, TypeError):
            return None
        if key.public_key() != cert.public_key():
            return None
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return None
        covered = {n.lower() for n in san.get_values_for_type(x509.DNSName)}
        if not {n.lower() for n in names} <= covered:
            return None
        now = now or dt.datetime.now(dt.UTC)
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        if now >= end:
            return None
        return CertFiles(files[0], files[1], end, start, cert.serial_number)

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

    def status_path(self, names: list[str]) -> Path:
        return self.site_dir(names) / "status.json"

    def write_status(self, names: list[str], **fields: object) -> None:
        """Next renewal and last error, for ``bastion certs list`` (best effort)."""
        path = self.status_path(names)
        try:
            current = json.loads(path.read_text())
        except (OSError, ValueError):
            current = {}
        current.update(fields)
        try:
            ensure_dir(path.parent)
            atomic_write(path, json.dumps(current).encode())
        except OSError as exc:
            log.debug("acme: cannot write %s: %s", path, exc)

    # ---------------------------------------------------------------- account
    def client(self) -> AcmeClient:
        if self._client is None:
            ensure_dir(self.account_dir)
            key_path = self.account_dir / "account.key"
            info_path = self.account_dir / "account.json"
            with file_lock(self.account_dir / ".lock"):
                if not key_path.exists():
                    atomic_write(
                        key_path, _key_pem(ec.generate_private_key(ec.SECP256R1())), _PRIVATE
                    )
                    log.info("acme: created the account key %s", key_path)
                key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
                if not isinstance(key, ec.EllipticCurvePrivateKey):
                    raise ValueError(f"{key_path} is not an ECDSA key")
                client = AcmeClient(
                    self.settings.directory, key, cafile=self.settings.trusted_roots
                )
                try:
                    info = json.loads(info_path.read_text())
                    kid = (
                        info.get("url")
                        if info.get("directory") == self.settings.directory
                        else None
                    )
                except (OSError, ValueError, AttributeError):
                    kid = None
                if kid:
                    client.kid = str(kid)
                else:
                    kid = client.register(self.settings.email, self.settings.eab)
                    record = {"directory": self.settings.directory, "url": kid}
                    atomic_write(info_path, json.dumps(record).encode())
                    log.info("acme: account %s registered with %s", kid, self.settings.directory)
            self._client = client
        return self._client

    # ------------------------------------------------------------------ order
    def solvers(self) -> list[Solver]:
        data_dir = self.account_dir.parents[1]
        made: list[Solver] = []
        for kind in self.settings.challenges:
            if kind == "http-01":
                made.append(Http01Solver(self.challenges))
            elif kind == "tls-alpn-01":
                made.append(TlsAlpn01Solver(data_dir))
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
        directory = ensure_dir(self.site_dir(names))
        with file_lock(directory / ".lock"):
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
            # the key first: a crash in between leaves a mismatch that stored() rejects
            atomic_write(directory / "key.pem", _key_pem(cert_key), _PRIVATE)
            atomic_write(directory / "cert.pem", chain)
            found = self.stored(names)
            if found is None:
                raise ValueError("the CA issued a certificate that does not cover the names")
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
        directory = self.site_dir(names)
        with file_lock(ensure_dir(directory) / ".lock"):
            found = self.stored(names)
            if found is None:
                raise ValueError(f"no valid stored certificate for {', '.join(names)}")
            self.client().revoke(found.load())
            for name in ("cert.pem", "key.pem", "status.json"):
                (directory / name).unlink(missing_ok=True)
            return found


def default_challenges(config: Config) -> tuple[str, ...]:
    """http-01 when an http listener exists, else tls-alpn-01; dns-01 too with a hook
    (wildcard authorizations only accept dns-01)."""
    acme = config.acme
    if acme.challenges:
        return tuple(acme.challenges)
    chosen = ["http-01"] if config.listen.http else ["tls-alpn-01"]
    if acme.dns_hook is not None:
        chosen.append("dns-01")
    return tuple(chosen)


def issuer_for(config: Config) -> AcmeIssuer:
    """The issuer for a config's ``acme`` settings and data dir."""
    acme = config.acme
    hook = (
        DnsHook(list(acme.dns_hook.command), acme.dns_hook.timeout, acme.dns_hook.propagation)
        if acme.dns_hook is not None
        else None
    )
    eab = (
        Eab(acme.eab.key_id, acme.eab.hmac_key.get_secret_value()) if acme.eab is not None else None
    )
    settings = AcmeSettings(
        acme.directory,
        acme.email,
        acme.trusted_roots,
        default_challenges(config),
        hook,
        eab,
        acme.key_type,
    )
    return AcmeIssuer(resolve_data_dir(config.data_dir), settings)
