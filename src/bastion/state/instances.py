"""Which instances share a Redis, and which config each one runs (``state.redis``).

Every worker writes its instance's record into the hash ``<key_prefix>instances`` every
`HEARTBEAT_SECONDS` (the workers of one instance write the same field): instance id
(``host:pid`` of the ``bastion run`` process), host name, pid, config hash (SHA-256 of the
config file's bytes, 12 hex digits), version, started and last seen (Unix seconds, the
writer's clock). A record not refreshed for `STALE_SECONDS` is not listed, and is removed
by the next heartbeat of any instance; the whole hash expires when no instance is left.

`drift` marks the instances whose config differs from the majority's; when no hash is
held by more instances than any other (two instances, two configs), every instance is
marked, since none can be told to be the odd one.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bastion import __version__

__all__ = [
    "HEARTBEAT_SECONDS",
    "STALE_SECONDS",
    "Identity",
    "InstanceRecord",
    "alive",
    "config_hash",
    "hash_name",
    "mark_drift",
    "render",
]

HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 15.0  # three heartbeats missed: the instance is gone
_EXPIRE_SECONDS = 60  # the hash itself, once no instance refreshes it

InstanceRecord = dict[str, Any]


def hash_name(key_prefix: str) -> str:
    return key_prefix + "instances"


def config_hash(path: Path | None) -> str:
    """SHA-256 of the config file's bytes, shortened; "-" without a file (or unreadable)."""
    if path is None:
        return "-"
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    except OSError:
        return "-"


def _started(pid: int) -> float:
    """When process ``pid`` started (Unix seconds), from /proc; now when unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of the line: start time, in clock ticks
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


class Identity:
    """This instance: what its heartbeat says. The config hash is the file's as it was
    read when the config in force was loaded (read again after each reload), not what
    the file holds now: an edited file that was not reloaded is not in force."""

    def __init__(self, instance_pid: int, loaded: Callable[[], object]) -> None:
        self.host = socket.gethostname()
        self.pid = instance_pid
        self.id = f"{self.host}:{instance_pid}"
        self.started = round(_started(instance_pid), 3)
        self.loaded = loaded  # the LoadedConfig in force (a reload replaces it)
        self.hashed: tuple[object, str] | None = None

    def config_hash(self) -> str:
        loaded = self.loaded()
        if self.hashed is None or self.hashed[0] is not loaded:
            self.hashed = (loaded, config_hash(getattr(loaded, "source", None)))
        return self.hashed[1]

    def record(self, now: float) -> InstanceRecord:
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "config_hash": self.config_hash(),
            "version": __version__,
            "started": self.started,
            "last_seen": round(now, 3),
        }


async def beat(hub: Any, name: str, identity: Identity) -> None:
    """One heartbeat through the worker's hub (raises `redis_hub.Unreachable`)."""
    now = time.time()
    text = json.dumps(identity.record(now))

    async def work(client: Any) -> None:
        found = await client.hgetall(name)
        stale = [field for field, raw in found.items() if _stale(raw, now)]
        pipe = client.pipeline(transaction=False)
        pipe.hset(name, identity.id, text)
        if stale:
            pipe.hdel(name, *stale)
        pipe.expire(name, _EXPIRE_SECONDS)
        await pipe.execute()

    await hub.run(work)


def _stale(raw: bytes | str, now: float) -> bool:
    try:
        return now - float(json.loads(raw)["last_seen"]) > STALE_SECONDS
    except (ValueError, KeyError, TypeError):
        return True


def alive(found: dict[Any, Any], now: float) -> list[InstanceRecord]:
    """The records of a HGETALL that are fresh, by id."""
    records = []
    for raw in found.values():
        if _stale(raw, now):
            continue
        record = json.loads(raw)
        if isinstance(record, dict):
            records.append(record)
    return sorted(records, key=lambda r: str(r.get("id")))


def mark_drift(records: list[InstanceRecord]) -> str | None:
    """Set each record's ``drift``; the majority's config hash (None: no majority)."""
    counts = Counter(str(r.get("config_hash")) for r in records)
    ranked = counts.most_common()
    clear = ranked and (len(ranked) == 1 or ranked[0][1] > ranked[1][1])
    majority = ranked[0][0] if clear else None
    for r in records:
        if majority is None:
            r["drift"] = len(ranked) > 1
        else:
            r["drift"] = r.get("config_hash") != majority
    return majority


def render(records: list[InstanceRecord], majority: str | None) -> str:
    """The instances as ``bastion status`` prints them."""
    lines = [f"{'INSTANCE':<32} {'CONFIG':<13} {'VERSION':<10} LAST SEEN"]
    now = time.time()
    for r in records:
        flag = "  differs from the majority" if r.get("drift") else ""
        if r.get("drift") and majority is None:
            flag = "  differs (no majority config)"
        lines.append(
            f"{r.get('id')!s:<32} {r.get('config_hash')!s:<13} "
            f"{r.get('version')!s:<10} {now - float(r.get('last_seen', now)):.0f}s ago{flag}"
        )
    return "\n".join(lines)


def read_blocking(settings: Any) -> dict[str, Any]:
    """The live instances as a command reads them: ``{"instances": [...], "majority":
    hash}``, or ``{"error": why}`` when Redis cannot be reached."""
    from redis.exceptions import RedisError

    from bastion.config.state_values import redis_target
    from bastion.state.redis_sync import connect_sync

    client = connect_sync(settings)
    try:
        found = client.hgetall(hash_name(settings.key_prefix))
    except (RedisError, OSError, TimeoutError) as exc:
        return {"error": f"cannot reach Redis {redis_target(settings.redis)}: {exc or 'timeout'}"}
    finally:
        client.close()
    records = alive(found, time.time())
    return {"instances": records, "majority": mark_drift(records)}


def report(found: dict[str, Any]) -> str:
    """`read_blocking`'s answer as ``bastion status`` prints it."""
    if "error" in found:
        return f"instances: {found['error']}"
    if not found["instances"]:
        return "instances: none has written a heartbeat to Redis in the last 15 s"
    return render(found["instances"], found["majority"])
