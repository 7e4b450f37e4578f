"""The ``CertStore`` in Redis: one ACME account, one certificate per name set and one
issuance lock for every instance that names the same server and ``state.key_prefix``.

Keys (``<p>`` is the key prefix, ``<ca>`` the ACME directory's host, ``<site>`` the name
set's first name as in the file layout); the braces are the hash tag, so that a name set's
pair and lock live on one Cluster node::

    <p>{acme:<ca>}:account            hash: key (PEM, sealed), url
    <p>{acme:<ca>}:account-lock       the account lock (created once for all instances)
    <p>{cert:<ca>:<site>}:pair        hash: chain, key (sealed), serial (hex), status (JSON)
    <p>{cert:<ca>:<site>}:lock        the issuance lock (`RedisLock`)

Every instance keeps a local copy in its data dir, the ``FileCertStore`` layout: Python's
``ssl`` loads certificates from files only, and losing Redis must never lose a
certificate. Writes go to the local copy first, then to Redis; reads ask Redis first and
write a newer pair through to the local copy; when Redis does not answer, the local copy
is used (logged once when Redis stops answering and once when it answers again) and the
locks fall back to the local file locks (instances then may order on their own: a
certificate too many beats an expired one).

Private keys are sealed with ``state.encryption_key`` when one is set (`Sealer`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cryptography import x509
from redis.exceptions import RedisError

from bastion.config.state_values import encryption_key_bytes, redis_target
from bastion.state.certs import FileCertStore, safe_name
from bastion.state.redis_lock import LockTimeout, RedisLock
from bastion.state.redis_sync import connect_sync
from bastion.state.sealing import Sealer

if TYPE_CHECKING:
    from bastion.config.state_models import State

__all__ = ["RedisCertStore"]

log = logging.getLogger("bastion.acme")

_T = TypeVar("_T")


class _Down(Exception):
    """Redis did not answer (already logged)."""


class RedisCertStore:
    """A ``CertStore`` shared through Redis, with a local copy in ``local``."""

    shared = True  # other instances may store a certificate: worth checking for one

    def __init__(
        self,
        settings: State,
        local: FileCertStore,
        lock_ttl: float = 30.0,
        lock_wait: float = 600.0,
    ) -> None:
        assert settings.redis is not None
        self.directory = local.directory
        self.local = local
        self.target = redis_target(settings.redis)
        secret = settings.encryption_key
        self.sealer = Sealer(
            encryption_key_bytes(secret.get_secret_value()) if secret is not None else None
        )
        self.client: Any = connect_sync(settings)
        self.lock_ttl = lock_ttl
        self.lock_wait = lock_wait
        ca = safe_name(urllib.parse.urlsplit(self.directory).netloc or "acme")
        self.prefix = settings.key_prefix
        self.account = f"{self.prefix}{{acme:{ca}}}:account"
        self.ca = ca
        self.down = False
        self.guard = threading.Lock()  # `down` changes from several threads

    # ---------------------------------------------------------------- Redis
    def _call(self, work: Callable[[Any], _T]) -> _T:
        """``work(client)``; `_Down` when Redis does not answer (logged once)."""
        try:
            result = work(self.client)
        except LockTimeout:
            raise  # Redis answers: another instance holds the lock
        except (RedisError, OSError) as exc:
            with self.guard:
                was, self.down = self.down, True
            if not was:
                log.warning(
                    "acme: certificate store %s unreachable (%s): serving and renewing from "
                    "the local copies until it answers again",
                    self.target,
                    exc,
                )
            raise _Down from exc
        with self.guard:
            was, self.down = self.down, False
        if was:
            log.warning("acme: certificate store %s answers again", self.target)
        return result

    def pair_key(self, names: Sequence[str]) -> str:
        return f"{self.prefix}{{cert:{self.ca}:{safe_name(names[0].lower())}}}:pair"

    def lock_key(self, names: Sequence[str]) -> str:
        return f"{self.prefix}{{cert:{self.ca}:{safe_name(names[0].lower())}}}:lock"

    @contextmanager
    def _lock(
        self, key: str, fallback: Callable[[], AbstractContextManager[None]]
    ) -> Iterator[None]:
        lock = RedisLock(self.client, key, self.lock_ttl, self.lock_wait, on_wait=_waiting(key))
        try:
            self._call(lambda _client: lock.acquire())
        except _Down:
            with fallback():
                yield
            return
        try:
            yield
        finally:
            lock.release()

    # ---------------------------------------------------------------- account
    def account_lock(self) -> AbstractContextManager[None]:
        return self._lock(f"{self.prefix}{{acme:{self.ca}}}:account-lock", self.local.account_lock)

    def read_account_key(self) -> bytes | None:
        where = f"{self.account}#key"
        try:
            sealed = self._call(lambda r: r.hget(self.account, "key"))
        except _Down:
            return self.local.read_account_key()
        if sealed is None:
            # an instance that had an account before Redis was configured shares it
            pem = self.local.read_account_key()
            if pem is not None:
                shared = self.sealer.seal(pem, where)
                self._try(lambda r: r.hsetnx(self.account, "key", shared))
            return pem
        pem = self.sealer.open(bytes(sealed), where)
        if self.local.read_account_key() != pem:
            self.local.write_account_key(pem)
        return pem

    def write_account_key(self, pem: bytes) -> None:
        self.local.write_account_key(pem)
        sealed = self.sealer.seal(pem, f"{self.account}#key")
        self._try(lambda r: r.hset(self.account, "key", sealed))

    def account_key_where(self) -> str:
        return f"{self.account} in Redis (copy: {self.local.account_key_where()})"

    def read_account_url(self) -> str | None:
        try:
            url = self._call(lambda r: r.hget(self.account, "url"))
        except _Down:
            return self.local.read_account_url()
        # none: registering the shared key again gives back its account URL (RFC 8555 7.3.1)
        return bytes(url).decode() if url else None

    def write_account_url(self, url: str) -> None:
        self.local.write_account_url(url)
        self._try(lambda r: r.hset(self.account, "url", url))

    def _try(self, work: Callable[[Any], object]) -> None:
        with contextlib.suppress(_Down):  # (the local copy has it)
            self._call(work)

    # ------------------------------------------------------------ certificates
    def issuance_lock(self, names: Sequence[str]) -> AbstractContextManager[None]:
        return self._lock(self.lock_key(names), lambda: self.local.issuance_lock(names))

    def files(self, names: Sequence[str]) -> tuple[Path, Path]:
        return self.local.files(names)

    def read(self, names: Sequence[str]) -> tuple[bytes, bytes] | None:
        key = self.pair_key(names)
        local = self.local.read(names)
        try:
            chain, sealed, revoked = self._call(lambda r: r.hmget(key, "chain", "key", "revoked"))
        except _Down:
            return local
        if chain is None or sealed is None:
            if revoked and local is not None and _serial_of(local[0]) == int(bytes(revoked), 16):
                # revoked on another machine: this copy goes too
                self.local.revoke(names, int(bytes(revoked), 16))
                return None
            # nothing shared: this instance's own copy, if any (never pushed back: a
            # certificate revoked and removed elsewhere would come back)
            return local
        pair = bytes(chain), self.sealer.open(bytes(sealed), f"{key}#key")
        if local == pair:
            return local
        if local is not None and _newer(local[0], pair[0]):
            # stored here while Redis was unreachable: share it now
            self._store(names, *local)
            return local
        self.local.save(names, *pair)
        return pair

    def serial(self, names: Sequence[str]) -> int | None:
        """The serial of the shared certificate (one small read), None if unknown."""
        try:
            value = self._call(lambda r: r.hget(self.pair_key(names), "serial"))
        except _Down:
            return None
        return int(bytes(value), 16) if value else None

    def save(self, names: Sequence[str], chain: bytes, key: bytes) -> None:
        self.local.save(names, chain, key)
        self._store(names, chain, key)

    def _store(self, names: Sequence[str], chain: bytes, key: bytes) -> None:
        name = self.pair_key(names)
        try:
            serial = f"{x509.load_pem_x509_certificate(chain).serial_number:x}"
        except ValueError:
            serial = ""
        fields = {"chain": chain, "key": self.sealer.seal(key, f"{name}#key"), "serial": serial}
        # one HSET: readers see the old pair or the new one (a revoked mark left beside a
        # pair for a moment is ignored: a pair present is served)
        self._try(lambda r: r.hset(name, mapping=fields))
        self._try(lambda r: r.hdel(name, "revoked"))

    def revoke(self, names: Sequence[str], serial: int) -> None:
        self.local.revoke(names, serial)
        key = self.pair_key(names)
        # the pair's fields go, the revoked serial stays: the instances that serve it
        # (and an instance started later with it in its own copy) order another
        try:
            self._call(lambda r: r.hset(key, "revoked", f"{serial:x}"))
            self._call(lambda r: r.hdel(key, "chain", "key", "serial"))
        except _Down as exc:
            raise OSError(
                f"the CA revoked it and this machine's copy is gone, but the certificate "
                f"store {self.target} is unreachable: the other instances keep serving it; "
                f"run the command again once Redis answers"
            ) from exc

    def revoked(self, names: Sequence[str]) -> int | None:
        try:
            value = self._call(lambda r: r.hget(self.pair_key(names), "revoked"))
        except _Down:
            return self.local.revoked(names)
        return int(bytes(value), 16) if value else None

    def read_status(self, names: Sequence[str]) -> dict[str, object]:
        try:
            text = self._call(lambda r: r.hget(self.pair_key(names), "status"))
        except _Down:
            return self.local.read_status(names)
        try:
            current = json.loads(text) if text else {}
        except ValueError:
            return {}
        return current if isinstance(current, dict) else {}

    def update_status(self, names: Sequence[str], **fields: object) -> None:
        self.local.update_status(names, **fields)
        current = self.read_status(names)
        current.update(fields)
        text = json.dumps(current)
        self._try(lambda r: r.hset(self.pair_key(names), "status", text))


def _waiting(key: str) -> Callable[[str], None]:
    def told(holder: str) -> None:
        log.info("acme: %s is held by %s; waiting for it", key, holder)

    return told


def _serial_of(chain: bytes) -> int | None:
    try:
        return x509.load_pem_x509_certificate(chain).serial_number
    except ValueError:
        return None


def _newer(chain: bytes, than: bytes) -> bool:
    """Whether the leaf of ``chain`` was issued after the leaf of ``than``."""
    try:
        mine = x509.load_pem_x509_certificate(chain)
        other = x509.load_pem_x509_certificate(than)
    except ValueError:
        return False
    return mine.not_valid_before_utc > other.not_valid_before_utc
