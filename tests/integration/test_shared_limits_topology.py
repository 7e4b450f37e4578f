"""Shared limits in the topologies of docs/scale-out.md, with real gateway processes and
real redis-servers: three instances sharing one server, and a Redis Cluster that loses a
node during traffic (with replicas: a failover; without: the lost node's keys fall back
while the other nodes' stay exact). No answer may be a 5xx of the gateway's making."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from test_shared_limits import Answer, config, get, received

from conftest import Backend, Gateway
from rediskit import REDIS_CLI, RedisServer, require_redis, start_cluster
from rediskit import redis_server as redis_server  # the fixture

pytestmark = pytest.mark.timeout(90)


# the counters of rate limits (other features keep keys of their own under the prefix)
RATE_KEYS = "bastion:{*}*|r:*"


def left(answer: Answer) -> int | None:
    """What the RateLimit field says is left, or None when there is none (an answer of
    the local fallback carries no RateLimit field)."""
    field = answer.headers.get("ratelimit")
    return int(field.split(";r=")[1].split(";")[0]) if field else None


def test_three_gateways_admit_exactly_the_limit_of_a_concurrent_burst(
    redis_server: Callable[[], RedisServer], backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    redis = redis_server()
    routes = [{"path": "/", "rate_limits": [{"rate": "20/m", "name": "shared"}]}]
    gateways = [gateway(config(redis.unix_url, backend, routes)) for _ in range(3)]

    # 60 requests at once, 20 on each gateway, each on a connection of its own
    with ThreadPoolExecutor(max_workers=24) as pool:
        answers = list(pool.map(lambda i: get(gateways[i % 3], f"/b/{i}"), range(60)))

    admitted = [i for i, a in enumerate(answers) if a.status == 200]
    # each gateway got 20: counting on its own, each would have admitted all of them
    assert len(admitted) == 20, answers
    assert {a.status for a in answers} == {200, 429}
    assert received(backend, "/b/") == sorted(f"/b/{i}" for i in admitted)
    assert all("unavailable" not in gw.stderr for gw in gateways)


def cluster_info(node: RedisServer, *words: str) -> str:
    return subprocess.run(
        [REDIS_CLI, "-p", str(node.port), *words], capture_output=True, text=True
    ).stdout


def holder(nodes: list[RedisServer], before: dict[int, int]) -> RedisServer:
    """The one master whose number of keys grew since ``before`` (port -> count)."""
    masters = [n for n in nodes if "role:master" in n.info("replication")]
    [grown] = [n for n in masters if n.keys(RATE_KEYS) > before[n.port]]
    return grown


def key_counts(nodes: list[RedisServer]) -> dict[int, int]:
    return {n.port: n.keys(RATE_KEYS) if n.proc and n.proc.poll() is None else 0 for n in nodes}


@pytest.fixture
def cluster_with_replicas(tmp_path: Path) -> Iterator[list[RedisServer]]:
    """Three masters and a replica of each; a node unreachable for 1 s is failed over."""
    require_redis()
    (tmp_path / "cluster").mkdir()
    nodes: list[RedisServer] = []
    options = ("--cluster-node-timeout", "1000", "--repl-diskless-sync-delay", "0")
    try:
        nodes = start_cluster(tmp_path / "cluster", size=6, replicas=1, options=options)
        deadline = time.monotonic() + 20
        replicas = [n for n in nodes if "role:slave" in n.info("replication")]
        while not all("master_link_status:up" in n.info("replication") for n in replicas):
            assert time.monotonic() < deadline, "the replicas did not sync"
            time.sleep(0.1)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
def cluster_without_replicas(tmp_path: Path) -> Iterator[list[RedisServer]]:
    """Three masters that keep serving their slots when another one is lost."""
    require_redis()
    (tmp_path / "cluster").mkdir()
    nodes: list[RedisServer] = []
    options = ("--cluster-node-timeout", "1000", "--cluster-require-full-coverage", "no")
    try:
        nodes = start_cluster(tmp_path / "cluster", options=options)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def test_a_cluster_failover_during_traffic_answers_no_5xx_and_keeps_the_counts(
    cluster_with_replicas: list[RedisServer],
    backend: Backend,
    gateway: Callable[..., Gateway],
) -> None:
    nodes = cluster_with_replicas
    redis = {"cluster": [f"127.0.0.1:{n.port}" for n in nodes]}
    # (per hour: the bucket refills by one every 36 s, none during the failover)
    routes = [{"path": "/", "rate_limits": [{"rate": "100/h", "name": "r"}]}]
    state = {"timeout": "500ms", "breaker": {"failures": 2, "open_for": "300ms"}}
    one = gateway(config(redis, backend, routes, state=state))
    two = gateway(config(redis, backend, routes, state=state))
    empty = key_counts(nodes)
    before = [get((one, two)[i % 2], f"/before/{i}") for i in range(6)]
    assert [left(a) for a in before] == list(range(99, 93, -1)), before
    master = holder(nodes, empty)
    [key] = master.all_keys(RATE_KEYS)
    [replica] = [
        n for n in nodes if f"master_port:{master.port}" in n.info("replication")
    ]  # (its only replica)
    # the replica has the count (replication is asynchronous: wait for its acknowledgement)
    assert master.command("WAIT", "1", "5000") == ":1"

    master.stop()
    during: list[Answer] = []
    deadline = time.monotonic() + 30
    while "role:master" not in replica.info("replication"):
        assert time.monotonic() < deadline, "no failover"
        during.append(get((one, two)[len(during) % 2], f"/during/{len(during)}"))
        time.sleep(0.05)
    # both gateways find the new master: their answers are counted in Redis again
    for gw in (one, two):
        while left(answer := get(gw, "/after")) is None:
            assert time.monotonic() < deadline, gw.stderr
            during.append(answer)
            time.sleep(0.1)

    assert all(a.status == 200 for a in during), [a for a in during if a.status != 200]
    assert all(a.took < 2.0 for a in during)
    # the six requests before the loss still count in the promoted replica
    final = get(one, "/final")
    assert final.status == 200
    assert left(final) is not None and left(final) <= 100 - 6 - 1, final
    assert replica.all_keys(RATE_KEYS) == [key]


def test_a_lost_cluster_node_sends_its_keys_to_the_fallback_and_the_others_stay_exact(
    cluster_without_replicas: list[RedisServer],
    backend: Backend,
    gateway: Callable[..., Gateway],
) -> None:
    nodes = cluster_without_replicas
    redis = {"cluster": [f"127.0.0.1:{n.port}" for n in nodes]}
    routes = [
        {"path": f"/{n}/", "rate_limits": [{"rate": "5/m", "name": "r", "on_store_down": "allow"}]}
        for n in range(8)
    ]
    # a breaker that never opens: each request asks Redis, so each shows where its key is
    state = {"timeout": "500ms", "breaker": {"failures": 1000}}
    gw = gateway(config(redis, backend, routes, state=state))
    where: dict[int, int] = {}  # route -> the port of the node holding its counter
    for n in range(8):
        counts = key_counts(nodes)
        assert left(get(gw, f"/{n}/first")) == 4
        where[n] = holder(nodes, counts).port
    lost = next(node for node in nodes if 0 < list(where.values()).count(node.port) < 8)
    lost_routes = [n for n in range(8) if where[n] == lost.port]
    kept_routes = [n for n in range(8) if where[n] != lost.port]
    assert lost_routes and kept_routes, where

    lost.stop()
    answers = {n: [get(gw, f"/{n}/after/{i}") for i in range(6)] for n in range(8)}

    for n in lost_routes:
        # the fallback of these limits: admitted, without a count from Redis, at once
        assert [a.status for a in answers[n]] == [200] * 6, answers[n]
        assert [left(a) for a in answers[n]] == [None] * 6
        assert all(a.took < 2.0 for a in answers[n])
    for n in kept_routes:
        # counted on in Redis: 4 left after the first request, then 3, 2, 1, 0, refused
        assert [a.status for a in answers[n]] == [200] * 4 + [429] * 2, (n, answers[n])
        assert [left(a) for a in answers[n][:4]] == [3, 2, 1, 0]
    assert "unavailable" not in gw.stderr  # (the breaker never opened)
    assert all(a.status < 500 for route in answers.values() for a in route)
