"""The state backends behind their interfaces: what one `Stores` writes, a new `Stores` on
the same data dir reads back (a restart); broadcast messages reach the other processes'
subscribers and never their publisher; snapshots replace each other; a plan gets an empty
cache while the other stores outlive it."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.clock import ManualClock
from bastion.state import broadcast as broadcast_module
from bastion.state.broadcast import (
    KEEP_SECONDS,
    Broadcast,
    FileBroadcast,
    MemoryBroadcast,
    Message,
)
from bastion.state.cache import CacheStore, Entry
from bastion.state.limits import Check
from bastion.state.snapshots import FileSnapshots, MemorySnapshots, Snapshots
from bastion.state.stores import Stores, stores_for

HOURLY = Check(2, 3600.0, 2, None, True)  # a long window: saved
PER_SECOND = Check(5, 1.0, 5)  # a short one: memory only
DAILY = Check(3, 0.0, 0, "day", True)


def entry(key: str, body: bytes = b"x") -> Entry:
    return Entry(key, "http://a.test" + key, 200, b"HTTP/1.1 200 OK\r\n", body, 0.0, 60.0)


# ------------------------------------------------------------------ limits
def test_limits_round_trip_and_a_restart_keeps_the_long_ones(tmp_path: Path) -> None:
    clock = ManualClock()
    stores = Stores(tmp_path, clock)
    limits = stores.limits
    assert stores.limits is limits  # one per Stores
    now = clock.time()
    checks, keys = [HOURLY, PER_SECOND, DAILY], ["hour", "second", "day"]
    for _ in range(2):
        assert limits.take(checks, keys, now)[0]
    allowed, outcomes = limits.take(checks, keys, now)
    assert not allowed and outcomes is not None and not outcomes[0].allowed
    stores.close()  # what a worker does at exit
    assert stat.S_IMODE((tmp_path / "ratelimit.json").stat().st_mode) == 0o600

    clock.advance(10.0)
    again = Stores(tmp_path, clock).limits  # a restart: a new process, the same data dir
    _, left = again.take(checks, keys, clock.time(), report=False)
    assert left is not None  # refused: the hourly limit is still spent
    hour, second, day = left
    assert not hour.allowed
    assert second.allowed and second.reset == 0.0  # short windows start again (no TAT)
    assert day.remaining == 1  # two of three used today


def test_limits_take_their_time_from_the_clock(tmp_path: Path) -> None:
    clock = ManualClock()
    limits = Stores(tmp_path, clock).limits
    assert limits.clock is clock
    one = [Check(1, 10.0, 1)]
    assert limits.take(one, ["k"], clock.time())[0]
    assert not limits.take(one, ["k"], clock.time())[0]
    clock.advance(10.0)
    assert limits.take(one, ["k"], clock.time())[0]


# --------------------------------------------------------------------- keys
def test_keys_round_trip_and_a_new_stores_reads_them(tmp_path: Path) -> None:
    clock = ManualClock()
    keys = Stores(tmp_path, clock).keys
    key, record = keys.create("alice")
    assert keys.lookup(key) == record and keys.find(b" " + key.encode() + b" ") == record
    assert keys.where == str(tmp_path / "api_keys.json")

    restarted = Stores(tmp_path, clock).keys
    assert restarted.lookup(key) == record
    assert [r.id for r in restarted.records()] == [record.id]
    # a revocation by another process (the CLI) reaches a running reader at its next look
    assert [r.id for r in Stores(tmp_path).keys.revoke(consumer="alice")] == [record.id]
    assert keys.lookup(key) is not None  # until then, what it said holds
    clock.advance(keys.fresh_for())
    assert keys.lookup(key) is None


# -------------------------------------------------------------------- cache
def test_each_plan_gets_an_empty_cache_the_other_stores_stay(tmp_path: Path) -> None:
    stores = Stores(tmp_path)
    first: CacheStore = stores.cache(1 << 20, 1 << 16)
    first.put(entry("/a"))
    assert first.get("/a") is not None
    second = stores.cache(1 << 20, 1 << 16)  # the plan of a reload
    assert second is not first and second.get("/a") is None
    assert stores.limits is stores.limits and stores.keys is stores.keys
    assert stores.broadcast is stores.broadcast and stores.snapshots is stores.snapshots
    # one Stores per data dir in a process
    assert stores_for(tmp_path) is stores_for(tmp_path)
    assert stores_for(tmp_path / "other") is not stores_for(tmp_path)


def test_cache_round_trip_and_purges(tmp_path: Path) -> None:
    cache = Stores(tmp_path).cache(1 << 20, 4)
    cache.put(entry("/a"))
    tagged = entry("/b")
    tagged.tags = frozenset({"t"})
    cache.put(tagged)
    cache.put(entry("/big", b"12345"))  # over max_object_size: not kept
    assert cache.get("/big") is None
    assert cache.get("/a") is not None and cache.purge_tag("t") == 1
    assert cache.get("/b") is None
    assert cache.purge_url("http://a.test/a") == 1 and cache.get("/a") is None


# ---------------------------------------------------------------- broadcast
def deliveries(
    publisher: Broadcast, subscribers: list[Broadcast], messages: list[Message], wait: float
) -> tuple[list[list[Message]], list[Message]]:
    """What each subscriber and the publisher's own subscription got of ``messages``."""
    got: list[list[Message]] = [[] for _ in subscribers]
    own: list[Message] = []

    async def main() -> None:
        subs = [b.subscribe("news", got[i].append) for i, b in enumerate(subscribers)]
        subs.append(publisher.subscribe("news", own.append))
        for message in messages:
            publisher.publish("news", message)
        await asyncio.sleep(wait)
        for sub in subs:
            sub.close()

    asyncio.run(main())
    return got, own


def test_memory_broadcast_reaches_the_others_not_the_publisher() -> None:
    hub: dict[str, list[broadcast_module.MemorySubscription]] = {}
    a, b, c = MemoryBroadcast(hub), MemoryBroadcast(hub), MemoryBroadcast(hub)
    messages: list[Message] = [{"kind": "url", "value": "http://a.test/"}, {"n": 2}]
    got, own = deliveries(a, [b, c], messages, 0.01)
    assert got == [messages, messages] and own == []
    assert not hub["news"]  # closed subscriptions are gone


def test_file_broadcast_reaches_the_others_not_the_publisher(tmp_path: Path) -> None:
    a, b = FileBroadcast(tmp_path), FileBroadcast(tmp_path)
    messages: list[Message] = [{"kind": "tag", "value": "t"}, {"kind": "url", "value": ["x"]}]
    got, own = deliveries(a, [b], messages, broadcast_module.POLL_SECONDS * 1.5)
    assert got == [messages] and own == []
    files = sorted((tmp_path / "news").iterdir())
    assert [json.loads(p.read_text()) for p in files] == messages  # the format on disk


def test_file_broadcast_delivers_once_keeps_a_minute_then_removes(tmp_path: Path) -> None:
    clock = ManualClock()
    publisher, reader = FileBroadcast(tmp_path, clock), FileBroadcast(tmp_path, clock)
    got: list[Message] = []
    later: list[Message] = []

    async def main() -> None:
        sub = reader.subscribe("news", got.append)
        publisher.publish("news", {"n": 1})
        sub.poll()
        sub.poll()  # seen: not again
        assert got == [{"n": 1}]
        clock.advance(KEEP_SECONDS + 1)
        publisher.publish("news", {"n": 2})  # also forgets its own old names
        assert len(publisher.own["news"]) == 1
        sub.poll()  # delivers the new one, removes the old one
        late = FileBroadcast(tmp_path, clock).subscribe("news", later.append)
        late.poll()  # a subscriber that comes later gets what is still kept
        sub.close()
        late.close()

    asyncio.run(main())
    assert got == [{"n": 1}, {"n": 2}] and later == [{"n": 2}]
    assert [json.loads(p.read_text()) for p in (tmp_path / "news").iterdir()] == [{"n": 2}]


def test_file_broadcast_skips_what_is_not_a_message(tmp_path: Path) -> None:
    directory = tmp_path / "news"
    directory.mkdir()
    (directory / "00000000000000000001-1-aa.json").write_text("{not json")
    (directory / "00000000000000000002-1-bb.json").write_text("[1, 2]")
    (directory / ".00000000000000000003-1-cc.json").write_text('{"half": "written"}')
    got: list[Message] = []

    async def main() -> None:
        sub = FileBroadcast(tmp_path).subscribe("news", got.append)
        sub.poll()
        sub.close()

    asyncio.run(main())
    assert got == []


# ---------------------------------------------------------------- snapshots
@pytest.mark.parametrize("make", [FileSnapshots, lambda _: MemorySnapshots()])
def test_snapshots_replace_each_other_and_are_withdrawn(
    tmp_path: Path, make: Callable[[Path], Snapshots]
) -> None:
    snapshots = make(tmp_path)
    assert snapshots.read("status") == []
    snapshots.put("status", {"pools": [1]})
    snapshots.put("status", {"pools": [2]})
    assert snapshots.read("status") == [{"pools": [2]}]
    assert make(tmp_path).read("status") in ([{"pools": [2]}], [])  # files: another reader
    snapshots.remove("status")
    assert snapshots.read("status") == []


def test_file_snapshots_are_private_and_dead_workers_are_swept(tmp_path: Path) -> None:
    snapshots = Stores(tmp_path).snapshots
    snapshots.put("status", {"pid": os.getpid()})
    mine = tmp_path / "status" / f"worker-{os.getpid()}.json"
    assert stat.S_IMODE(mine.stat().st_mode) == 0o600
    assert stat.S_IMODE(mine.parent.stat().st_mode) == 0o700
    dead = tmp_path / "status" / "worker-999999999.json"  # beyond any pid
    dead.write_text('{"pid": 999999999}')
    assert FileSnapshots(tmp_path).read("status") == [{"pid": os.getpid()}]
    assert not dead.exists()
    assert snapshots.where("status") == str(tmp_path / "status")


def test_memory_snapshots_of_several_workers() -> None:
    board: dict[str, dict[str, str]] = {}
    one, two = MemorySnapshots("1", board), MemorySnapshots("2", board)
    one.put("status", {"w": 1})
    two.put("status", {"w": 2})
    assert one.read("status") == two.read("status") == [{"w": 1}, {"w": 2}]
    two.remove("status")
    assert one.read("status") == [{"w": 1}]
