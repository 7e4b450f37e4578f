"""API keys, purges and reloads shared through a real redis-server by real `bastion run`
processes with data dirs of their own: a key created or revoked with `bastion keys` on any
config is in force on every instance, a purge through one instance empties the other's
cache, `bastion reload --all` reloads them all, and a config that differs shows."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import rediskit
from conftest import Backend
from rediskit import RedisServer, SentinelGroup
from rediskit import redis_cluster as redis_cluster  # the fixtures
from rediskit import redis_sentinel as redis_sentinel
from rediskit import redis_server as redis_server

pytestmark = pytest.mark.timeout(120)

TOKEN = "admin-token-for-the-cluster-tests"

# one file for every instance, as on machines that share a config: what differs between
# the test's instances (ports, data dir) comes from each process's environment
CONFIG = """\
listen: {http: "127.0.0.1:${T_PORT}"}
data_dir: ${T_DATA}
pid_file: ${T_PID}
access_log: {format: "off"}
state: {redis: "redis://127.0.0.1:${T_REDIS}/0", timeout: 250ms}
admin: {listen: "127.0.0.1:${T_ADMIN}", token: "${T_TOKEN}"}
sites:
  - hosts: ["*"]
    routes:
      - path: /api/
        auth: {api_keys: {}}
        proxy: {upstreams: ["http://127.0.0.1:${T_BACKEND}"]}
      - path: /cached/
        cache: {ttl: 60s}
        proxy: {upstreams: ["http://127.0.0.1:${T_BACKEND}"]}
      - path: /
        proxy: {upstreams: ["http://127.0.0.1:${T_BACKEND}"]}
"""


class Instance(rediskit.Instance):
    """One `bastion run` with its own ports and data dir, and the environment its
    commands run in."""

    def __init__(
        self,
        workdir: Path,
        redis: RedisServer,
        backend: Backend,
        text: str,
        data: str | None = None,
    ) -> None:
        super().__init__(workdir, redis, backend.port, text, data, {"T_TOKEN": TOKEN})

    @property
    def id(self) -> str:
        import socket

        return f"{socket.gethostname()}:{self.proc.pid}"

    def get(self, path: str, key: str | None = None) -> tuple[int, dict[str, str], float]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        start = time.monotonic()
        try:
            conn.request("GET", path, headers={"X-API-Key": key} if key else {})
            resp = conn.getresponse()
            resp.read()
            headers = {k.lower(): v for k, v in resp.getheaders()}
            return resp.status, headers, time.monotonic() - start
        finally:
            conn.close()

    def admin_get(self, path: str) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=10)
        try:
            conn.request(
                "GET",
                path,
                headers={"Authorization": f"Bearer {TOKEN}", "Host": f"127.0.0.1:{self.admin}"},
            )
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200, body
            return json.loads(body)
        finally:
            conn.close()


@pytest.fixture
def cluster(
    tmp_path: Path, redis_server: Callable[[], RedisServer], backend: Backend
) -> Iterator[Callable[..., list[Instance]]]:
    """`cluster(n)` → n running instances of one config file's text, one Redis."""
    redis = redis_server()
    started: list[Instance] = []

    def make(count: int = 2, text: str = CONFIG) -> list[Instance]:
        for _ in range(count):
            started.append(Instance(tmp_path / f"i{len(started)}", redis, backend, text))
        return started[-count:]

    make.redis = redis  # type: ignore[attr-defined]
    yield make
    for instance in started:
        instance.stop()


def consumers_of(backend: Backend, path: str) -> list[str | None]:
    """The X-Consumer each request for `path` reached the backend with."""
    return [dict(r["headers"]).get("x-consumer") for r in backend.requests if r["path"] == path]


def wait_status(instance: Instance, path: str, key: str | None, status: int) -> None:
    deadline = time.monotonic() + 2.0  # "within a second", with room for a busy machine
    while True:
        answer = instance.get(path, key)
        if answer[0] == status:
            return
        assert time.monotonic() < deadline, f"{path} on {instance.port}: {answer}"
        time.sleep(0.05)


def create_key(instance: Instance, consumer: str) -> str:
    done = instance.bastion("keys", "create", "--consumer", consumer)
    assert done.returncode == 0, done.stderr
    assert "in Redis " in done.stderr and "(hash bastion:api-keys)" in done.stderr  # where
    return done.stdout.strip()


def test_a_key_created_on_one_config_is_accepted_then_refused_by_both(
    cluster: Callable[..., list[Instance]], backend: Backend
) -> None:
    one, two = cluster(2)
    assert one.get("/api/before", "bk_00000000_unknown")[0] == 401

    key = create_key(one, "alice")
    for n, instance in enumerate((one, two)):
        wait_status(instance, f"/api/created/{n}", key, 200)
        assert consumers_of(backend, f"/api/created/{n}") == ["alice"]
    listed = two.bastion("keys", "list")
    assert listed.returncode == 0 and "alice" in listed.stdout and key not in listed.stdout

    revoked = two.bastion("keys", "revoke", "--consumer", "alice")
    assert revoked.returncode == 0, revoked.stderr
    for n, instance in enumerate((one, two)):
        wait_status(instance, f"/api/revoked/{n}", key, 401)
        assert consumers_of(backend, f"/api/revoked/{n}") == []
    # Redis holds the hash only, never the key
    assert key not in cluster.redis.command("HGETALL", "bastion:api-keys")  # type: ignore[attr-defined]


def test_redis_frozen_keys_held_still_work_and_the_command_says_it_cannot_reach_it(
    cluster: Callable[..., list[Instance]], backend: Backend
) -> None:
    one, two = cluster(2)
    redis: RedisServer = cluster.redis  # type: ignore[attr-defined]
    key = create_key(one, "bob")
    for instance in (one, two):
        wait_status(instance, "/api/ready", key, 200)

    redis.pause()
    try:
        during = [inst.get(f"/api/frozen/{n}/{i}", key) for i in range(10) for n, inst in
                  enumerate((one, two))]  # fmt: skip
        time.sleep(6)  # past the silence limit: each worker has taken Redis as gone
        later = [inst.get(f"/api/later/{n}", key) for n, inst in enumerate((one, two))]
        refused = one.bastion("keys", "create", "--consumer", "carol")
        frozen_logs = one.stderr + two.stderr
    finally:
        redis.resume()

    for status, _, took in [*during, *later]:
        assert status == 200
        assert took < 2.0  # no request waits for Redis
    assert len(consumers_of(backend, "/api/later/0")) == 1
    assert consumers_of(backend, "/api/later/1") == ["bob"]
    assert refused.returncode == 1
    assert "cannot reach Redis redis://127.0.0.1" in refused.stderr
    assert "Traceback" not in refused.stderr and refused.stdout == ""
    for instance in (one, two):
        assert instance.stderr.count("unreachable") == 1, instance.stderr
    assert "answers again" not in frozen_logs  # (a frozen server still accepts connections)

    # back: a key created now works on both (announced, or read again at reconnection)
    fresh = create_key(two, "dave")
    for n, instance in enumerate((one, two)):
        deadline = time.monotonic() + 15
        while instance.get(f"/api/after/{n}", fresh)[0] != 200:
            assert time.monotonic() < deadline, instance.stderr
            time.sleep(0.1)
        assert consumers_of(backend, f"/api/after/{n}") == ["dave"]
        assert instance.stderr.count("answers again") == 1


def test_a_purge_through_one_instance_empties_the_others_cache(
    cluster: Callable[..., list[Instance]], backend: Backend
) -> None:
    one, two = cluster(2)
    for instance in (one, two):
        assert instance.get("/cached/page")[1]["x-cache"] == "MISS"
        assert instance.get("/cached/page")[1]["x-cache"] == "HIT"
    assert len([r for r in backend.requests if r["path"] == "/cached/page"]) == 2

    # through one's admin API: applied there at once, published for every other worker
    done = one.bastion("cache", "purge", "--prefix", "/cached/")
    assert done.returncode == 0, done.stderr
    assert "at once in the worker that answered" in done.stdout  # one's admin API applied it
    for instance in (one, two):
        deadline = time.monotonic() + 2.0
        while instance.get("/cached/page")[1]["x-cache"] == "HIT":
            assert time.monotonic() < deadline, f"not purged on {instance.port}"
            time.sleep(0.05)
    # each instance asked the backend again, once
    assert len([r for r in backend.requests if r["path"] == "/cached/page"]) == 4


def test_reload_all_reloads_every_instance_and_a_different_config_shows(
    cluster: Callable[..., list[Instance]], backend: Backend
) -> None:
    one, two, three = cluster(3)
    deadline = time.monotonic() + 10
    while len(one.admin_get("/api/instances")["instances"]) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    status = one.bastion("status")
    assert status.returncode == 0, status.stderr
    assert "differs" not in status.stdout
    assert all(i.id in status.stdout for i in (one, two, three)), status.stdout

    # three's file gets one more route; nobody reloads it yet
    text = CONFIG.replace(
        "      - path: /\n", "      - path: /only-three/\n        respond: {status: 204}\n"
        "      - path: /\n",
    )  # fmt: skip
    three.config.write_text(text)
    assert three.get("/only-three/x")[0] == 200  # not in force yet: proxied

    sent = two.bastion("reload", "--all")
    assert sent.returncode == 0, sent.stderr
    for instance in (one, two, three):
        deadline = time.monotonic() + 5
        while "configuration reloaded from" not in instance.stderr:
            assert time.monotonic() < deadline, instance.stderr
            time.sleep(0.05)
        assert "reload asked for every instance" in instance.stderr
    assert three.get("/only-three/y")[0] == 204
    assert one.get("/only-three/z")[0] == 200  # one's file has no such route
    assert sorted(r["path"] for r in backend.requests if r["path"].startswith("/only-three/")) == [
        "/only-three/x",
        "/only-three/z",
    ]

    deadline = time.monotonic() + 10
    while True:
        answer = one.admin_get("/api/instances")
        drifted = [i["id"] for i in answer["instances"] if i["drift"]]
        if drifted == [three.id]:
            break
        assert time.monotonic() < deadline, answer
        time.sleep(0.2)
    hashes = {i["id"]: i["config_hash"] for i in answer["instances"]}
    assert answer["majority"] == hashes[one.id] == hashes[two.id] != hashes[three.id]
    status = two.bastion("status")
    assert status.returncode == 0, status.stderr
    flagged = [line for line in status.stdout.splitlines() if "differs" in line]
    assert len(flagged) == 1 and flagged[0].startswith(three.id), status.stdout


def test_keys_import_copies_the_file_store_into_redis(
    cluster: Callable[..., list[Instance]], backend: Backend, tmp_path: Path
) -> None:
    one, two = cluster(2)
    # a key made before Redis, in one's data dir (no config: the file store)
    made = subprocess.run(
        [sys.executable, "-m", "bastion", "keys", "create", "--consumer", "erin"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**one.env, "BASTION_DATA_DIR": one.env["T_DATA"]},
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert one.get("/api/file", key)[0] == 401  # Redis's keys are in force, not the file's

    imported = one.bastion("keys", "import")
    assert imported.returncode == 0, imported.stderr
    assert "imported 1 keys" in imported.stdout
    for n, instance in enumerate((one, two)):
        wait_status(instance, f"/api/imported/{n}", key, 200)
        assert consumers_of(backend, f"/api/imported/{n}") == ["erin"]
    again = one.bastion("keys", "import")
    assert "imported 0 keys" in again.stdout and "1 were there already" in again.stdout


def test_commands_that_need_redis_say_so_without_it(tmp_path: Path) -> None:
    config = tmp_path / "bastion.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        "sites: [{hosts: ['*'], routes: [{path: /, respond: {}}]}]\n"
    )
    for args in (("reload", "--all"), ("keys", "import")):
        done = subprocess.run(
            [sys.executable, "-m", "bastion", *args, "-c", str(config)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2, done
        assert "state.redis" in done.stderr and "Traceback" not in done.stderr


def test_every_worker_of_an_instance_follows_the_keys_and_reloads(
    cluster: Callable[..., list[Instance]], backend: Backend
) -> None:
    (gw,) = cluster(1, CONFIG + "workers: 2\n")
    key = create_key(gw, "frank")
    deadline = time.monotonic() + 2.0
    # each request on a connection of its own: the kernel spreads them over both workers
    while [gw.get(f"/api/w/{i}", key)[0] for i in range(20)] != [200] * 20:
        assert time.monotonic() < deadline
    forwarded = [r for r in backend.requests if r["path"].startswith("/api/w/")]
    assert forwarded and {dict(r["headers"]).get("x-consumer") for r in forwarded} == {"frank"}

    sent = gw.bastion("reload", "--all")
    assert sent.returncode == 0, sent.stderr
    deadline = time.monotonic() + 5
    while gw.stderr.count("configuration reloaded from") < 2:
        assert time.monotonic() < deadline, gw.stderr
        time.sleep(0.05)


def test_an_instance_started_while_redis_is_frozen_serves_the_keys_it_last_saw(
    cluster: Callable[..., list[Instance]], backend: Backend, tmp_path: Path
) -> None:
    (gw,) = cluster(1)
    redis: RedisServer = cluster.redis  # type: ignore[attr-defined]
    key = create_key(gw, "grace")
    wait_status(gw, "/api/first", key, 200)
    gw.stop()
    copy = Path(gw.env["T_DATA"]) / "api_keys.redis-copy.json"
    assert copy.stat().st_mode & 0o777 == 0o600
    assert key not in copy.read_text() and "grace" in copy.read_text()  # the hash only

    redis.pause()
    try:
        # the same machine started again: the same data dir
        again = Instance(tmp_path / "again", redis, backend, CONFIG, data=gw.env["T_DATA"])
        try:
            answer = again.get("/api/during", key)
            unknown = again.get("/api/unknown", "bk_00000000_nothing")
        finally:
            again.stop()
    finally:
        redis.resume()
    assert answer[0] == 200 and unknown[0] == 401
    assert consumers_of(backend, "/api/during") == ["grace"]
    assert "serving the 1 keys last read from it" in again.stderr


STATE_LINE = 'state: {redis: "redis://127.0.0.1:${T_REDIS}/0", timeout: 250ms}'


def sentinel_and_cluster_check(
    tmp_path: Path, redis: RedisServer, backend: Backend, state: str
) -> None:
    """Two instances on one Sentinel master or Cluster: a key and a purge reach both."""
    text = CONFIG.replace(STATE_LINE, state)
    assert text != CONFIG
    one = Instance(tmp_path / "one", redis, backend, text)
    two = Instance(tmp_path / "two", redis, backend, text)
    try:
        key = create_key(one, "heidi")
        for n, instance in enumerate((one, two)):
            wait_status(instance, f"/api/form/{n}", key, 200)
            assert consumers_of(backend, f"/api/form/{n}") == ["heidi"]
            assert instance.get("/cached/form")[1]["x-cache"] == "MISS"
            assert instance.get("/cached/form")[1]["x-cache"] == "HIT"
        assert one.bastion("cache", "purge", "--prefix", "/cached/").returncode == 0
        for instance in (one, two):
            deadline = time.monotonic() + 2.0
            while instance.get("/cached/form")[1]["x-cache"] == "HIT":
                assert time.monotonic() < deadline, f"not purged on {instance.port}"
                time.sleep(0.05)
    finally:
        one.stop()
        two.stop()
    assert "unreachable" not in one.stderr + two.stderr


def test_a_sentinel_master_shares_keys_and_purges(
    redis_sentinel: tuple[RedisServer, RedisServer, SentinelGroup], backend: Backend, tmp_path: Path
) -> None:
    master, _, sentinel = redis_sentinel
    state = (
        f"state: {{redis: {{sentinel: {json.dumps(sentinel.addresses)}, "
        f"service: {sentinel.service}}}, timeout: 250ms}}"
    )
    sentinel_and_cluster_check(tmp_path, master, backend, state)


def test_a_cluster_shares_keys_and_purges(
    redis_cluster: list[RedisServer], backend: Backend, tmp_path: Path
) -> None:
    state = f'state: {{redis: {{cluster: ["127.0.0.1:{redis_cluster[0].port}"]}}, timeout: 250ms}}'
    sentinel_and_cluster_check(tmp_path, redis_cluster[0], backend, state)
