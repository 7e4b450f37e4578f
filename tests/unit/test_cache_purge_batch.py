"""Invalidations for the other workers are written in batches, and a batch that grows
past its caps widens (origins, then everything) instead of growing without bound."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bastion.cache import purge
from bastion.cache.purge import PurgeQueue
from bastion.state.broadcast import FileBroadcast, MemoryBroadcast, MemorySubscription
from bastion.state.cache import Entry, MemoryCacheStore


def written(directory: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted(directory.glob("[!.]*.json"))]


def run(data_dir: Path, urls: list[str]) -> list[dict[str, object]]:
    """Invalidate `urls` at once, let one flush happen, stop."""

    async def main() -> None:
        queue = PurgeQueue(FileBroadcast(data_dir), MemoryCacheStore(1 << 20, 1 << 16))
        for url in urls:
            queue.invalidated(url)
        await asyncio.sleep(purge.BATCH_SECONDS * 1.5)
        queue.stop()

    asyncio.run(main())
    return written(data_dir / purge.TOPIC)


def test_the_first_at_once_then_one_batch(tmp_path: Path) -> None:
    urls = [f"http://a.test/items/{i}" for i in range(50)]
    assert run(tmp_path, urls) == [
        {"kind": "url", "value": [urls[0]]},
        {"kind": "url", "value": urls[1:]},
    ]


def test_past_the_cap_the_batch_is_the_urls_origins(tmp_path: Path) -> None:
    urls = [f"http://a.test/items/{i}" for i in range(purge.MAX_PENDING_URLS + 10)]
    urls += [f"https://b.test:8443/x/{i}" for i in range(5)]
    assert run(tmp_path, urls)[1:] == [
        {"kind": "prefix", "value": ["http://a.test/", "https://b.test:8443/"]}
    ]


def test_past_the_origin_cap_the_batch_is_everything(tmp_path: Path) -> None:
    urls = [f"http://h{i}.test/items/{j}" for i in range(40) for j in range(10)]
    assert run(tmp_path, urls)[1:] == [{"kind": "prefix", "value": ["/"]}]


def test_a_batch_applied_by_another_worker(tmp_path: Path) -> None:
    run(tmp_path, [f"http://a.test/items/{i}" for i in range(3)])
    store = MemoryCacheStore(1 << 20, 1 << 16)
    other = PurgeQueue(FileBroadcast(tmp_path), store)
    dropped: list[str] = []
    # another worker's invalidations: this worker's own copy only (`forget`)
    store.forget = lambda kind, url: dropped.append(url) or 1  # type: ignore[method-assign]

    async def main() -> None:
        # the subscription a watching queue makes, polled at once rather than by its timer
        subscription = FileBroadcast(tmp_path).subscribe(purge.TOPIC, other.received)
        subscription.poll()
        subscription.close()

    asyncio.run(main())
    assert dropped == [f"http://a.test/items/{i}" for i in range(3)]


def test_a_purge_reaches_the_other_workers_on_any_broadcast() -> None:
    """The queue knows the interface only: on the in-process backend, what one worker
    submits is applied once there and once in every other worker."""
    hub: dict[str, list[MemorySubscription]] = {}
    stores = [MemoryCacheStore(1 << 20, 1 << 16) for _ in range(3)]
    queues = [PurgeQueue(MemoryBroadcast(hub), store) for store in stores]
    url = "http://a.test/items/1"
    for store in stores:
        store.put(Entry(url, url, 200, b"HTTP/1.1 200 OK\r\n", b"x", 0.0, 60.0))

    async def main() -> int:
        for queue in queues:
            queue.watch()
        count = queues[0].submit("url", "HTTP://A.test:80/items/1")  # spelled otherwise
        await asyncio.sleep(0)  # the in-process backend delivers on the next loop pass
        for queue in queues:
            queue.stop()
        return count

    assert asyncio.run(main()) == 1
    assert [len(store) for store in stores] == [0, 0, 0]
