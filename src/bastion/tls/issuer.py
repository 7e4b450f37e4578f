"""ACME certificates on disk: the account, stored certificates, ordering under a lock.

Layout under the data dir (``<host>`` is the ACME directory's host, so staging and
production never mix)::

    acme/<host>/account.key          ECDSA P-256 account key (0600), created once
    acme/<host>/account.json         the account URL for that key
    certs/acme/<host>/<site>/cert.pem, key.pem   the chain (leaf first) and its key (0600)

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
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.tls.acme import AcmeClient
from bastion.tls.challenges import ChallengeStore
from bastion.tls.store import atomic_write, ensure_dir, file_lock, resolve_data_dir

if TYPE_CHECKING:
    from bastion.config.models import Config

__all__ = ["AcmeIssuer", "AcmeSettings", "CertFiles", "issuer_for"]

log = logging.getLogger("bastion.acme")
_PRIVATE = 0o600


@dataclass(frozen=True)
class AcmeSettings:
    directory: str
    email: str | None = None
    trusted_roots: str | None = None


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path
    not_after: dt.datetime


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
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
        all, matches its key and has more than a third of its lifetime left."""
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
        if now >= end - (end - start) / 3:
            return None
        return CertFiles(files[0], files[1], end)

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
                    kid = client.register(self.settings.email)
                    record = {"directory": self.settings.directory, "url": kid}
                    atomic_write(info_path, json.dumps(record).encode())
                    log.info("acme: account %s registered with %s", kid, self.settings.directory)
            self._client = client
        return self._client

    # ------------------------------------------------------------------ order
    def obtain(self, names: list[str]) -> CertFiles:
        """A valid certificate for ``names``: the stored one, or a new order. Blocking."""
        directory = ensure_dir(self.site_dir(names))
        with file_lock(directory / ".lock"):
            found = self.stored(names)
            if found is not None:
                return found
            client = self.client()
            log.info(
                "acme: ordering a certificate for %s from %s",
                ", ".join(names),
                client.directory_url,
            )
            cert_key = ec.generate_private_key(ec.SECP256R1())
            chain = client.order(
                names, cert_key, self.challenges.publish, self.challenges.unpublish
            )
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


def issuer_for(config: Config) -> AcmeIssuer:
    """The issuer for a config's ``acme`` settings and data dir."""
    settings = AcmeSettings(config.acme.directory, config.acme.email, config.acme.trusted_roots)
    return AcmeIssuer(resolve_data_dir(config.data_dir), settings)
