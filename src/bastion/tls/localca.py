"""A local certificate authority for development and private names.

The root (ECDSA P-256, 10 years) is created once under ``<data dir>/ca/`` and reused;
leaf certificates (ECDSA P-256, 7 days) are issued on demand for a set of names, cached
under ``<data dir>/certs/local/`` and re-issued when less than a third of their lifetime
is left. Private keys are written 0600, every file atomically.

Browsers and tools trust leaves only once the root is installed: ``bastion trust``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bastion.state.files import atomic_write, ensure_dir, file_lock
from bastion.tls.certfile import leaf_is_fresh

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

# cryptography (about 7 MiB) is imported by the functions that create or parse keys and
# certificates: a worker whose leaves are fresh checks them without it (tls/certfile.py)

__all__ = ["LEAF_LIFETIME", "ROOT_LIFETIME", "LocalCA", "san_entries"]

log = logging.getLogger("bastion.tls")

ROOT_LIFETIME = dt.timedelta(days=3650)
# Short-lived leaves: a leaked key is useless within a week, and renewal is exercised often.
LEAF_LIFETIME = dt.timedelta(days=7)
_BACKDATE = dt.timedelta(minutes=5)  # tolerate clocks a little behind ours
_PRIVATE = 0o600


@dataclass(frozen=True)
class LeafFiles:
    cert: Path  # leaf then root: the chain a client needs
    key: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def san_entries(names: list[str]) -> list[x509.GeneralName]:
    """DNS names and IP addresses (``[::1]`` or ``::1``) as subjectAltName entries."""
    from cryptography import x509

    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name.strip("[]"))))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


class LocalCA:
    def __init__(self, data_dir: Path, clock: Callable[[], dt.datetime] | None = None) -> None:
        self.now = clock or _now  # injectable for tests of expiry
        self.dir = data_dir / "ca"
        self.leaf_dir = data_dir / "certs" / "local"
        self.root_cert_path = self.dir / "root.crt"
        self.root_key_path = self.dir / "root.key"
        self._root: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None

    # ------------------------------------------------------------------ root
    def root(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """Load the root, creating it on first use."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        if self._root is None:
            ensure_dir(self.dir)
            with file_lock(self.dir / ".lock"):
                if not (self.root_cert_path.exists() and self.root_key_path.exists()):
                    self._create_root()
                cert = x509.load_pem_x509_certificate(self.root_cert_path.read_bytes())
                key = serialization.load_pem_private_key(
                    self.root_key_path.read_bytes(), password=None
                )
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{self.root_key_path} is not an ECDSA key")
            self._root = (cert, key)
        return self._root

    def _create_root(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.x509.oid import NameOID

        key = _new_key()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bastion"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"bastion local CA {socket.gethostname()}"),
            ]
        )
        now = self.now()
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + ROOT_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        # the key first: a cert without its key would be a root nobody can use
        atomic_write(self.root_key_path, _key_pem(key), _PRIVATE)
        atomic_write(self.root_cert_path, cert.public_bytes(serialization.Encoding.PEM))
        log.info(
            "created the local CA root %s (install it with: bastion trust)", self.root_cert_path
        )

    def root_fingerprint(self) -> str:
        from cryptography.hazmat.primitives import hashes

        cert, _ = self.root()
        return cert.fingerprint(hashes.SHA256()).hex(":")

    # ---------------------------------------------------------------- leaves
    def leaf(self, names: list[str], *, force: bool = False) -> LeafFiles:
        """Certificate and key files for ``names`` (the first one is the subject),
        issued now unless a cached one is still fresh (or ``force``: a renewal asked for)."""
        unique = list(dict.fromkeys(n.lower() for n in names))
        digest = hashlib.sha256("\n".join(sorted(unique)).encode()).hexdigest()[:12]
        stem = unique[0].replace("*", "_wildcard").strip("[]").replace(":", "_")
        files = LeafFiles(
            self.leaf_dir / f"{stem}-{digest}.crt", self.leaf_dir / f"{stem}-{digest}.key"
        )
        ensure_dir(self.leaf_dir)
        with file_lock(self.leaf_dir / ".lock"):
            if force or not self._fresh(files):
                self._issue(unique, files)
        return files

    def _fresh(self, files: LeafFiles) -> bool:
        fresh = leaf_is_fresh(files.cert, files.key, self.root_cert_path, self.now().timestamp())
        if fresh is not None:
            return fresh
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        try:
            cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
            key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
        except (OSError, ValueError, TypeError):
            return False
        if key.public_key() != cert.public_key():
            return False  # a crash between writing the key and the certificate
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        root, _ = self.root()
        if cert.issuer != root.subject:
            return False  # issued by a root that has since been replaced
        # re-issue within the last third of the lifetime
        return self.now() < end - (end - start) / 3

    def _issue(self, names: list[str], files: LeafFiles) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        root, root_key = self.root()
        key = _new_key()
        now = self.now()
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])]))
            .issuer_name(root.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + LEAF_LIFETIME)
            .add_extension(x509.SubjectAlternativeName(san_entries(names)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
                critical=False,
            )
            .sign(root_key, hashes.SHA256())
        )
        chain = cert.public_bytes(serialization.Encoding.PEM) + root.public_bytes(
            serialization.Encoding.PEM
        )
        atomic_write(files.key, _key_pem(key), _PRIVATE)
        atomic_write(files.cert, chain)
        log.info("local CA issued a certificate for %s", ", ".join(names))
