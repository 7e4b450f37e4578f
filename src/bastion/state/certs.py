"""ACME state: the account key, certificates and keys per name set, the issuance lock.

One ``CertStore`` per ACME directory (CA): staging and production never mix. The ACME
code (``bastion.acme``) reads and writes only through the ``CertStore`` protocol, so a
store shared between machines (Redis, with a lock so that one instance orders and all
serve) is one more module here. The SNI table reads certificates with ``usable``.

Certificates are served from local files (Python's ``ssl`` loads a chain only from a
file): ``files(names)`` says where; a backend that keeps them elsewhere mirrors them there.

``FileCertStore`` keeps today's layout under the data dir (``<host>`` is the ACME
directory's host)::

    acme/<host>/account.key          ECDSA P-256 account key (0600), created once
    acme/<host>/account.json         {"directory": ..., "url": ...}: the account URL for that key
    acme/<host>/.lock                held while the account is read or created
    certs/acme/<host>/<site>/cert.pem, key.pem   the chain (leaf first) and its key (0600)
    certs/acme/<host>/<site>/status.json         next renewal and last error (bastion certs)
    certs/acme/<host>/<site>/.lock               the issuance lock of that name set

``<site>`` is the first name, lower-cased, with anything but ``[A-Za-z0-9._-]`` replaced.
The locks are ``flock`` locks: they exclude other processes (several workers starting
together) and other threads alike. All of this is blocking I/O: callers on the event
loop go through ``asyncio.to_thread``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import urllib.parse
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bastion.state.files import atomic_write, ensure_dir, file_lock

__all__ = ["CertFiles", "CertStore", "FileCertStore", "safe_name", "usable"]

log = logging.getLogger("bastion.acme")
_PRIVATE = 0o600


@dataclass(frozen=True)
class CertFiles:
    """A stored certificate that is valid now, as local files."""

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


class CertStore(Protocol):
    """What the ACME code keeps for one CA. ``names`` is a name set as ordered (the
    first name identifies it)."""

    directory: str  # the ACME directory URL this store is for
    # whether other instances store certificates here too (then a running instance looks
    # for a newer one now and then: see ``serial``)
    shared: bool

    # account
    def account_lock(self) -> AbstractContextManager[None]:
        """Held while the account key is read or created and the account registered."""
        ...

    def read_account_key(self) -> bytes | None: ...

    def write_account_key(self, pem: bytes) -> None: ...

    def account_key_where(self) -> str:
        """Where the account key is kept (a file, or a key of a shared store): what an
        operator looks at when a message names the key."""
        ...

    def read_account_url(self) -> str | None:
        """The account URL registered for the stored key at this directory, if any."""
        ...

    def write_account_url(self, url: str) -> None: ...

    # certificates
    def issuance_lock(self, names: Sequence[str]) -> AbstractContextManager[None]:
        """Held while a certificate for ``names`` is looked up and ordered: whoever gets
        it second finds the new certificate and orders nothing."""
        ...

    def files(self, names: Sequence[str]) -> tuple[Path, Path]:
        """The local certificate chain and key files for ``names`` (may not exist)."""
        ...

    def read(self, names: Sequence[str]) -> tuple[bytes, bytes] | None:
        """The stored chain (PEM, leaf first) and key (PEM), or None."""
        ...

    def serial(self, names: Sequence[str]) -> int | None:
        """The serial of the stored certificate, as cheaply as the store can tell (None:
        none or unknown)."""
        ...

    def save(self, names: Sequence[str], chain: bytes, key: bytes) -> None:
        """Store a new pair; readers see the old pair or the new one (a reader that
        catches a new key with the old chain sees a mismatch, which ``usable`` rejects)."""
        ...

    def revoke(self, names: Sequence[str], serial: int) -> None:
        """Forget the pair and its status after the CA revoked it, and remember the
        revoked ``serial`` (see ``revoked``) until the next pair is saved."""
        ...

    def revoked(self, names: Sequence[str]) -> int | None:
        """The serial of the pair last revoked (None: none since the last save, or
        unknown): a running instance that serves it orders another."""
        ...

    def read_status(self, names: Sequence[str]) -> dict[str, object]:
        """Next renewal and last error, as written by ``update_status`` ({} if none)."""
        ...

    def update_status(self, names: Sequence[str], **fields: object) -> None:
        """Merge ``fields`` into the status (best effort: never raises for I/O)."""
        ...


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"


class FileCertStore:
    """The ``CertStore`` on the data dir (layout in the module doc)."""

    shared = False  # this machine's files: the certificate watcher sees their changes

    def __init__(self, data_dir: Path, directory: str) -> None:
        self.directory = directory
        host = urllib.parse.urlsplit(directory).netloc or "acme"
        self.account_dir = data_dir / "acme" / safe_name(host)
        self.cert_root = data_dir / "certs" / "acme" / safe_name(host)

    # ---------------------------------------------------------------- account
    def account_lock(self) -> AbstractContextManager[None]:
        return file_lock(ensure_dir(self.account_dir) / ".lock")

    def read_account_key(self) -> bytes | None:
        try:
            return (self.account_dir / "account.key").read_bytes()
        except FileNotFoundError:
            return None

    def write_account_key(self, pem: bytes) -> None:
        atomic_write(ensure_dir(self.account_dir) / "account.key", pem, _PRIVATE)

    def account_key_where(self) -> str:
        return str(self.account_dir / "account.key")

    def read_account_url(self) -> str | None:
        try:
            info = json.loads((self.account_dir / "account.json").read_text())
            url = info.get("url") if info.get("directory") == self.directory else None
        except (OSError, ValueError, AttributeError):
            return None
        return str(url) if url else None

    def write_account_url(self, url: str) -> None:
        record = {"directory": self.directory, "url": url}
        atomic_write(ensure_dir(self.account_dir) / "account.json", json.dumps(record).encode())

    # ------------------------------------------------------------ certificates
    def site_dir(self, names: Sequence[str]) -> Path:
        return self.cert_root / safe_name(names[0].lower())

    def issuance_lock(self, names: Sequence[str]) -> AbstractContextManager[None]:
        return file_lock(ensure_dir(self.site_dir(names)) / ".lock")

    def files(self, names: Sequence[str]) -> tuple[Path, Path]:
        directory = self.site_dir(names)
        return directory / "cert.pem", directory / "key.pem"

    def read(self, names: Sequence[str]) -> tuple[bytes, bytes] | None:
        cert, key = self.files(names)
        try:
            return cert.read_bytes(), key.read_bytes()
        except OSError:
            return None

    def serial(self, names: Sequence[str]) -> int | None:
        try:
            return x509.load_pem_x509_certificate(self.files(names)[0].read_bytes()).serial_number
        except (OSError, ValueError):
            return None

    def save(self, names: Sequence[str], chain: bytes, key: bytes) -> None:
        ensure_dir(self.site_dir(names))
        cert_path, key_path = self.files(names)
        # the key first: a crash in between leaves a mismatch that usable() rejects
        atomic_write(key_path, key, _PRIVATE)
        atomic_write(cert_path, chain)
        (self.site_dir(names) / "revoked").unlink(missing_ok=True)

    def revoke(self, names: Sequence[str], serial: int) -> None:
        directory = self.site_dir(names)
        # the mark first: a crash in between leaves the pair with its mark, which a
        # running instance reads as revoked all the same
        atomic_write(ensure_dir(directory) / "revoked", f"{serial:x}\n".encode())
        for name in ("cert.pem", "key.pem", "status.json"):
            (directory / name).unlink(missing_ok=True)

    def revoked(self, names: Sequence[str]) -> int | None:
        try:
            return int((self.site_dir(names) / "revoked").read_text().strip(), 16)
        except (OSError, ValueError):
            return None

    def status_path(self, names: Sequence[str]) -> Path:
        return self.site_dir(names) / "status.json"

    def read_status(self, names: Sequence[str]) -> dict[str, object]:
        try:
            current = json.loads(self.status_path(names).read_text())
        except (OSError, ValueError):
            return {}
        return current if isinstance(current, dict) else {}

    def update_status(self, names: Sequence[str], **fields: object) -> None:
        path = self.status_path(names)
        current = self.read_status(names)
        current.update(fields)
        try:
            ensure_dir(path.parent)
            atomic_write(path, json.dumps(current).encode())
        except OSError as exc:
            log.debug("acme: cannot write %s: %s", path, exc)


def usable(
    store: CertStore, names: Sequence[str], now: dt.datetime | None = None
) -> CertFiles | None:
    """The stored certificate for exactly these names, if it is valid now, covers them
    all and matches its key (it may already be due for renewal)."""
    pair = store.read(names)
    if pair is None:
        return None
    try:
        cert = x509.load_pem_x509_certificate(pair[0])
        key = serialization.load_pem_private_key(pair[1], password=None)
    except (ValueError, TypeError):
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
    cert_path, key_path = store.files(names)
    return CertFiles(cert_path, key_path, end, start, cert.serial_number)
