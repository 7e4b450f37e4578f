"""API keys kept in Redis, shared by every instance (``state.redis``).

In Redis: one hash, ``<key_prefix>api-keys``, from each key's SHA-256 to its record (JSON:
id, consumer, hash, created, revoked); the key itself is never stored. A change (create,
revoke, import) is written to the hash and then announced on the channel
``<key_prefix>api-keys`` with the records changed.

In each worker: a dict of the active keys, which the API-key policy reads per request
like the file store's (no Redis round trip on the request path). It is read in full when
the worker starts, kept current by the announcements, and read in full again every
`RESYNC_SECONDS` and at each reconnection, so that an announcement missed while Redis was
unreachable is made up for. While Redis is unreachable the worker keeps answering from the
keys it holds.

Each worker also keeps the copy in the data dir (`COPY_NAME`, hashes only, mode 0600),
rewritten when it changes: a worker that starts (or is restarted) while Redis is
unreachable starts with the keys as they were last seen, instead of with none.

The commands (``bastion keys``) use the blocking client (`redis_sync.connect_sync`) and
say so when Redis cannot be reached.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from bastion.clock import SYSTEM_CLOCK, Clock
from bastion.config.state_values import redis_target
from bastion.state.files import atomic_write, ensure_dir
from bastion.state.keys import KeyRecord, hash_key, valid_consumer

if TYPE_CHECKING:
    from bastion.config.state_models import State

__all__ = ["COPY_NAME", "RESYNC_SECONDS", "SEEN_SECONDS", "RedisKeyStore"]

log = logging.getLogger("bastion.state")

COPY_NAME = "api_keys.redis-copy.json"  # in the data dir: the last keys read from Redis
RESYNC_SECONDS = 30.0
START_TIMEOUT = 1.0  # the longest a starting worker waits for the keys
SEEN_SECONDS = 0.25  # how long the policy may trust an answer without asking the dict
_MAX_KEY = 512
_ERRORS = (RedisError, OSError, TimeoutError)


def _record(raw: bytes | str) -> KeyRecord | None:
    try:
        doc = json.loads(raw)
        return KeyRecord(**doc) if isinstance(doc, dict) else None
    except (ValueError, TypeError):
        return None  # another program's field: not a key


class RedisKeyStore:
    def __init__(
        self, settings: State, clock: Clock = SYSTEM_CLOCK, data_dir: Path | None = None
    ) -> None:
        assert settings.redis is not None
        self.settings = settings
        self.clock = clock
        self.name = settings.key_prefix + "api-keys"  # the hash and the channel
        self.target = redis_target(settings.redis)
        self._active: dict[str, KeyRecord] = {}
        # announcements that arrive while a full read is on its way (hash -> the record,
        # None when revoked): the read may have been answered before them, so they are
        # applied again on top of it (a revoked key must not come back with a stale read)
        self._during: dict[str, KeyRecord | None] | None = None
        self.copy = data_dir / COPY_NAME if data_dir is not None else None
        self._sync: Any = None  # the blocking client (commands), made on first use
        self.loaded = False
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # a command: reads and writes Redis directly, follows nothing
        self._load_now()
        self._follow()

    @property
    def where(self) -> str:
        return f"Redis {self.target} (hash {self.name})"

    # ----------------------------------------------------------------- reading (hot path)
    def lookup(self, key: str) -> KeyRecord | None:
        return self._active.get(hash_key(key))

    def find(self, raw: bytes) -> KeyRecord | None:
        key = raw.strip().decode("latin-1")
        if not key or len(key) > _MAX_KEY:
            return None
        return self._active.get(hash_key(key))

    def fresh_for(self) -> float:
        return SEEN_SECONDS

    # ----------------------------------------------------------------- following (worker)
    def _load_now(self) -> None:
        """The keys as Redis has them, read before the worker serves (blocking, bounded
        by the client's timeout); without Redis, the worker starts with none."""
        from bastion.state.redis_sync import connect_sync

        client = connect_sync(self.settings, timeout=START_TIMEOUT)
        try:
            self._replace(client.hgetall(self.name), save=True)
        except _ERRORS as exc:
            held = self._read_copy()
            log.warning(
                "API keys: Redis %s unreachable at start (%s): %s until it answers",
                self.target,
                exc or "timeout",
                f"serving the {held} keys last read from it ({self.copy})"
                if held is not None
                else "no key is accepted",
            )
        finally:
            client.close()

    def _read_copy(self) -> int | None:
        """Load the data dir's copy; how many keys it held (None: no readable copy)."""
        if self.copy is None:
            return None
        try:
            doc = json.loads(self.copy.read_bytes())
            records = [KeyRecord(**item) for item in doc["keys"]]
        except (OSError, ValueError, TypeError, KeyError):
            return None
        self._active = {r.hash: r for r in records if r.revoked is None}
        return len(self._active)

    def _save_copy(self) -> None:
        if self.copy is None:
            return
        doc = {"version": 1, "keys": [asdict(r) for r in self._active.values()]}
        try:
            ensure_dir(self.copy.parent)
            atomic_write(self.copy, json.dumps(doc, indent=1).encode() + b"\n", 0o600)
        except OSError as exc:
            log.warning("API keys: cannot keep their copy in %s: %s", self.copy, exc)

    def _follow(self) -> None:
        from bastion.state.redis_hub import hub_for

        hub = hub_for(self.settings)
        self.hub = hub
        hub.follow(self.name, self._announced)
        hub.on_connect(self._reconnected)
        self.resyncer = hub.spawn(self._resync_every())

    def _reconnected(self) -> None:
        self.hub.spawn(self.resync())  # what was announced while away

    def _announced(self, payload: bytes) -> None:
        try:
            doc = json.loads(payload)
        except ValueError:
            return
        if not isinstance(doc, dict):
            return
        if doc.get("resync"):
            self.hub.spawn(self.resync())
            return
        for item in doc.get("records", ()):
            record = _record(json.dumps(item))
            if record is None:
                continue
            if record.revoked is None:
                self._active[record.hash] = record
            else:
                self._active.pop(record.hash, None)
            if self._during is not None:
                self._during[record.hash] = record if record.revoked is None else None
        self._save_copy()

    async def resync(self) -> None:
        from bastion.state.redis_hub import Unreachable

        during: dict[str, KeyRecord | None] = {}
        self._during = during
        try:
            found = await self.hub.run(lambda client: client.hgetall(self.name))
        except Unreachable:
            return  # the hub logged it; the keys held stay
        finally:
            if self._during is during:
                self._during = None
        self._replace(found, after=during)

    async def _resync_every(self) -> None:
        while True:
            await asyncio.sleep(RESYNC_SECONDS)
            await self.resync()

    def _replace(
        self,
        found: dict[Any, Any],
        save: bool = False,
        after: dict[str, KeyRecord | None] | None = None,
    ) -> None:
        """Hold the keys of a full read, with the announcements ``after`` it applied on
        top (and keep their copy: when they changed, or ``save``, so that a copy from
        before is not kept when Redis holds the same)."""
        active: dict[str, KeyRecord] = {}
        for raw in found.values():
            record = _record(raw)
            if record is not None and record.revoked is None:
                active[record.hash] = record
        for key_hash, announced in (after or {}).items():
            if announced is None:
                active.pop(key_hash, None)
            else:
                active[key_hash] = announced
        changed = active != self._active
        self._active = active
        self.loaded = True
        if changed or save:
            self._save_copy()

    # ----------------------------------------------------------------- commands (blocking)
    def _client(self) -> Any:
        if self._sync is None:
            from bastion.state.redis_sync import connect_sync

            self._sync = connect_sync(self.settings)
        return self._sync

    def _call(self, work: Any) -> Any:
        try:
            return work(self._client())
        except _ERRORS as exc:
            raise OSError(
                f"cannot reach Redis {self.target} ({exc or 'timeout'}): nothing was changed; "
                "check that it runs and that state.redis names it"
            ) from None

    def _now(self) -> str:
        return datetime.fromtimestamp(self.clock.time(), UTC).isoformat(timespec="seconds")

    def records(self) -> list[KeyRecord]:
        found = self._call(lambda c: c.hgetall(self.name))
        records = [r for r in map(_record, found.values()) if r is not None]
        return sorted(records, key=lambda r: (r.created, r.id))

    def _announce(self, records: list[KeyRecord]) -> None:
        message = json.dumps({"records": [asdict(r) for r in records]})
        self._call(lambda c: c.publish(self.name, message))

    def create(self, consumer: str) -> tuple[str, KeyRecord]:
        if not valid_consumer(consumer):
            raise ValueError(
                f"invalid consumer name {consumer!r}: use 1 to 64 letters, digits, '.', '_', "
                "'@' or '-', starting with a letter or digit"
            )
        ids = {r.id for r in self.records()}
        key_id = secrets.token_hex(4)
        while key_id in ids:
            key_id = secrets.token_hex(4)
        key = f"bk_{key_id}_{secrets.token_urlsafe(32)}"
        record = KeyRecord(key_id, consumer, hash_key(key), self._now())
        self._call(lambda c: c.hset(self.name, record.hash, json.dumps(asdict(record))))
        self._announce([record])
        return key, record

    def revoke(self, consumer: str | None = None, key_id: str | None = None) -> list[KeyRecord]:
        done: list[KeyRecord] = []
        for r in self.records():
            if r.revoked is not None:
                continue
            if key_id is not None and r.id != key_id:
                continue
            if key_id is None and (consumer is None or r.consumer != consumer):
                continue
            if consumer is not None and r.consumer != consumer:
                continue
            done.append(KeyRecord(r.id, r.consumer, r.hash, r.created, self._now()))
        if done:
            fields = {r.hash: json.dumps(asdict(r)) for r in done}
            self._call(lambda c: c.hset(self.name, mapping=fields))
            self._announce(done)
        return done

    def import_records(self, records: list[KeyRecord]) -> tuple[int, int]:
        """Copy records (from the file store) that Redis does not hold yet: (copied,
        already there). A key Redis holds is never overwritten (its revocation stays)."""
        copied: list[KeyRecord] = []
        for r in records:
            if self._call(lambda c, r=r: c.hsetnx(self.name, r.hash, json.dumps(asdict(r)))):
                copied.append(r)
        if copied:
            self._call(lambda c: c.publish(self.name, json.dumps({"resync": True})))
        return len(copied), len(records) - len(copied)
