"""API keys of named consumers, stored hashed: the interface and the file store.

A key is ``bk_<id>_<secret>``: the id (8 hex digits) names the key in listings and logs, the
secret is 32 random bytes. Only the SHA-256 of the whole key is stored: the key has 256 bits
of entropy, so a slow password hash would add latency per request and no protection. The
plain key is printed once, by ``bastion keys create``, and never kept.

`KeyStore` is the interface the API-key policy and ``bastion keys`` use; `FileKeyStore`
keeps the keys in the data dir (``api_keys.json``, mode 0600, atomic rewrites under a
lock). A running gateway notices a changed file within a second (by its clock), so a
created or revoked key takes effect without a reload.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from bastion.clock import SYSTEM_CLOCK, Clock
from bastion.state.files import atomic_write, ensure_dir, file_lock

__all__ = [
    "FILE_NAME",
    "FileKeyStore",
    "KeyRecord",
    "KeyStore",
    "hash_key",
    "valid_consumer",
]

FILE_NAME = "api_keys.json"
_CONSUMER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_CHECK_EVERY = 1.0  # seconds between two looks at the file from a running gateway
_MAX_KEY = 512  # longer values are not keys: not even hashed


def valid_consumer(name: str) -> bool:
    return bool(_CONSUMER.fullmatch(name))


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class KeyRecord:
    id: str
    consumer: str
    hash: str
    created: str
    revoked: str | None = None


class KeyStore(Protocol):
    @property
    def where(self) -> str:
        """Where the keys are kept, for the operator's messages."""
        ...

    def lookup(self, key: str) -> KeyRecord | None:
        """The active key's record, or None for an unknown or revoked key."""

    def find(self, raw: bytes) -> KeyRecord | None:
        """`lookup` of a key as a request field carries it (bytes, maybe padded with
        spaces); a missing, overlong or unknown one gives None."""

    def fresh_for(self) -> float:
        """Seconds during which what `find` answers stays true (until the store next
        looks for changed keys)."""

    def create(self, consumer: str) -> tuple[str, KeyRecord]:
        """A new key for ``consumer``: (the plain key, shown once; its record)."""

    def records(self) -> list[KeyRecord]:
        """Every key, revoked ones included, oldest first."""

    def revoke(self, consumer: str | None = None, key_id: str | None = None) -> list[KeyRecord]:
        """Revoke the consumer's active keys, or one key by id; the records revoked."""


class FileKeyStore:
    def __init__(self, directory: Path, clock: Clock = SYSTEM_CLOCK) -> None:
        self.path = directory / FILE_NAME
        self.clock = clock
        self._monotonic = clock.monotonic  # called through a local, per key lookup
        self._active: dict[str, KeyRecord] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self._load()

    @property
    def where(self) -> str:
        return str(self.path)

    def _now(self) -> str:
        """The clock's date, as records keep it."""
        return datetime.fromtimestamp(self.clock.time(), UTC).isoformat(timespec="seconds")

    # ----------------------------------------------------------------- reading (hot path)
    def lookup(self, key: str) -> KeyRecord | None:
        clock = self._monotonic
        now = clock()
        if now >= self._next_check:
            self._next_check = now + _CHECK_EVERY
            self._load()
        return self._active.get(hash_key(key))

    def fresh_for(self) -> float:
        """Seconds until the next look at the file: what `find` answers until then stays
        true."""
        return max(0.0, self._next_check - self.clock.monotonic())

    def find(self, raw: bytes) -> KeyRecord | None:
        key = raw.strip().decode("latin-1")
        if not key or len(key) > _MAX_KEY:
            return None
        return self.lookup(key)

    def _load(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._active, self._stamp = {}, None
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return
        try:
            records = self._read()
        except (OSError, ValueError):
            return  # keep the keys held; the CLI never writes a half file (atomic rename)
        self._active = {r.hash: r for r in records if r.revoked is None}
        self._stamp = stamp

    def _read(self) -> list[KeyRecord]:
        try:
            doc = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return []
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise ValueError(f"{self.path} is not a key store")
        return [KeyRecord(**item) for item in doc["keys"]]

    def records(self) -> list[KeyRecord]:
        return self._read()

    # ----------------------------------------------------------------- writing (CLI)
    def _write(self, records: list[KeyRecord]) -> None:
        doc = {"version": 1, "keys": [asdict(r) for r in records]}
        atomic_write(self.path, json.dumps(doc, indent=1).encode() + b"\n", 0o600)
        self._load()

    def create(self, consumer: str) -> tuple[str, KeyRecord]:
        if not valid_consumer(consumer):
            raise ValueError(
                f"invalid consumer name {consumer!r}: use 1 to 64 letters, digits, '.', '_', "
                "'@' or '-', starting with a letter or digit"
            )
        ensure_dir(self.path.parent)
        with file_lock(self.path.with_name(FILE_NAME + ".lock")):
            records = self._read()
            ids = {r.id for r in records}
            key_id = secrets.token_hex(4)
            while key_id in ids:
                key_id = secrets.token_hex(4)
            key = f"bk_{key_id}_{secrets.token_urlsafe(32)}"
            record = KeyRecord(key_id, consumer, hash_key(key), self._now())
            self._write([*records, record])
        return key, record

    def revoke(self, consumer: str | None = None, key_id: str | None = None) -> list[KeyRecord]:
        if not self.path.exists():
            return []
        done: list[KeyRecord] = []
        with file_lock(self.path.with_name(FILE_NAME + ".lock")):
            records = self._read()
            kept: list[KeyRecord] = []
            for r in records:
                if (
                    r.revoked is None
                    and (
                        (key_id is not None and r.id == key_id)
                        or (key_id is None and consumer is not None and r.consumer == consumer)
                    )
                    and (consumer is None or r.consumer == consumer)
                ):
                    r = KeyRecord(r.id, r.consumer, r.hash, r.created, self._now())
                    done.append(r)
                kept.append(r)
            if done:
                self._write(kept)
        return done
