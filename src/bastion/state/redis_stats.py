"""Per-minute traffic figures of every instance in Redis, for the cluster view of the
statistics (`bastion stats --cluster`, the admin API's ``scope=cluster``).

Keys (after ``state.key_prefix``):

- ``stats:{<instance>}:m:<minute>``: a hash per instance and minute (epoch seconds of the
  minute's start), kept 48 hours (the minutes' retention of the statistics file). Its
  fields are written by each worker of the instance, under the worker's pid, so that
  workers never add into each other's fields and a write can be repeated:
  ``r|<pid>|<route>`` holds the route's figures of the minute so far, ``t|<pid>|<dim>`` the
  worker's top-K summary of a dimension (both encoded by `observe.stats.cluster`).
  The braces make every key of an instance one hash slot in a Redis Cluster: one write is
  one round trip to one node.
- ``stats:instances``: a hash, instance -> ``{"seen": epoch, "every": seconds}``, its
  heartbeat (named apart from any other registry of instances in the same Redis).

Blocking calls (redis-py's sync client): used from the statistics writer's thread and from
threads of the admin API or the command line, never from an event loop.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["KEEP", "RedisStats"]

KEEP = 48 * 3600  # seconds a minute is kept, as in the statistics file
INSTANCES = "stats:instances"


class RedisStats:
    """The cluster's minutes in Redis, over a blocking client (`connect_sync`)."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def minute_key(self, instance: str, minute: int) -> str:
        return f"{self.prefix}stats:{{{instance}}}:m:{minute}"

    def push(
        self,
        instance: str,
        minutes: Mapping[int, Mapping[str, str]],
        seen: float,
        every: float,
    ) -> None:
        """Write some minutes' fields of one worker and the instance's heartbeat, in one
        pipeline (one round trip)."""
        pipe = self.client.pipeline(transaction=False)
        for minute, fields in minutes.items():
            if not fields:
                continue
            key = self.minute_key(instance, minute)
            pipe.hset(key, mapping=dict(fields))
            pipe.expireat(key, int(minute) + KEEP)
        beat = json.dumps({"seen": round(seen, 3), "every": every})
        pipe.hset(self.prefix + INSTANCES, instance, beat)
        pipe.execute()

    def instances(self, now: float) -> dict[str, dict[str, float]]:
        """Every instance seen in the last 48 hours: its last heartbeat and interval.
        Instances silent for longer are removed."""
        raw = self.client.hgetall(self.prefix + INSTANCES)
        seen: dict[str, dict[str, float]] = {}
        gone: list[str] = []
        for name, value in raw.items():
            instance = name.decode() if isinstance(name, bytes) else str(name)
            try:
                beat = json.loads(value)
                entry = {"seen": float(beat["seen"]), "every": float(beat["every"])}
            except (ValueError, KeyError, TypeError):
                gone.append(instance)  # not written by this version: not ours to read
                continue
            if entry["seen"] < now - KEEP:
                gone.append(instance)
            else:
                seen[instance] = entry
        if gone:
            self.client.hdel(self.prefix + INSTANCES, *gone)
        return seen

    def read(
        self, instances: Iterable[str], minutes: Iterable[int]
    ) -> dict[tuple[str, int], dict[str, str]]:
        """The fields of each (instance, minute) that holds any, in one pipeline."""
        wanted = [(instance, minute) for instance in instances for minute in minutes]
        pipe = self.client.pipeline(transaction=False)
        for instance, minute in wanted:
            pipe.hgetall(self.minute_key(instance, minute))
        found: dict[tuple[str, int], dict[str, str]] = {}
        for where, fields in zip(wanted, pipe.execute() if wanted else [], strict=True):
            if fields:
                found[where] = {_text(k): _text(v) for k, v in fields.items()}
        return found


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
