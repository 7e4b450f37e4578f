"""The response cache shared in Redis (``cache: {store: redis}``): real `bastion run`
processes with data dirs of their own, one real redis-server, one counting backend. An
answer stored through one instance is served by the other; Vary holds across them; a
purge through one empties both; a body over the cap stays with its instance; a frozen
Redis turns lookups into misses, never errors."""

from __future__ import annotations

import http.client
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cacheorigin import CountingBackend, Reply

import rediskit
from rediskit import RedisServer
from rediskit import redis_cluster as redis_cluster  # the fixtures
from rediskit import redis_server as redis_server

pytestmark = pytest.mark.timeout(120)

CONFIG = """\
listen: {http: "127.0.0.1:${T_PORT}"}
data_dir: ${T_DATA}
pid_file: ${T_PID}
access_log: {format: "off"}
state: {redis: "redis://127.0.0.1:${T_REDIS}/0", timeout: 250ms}
admin: {listen: "127.0.0.1:${T_ADMIN}", token: "admin-token-for-the-cache-tests"}
cache: {store: redis, redis_max_object_size: 1KiB}
sites:
  - hosts: ["*"]
    routes:
      - path: /cached/
        cache: {ttl: 60s}
        proxy: {upstreams: ["http://127.0.0.1:${T_BACKEND}"]}
      - path: /varied/
        cache: {}
        proxy: {upstreams: ["http://127.0.0.1:${T_BACKEND}"]}
"""


class Instance(rediskit.Instance):
    """One `bastion run` with its own ports and data dir."""

    def __init__(
        self, workdir: Path, redis: RedisServer, backend: CountingBackend, text: str = CONFIG
    ) -> None:
        super().__init__(workdir, redis, backend.port, text)

    def get(self, path: str, wait: float = 10, **headers: str) -> tuple[int, str, bytes]:
        """Status, X-Cache and body of a GET (for one name, as through a balancer: the
        Host a request names is part of its cache key)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=wait)
        fields = {"Host": "www.example", **{k.replace("_", "-"): v for k, v in headers.items()}}
        try:
            conn.request("GET", path, headers=fields)
            resp = conn.getresponse()
            return resp.status, resp.getheader("X-Cache") or "", resp.read()
        finally:
            conn.close()


@pytest.fixture
def origin() -> Iterator[CountingBackend]:
    backend = CountingBackend()
    yield backend
    backend.stop()


@pytest.fixture
def pair(
    tmp_path: Path, redis_server: Callable[[], RedisServer], origin: CountingBackend
) -> Iterator[tuple[Instance, Instance, RedisServer]]:
    redis = redis_server()
    one = Instance(tmp_path / "one", redis, origin)
    try:
        two = Instance(tmp_path / "two", redis, origin)
    except BaseException:
        one.stop()
        raise
    yield one, two, redis
    redis.resume()  # (a test may leave it frozen)
    one.stop()
    two.stop()


def entries_in(redis: RedisServer | list[RedisServer]) -> list[str]:
    """The cache entries' keys (on every node of a Cluster)."""
    nodes = redis if isinstance(redis, list) else [redis]
    keys = [k for node in nodes for k in node.all_keys("bastion:cache:*")]
    return [k for k in keys if "{index}" not in k and "vary" not in k]


def wait_for_entries(redis: RedisServer | list[RedisServer], count: int) -> None:
    """The instance writes to Redis after it has answered: wait for it."""
    deadline = time.monotonic() + 5
    while len(entries_in(redis)) < count:
        assert time.monotonic() < deadline, f"{len(entries_in(redis))} entries in Redis"
        time.sleep(0.02)


def test_an_answer_stored_through_one_instance_is_a_hit_on_the_other(
    pair: tuple[Instance, Instance, RedisServer], origin: CountingBackend
) -> None:
    one, two, redis = pair
    assert one.get("/cached/page")[:2] == (200, "MISS")
    wait_for_entries(redis, 1)
    status, cache, body = two.get("/cached/page")
    assert (status, cache) == (200, "HIT")
    assert body == one.get("/cached/page")[2]
    assert two.get("/cached/page")[1] == "HIT"  # from its own memory now
    assert origin.hits_of("/cached/page") == 1
    # the entry expires in Redis on its own, within its lifetime
    (key,) = entries_in(redis)
    assert 0 < int(redis.command("TTL", key)[1:]) <= 60


def test_vary_holds_across_instances(
    pair: tuple[Instance, Instance, RedisServer], origin: CountingBackend
) -> None:
    one, two, redis = pair
    origin.replies["/varied/page"] = Reply(
        headers={"Cache-Control": "max-age=60", "Vary": "Accept-Language"},
        body=b"in {lang}, answer {n}",
    )
    assert one.get("/varied/page", Accept_Language="fr")[1:] == ("MISS", b"in fr, answer 1")
    wait_for_entries(redis, 1)
    # another language: not the stored variant
    assert two.get("/varied/page", Accept_Language="de")[1:] == ("MISS", b"in de, answer 2")
    wait_for_entries(redis, 2)
    assert two.get("/varied/page", Accept_Language="fr")[1:] == ("HIT", b"in fr, answer 1")
    assert one.get("/varied/page", Accept_Language="de")[1:] == ("HIT", b"in de, answer 2")
    assert origin.hits_of("/varied/page") == 2


def test_a_purge_through_one_instance_removes_the_entry_for_both(
    pair: tuple[Instance, Instance, RedisServer], origin: CountingBackend
) -> None:
    one, two, redis = pair
    origin.replies["/cached/a"] = Reply(body=b"answer {n}")
    assert one.get("/cached/a")[1:] == ("MISS", b"answer 1")
    wait_for_entries(redis, 1)
    assert two.get("/cached/a")[1:] == ("HIT", b"answer 1")  # now in two's memory as well
    assert one.get("/cached/b")[1] == "MISS"
    wait_for_entries(redis, 2)

    done = one.bastion("cache", "purge", "--prefix", "/cached/")
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 3
    while entries_in(redis):
        assert time.monotonic() < deadline, f"left in Redis: {entries_in(redis)}"
        time.sleep(0.05)
    # two drops its copy when the purge reaches it, then asks the backend again...
    deadline = time.monotonic() + 3
    while two.get("/cached/a")[2] == b"answer 1":
        assert time.monotonic() < deadline, "not purged"
        time.sleep(0.05)
    assert origin.hits_of("/cached/a") == 2
    # ...and one (purged at once by its admin API) is served that new answer from Redis
    wait_for_entries(redis, 1)
    assert one.get("/cached/a")[1:] == ("HIT", b"answer 2")
    # a URL purge by its full URL as well
    wait_for_entries(redis, 1)
    done = two.bastion("cache", "purge", "http://www.example/cached/a")
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 3
    while entries_in(redis):
        assert time.monotonic() < deadline, f"left in Redis: {entries_in(redis)}"
        time.sleep(0.05)


def test_a_body_over_the_cap_stays_with_its_instance(
    pair: tuple[Instance, Instance, RedisServer], origin: CountingBackend
) -> None:
    one, two, redis = pair
    origin.replies["/cached/big"] = Reply(body=b"x" * 2048)
    assert one.get("/cached/big")[1] == "MISS"
    assert one.get("/cached/big")[1] == "HIT"  # kept in one's memory
    assert two.get("/cached/small")[1] == "MISS"
    wait_for_entries(redis, 1)  # (written after the big one: the big one is not coming)
    assert two.get("/cached/big")[1] == "MISS"
    assert origin.hits_of("/cached/big") == 2
    assert len(entries_in(redis)) == 1  # the small one only


def test_a_frozen_redis_turns_lookups_into_misses_not_errors(
    pair: tuple[Instance, Instance, RedisServer], origin: CountingBackend
) -> None:
    one, two, redis = pair
    assert one.get("/cached/kept")[1] == "MISS"
    wait_for_entries(redis, 1)
    redis.pause()  # every command hangs, as a frozen or partitioned server
    # what an instance holds in memory it still serves
    assert one.get("/cached/kept")[:2] == (200, "HIT")
    # the other's lookups in Redis time out (250 ms): the backend answers (a client that
    # waits a few seconds at most gets every answer: nothing waits for Redis past that)
    for n in range(8):
        status, cache, _ = two.get(f"/cached/new{n}", wait=3)
        assert (status, cache) == (200, "MISS")
    assert two.get("/cached/kept", wait=3)[:2] == (200, "MISS")
    assert origin.hits_of("/cached/kept") == 2
    redis.resume()
    # once Redis answers again (after the breaker's pause), entries are shared again
    deadline = time.monotonic() + 15
    n = 0
    while True:
        n += 1
        assert two.get(f"/cached/after{n}")[1] == "MISS"
        time.sleep(0.2)
        if one.get(f"/cached/after{n}")[1] == "HIT":
            break
        assert time.monotonic() < deadline, "not shared again"
    assert two.stderr.count("response cache: Redis redis://127.0.0.1") == 2  # down, up
    assert "answers again: entries are shared" in two.stderr
    assert "limit store" not in two.stderr


def test_store_redis_without_state_redis_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "bastion.yaml"
    config.write_text(
        "listen: {http: '127.0.0.1:8080'}\n"
        "cache:\n"
        "  store: redis\n"
        "sites:\n"
        "  - routes: [{path: /, cache: {}, proxy: {upstreams: ['http://127.0.0.1:9']}}]\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "bastion", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert f"{config}:3: cache.store" in done.stderr, done.stderr
    assert "state.redis" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_cluster_shares_entries_and_purges_them_by_tag_and_prefix(
    redis_cluster: list[RedisServer], origin: CountingBackend, tmp_path: Path
) -> None:
    """Each entry's parts on one slot, the indexes on another: no CROSSSLOT anywhere."""
    state = f'state: {{redis: {{cluster: ["127.0.0.1:{redis_cluster[0].port}"]}}, timeout: 250ms}}'
    text = CONFIG.replace('state: {redis: "redis://127.0.0.1:${T_REDIS}/0", timeout: 250ms}', state)
    assert text != CONFIG
    origin.replies["/varied/blue"] = Reply(
        headers={"Cache-Control": "max-age=60", "Surrogate-Key": "blue", "Vary": "Accept-Language"},
        body=b"blue in {lang}",
    )
    one = Instance(tmp_path / "one", redis_cluster[0], origin, text)
    two = Instance(tmp_path / "two", redis_cluster[0], origin, text)
    try:
        assert one.get("/varied/blue", Accept_Language="fr")[1] == "MISS"
        assert one.get("/cached/green")[1] == "MISS"
        wait_for_entries(redis_cluster, 2)
        assert two.get("/varied/blue", Accept_Language="fr")[1:] == ("HIT", b"blue in fr")
        assert two.get("/cached/green")[1] == "HIT"

        done = two.bastion("cache", "purge", "--tag", "blue")
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 3
        while len(entries_in(redis_cluster)) != 1:
            assert time.monotonic() < deadline, f"in Redis: {entries_in(redis_cluster)}"
            time.sleep(0.05)
        deadline = time.monotonic() + 3
        while one.get("/varied/blue", Accept_Language="fr")[1] == "HIT":
            assert time.monotonic() < deadline, "not purged"
            time.sleep(0.05)
        assert one.get("/cached/green")[1] == "HIT"  # another tag: kept
        wait_for_entries(redis_cluster, 2)  # green, and blue stored again by its miss

        done = one.bastion("cache", "purge", "--prefix", "http://www.example/cached/")
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 3
        while len(entries_in(redis_cluster)) != 1:  # blue only
            assert time.monotonic() < deadline, f"in Redis: {entries_in(redis_cluster)}"
            time.sleep(0.05)
        deadline = time.monotonic() + 3
        while two.get("/cached/green")[1] == "HIT":
            assert time.monotonic() < deadline, "not purged"
            time.sleep(0.05)
    finally:
        one.stop()
        two.stop()
    assert "unavailable" not in one.stderr + two.stderr
    assert "CROSSSLOT" not in one.stderr + two.stderr
