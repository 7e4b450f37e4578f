"""Rate limits and quotas shared through a real redis-server by real gateway processes:
exact across instances and workers, all-or-nothing, and what happens while Redis is
frozen (SIGSTOP), gone and back."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_metrics import scrape

from conftest import Backend, Gateway, free_port
from rediskit import RedisServer, SentinelGroup
from rediskit import redis_cluster as redis_cluster  # the fixtures
from rediskit import redis_sentinel as redis_sentinel
from rediskit import redis_server as redis_server

pytestmark = pytest.mark.timeout(120)


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, took: float) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.took = took

    def __repr__(self) -> str:
        return f"<{self.status} {self.headers} {self.body[:200]!r}>"


def get(gw: Gateway, path: str, headers: dict[str, str] | None = None) -> Answer:
    """One request on a connection of its own (so that workers share the requests)."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    start = time.monotonic()
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return Answer(
            resp.status, {k.lower(): v for k, v in resp.getheaders()}, body,
            time.monotonic() - start,
        )  # fmt: skip
    finally:
        conn.close()


def config(
    redis: str | dict[str, Any], backend: Backend, routes: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    # a generous timeout unless the test sets one: these count what Redis answers, and a
    # loaded test machine must not send a request to the local fallback
    state = {"redis": redis, "timeout": "2s", **extra.pop("state", {})}
    return {
        "access_log": {"format": "off"},
        "state": state,
        "sites": [
            {
                "hosts": ["*"],
                "routes": [{"proxy": {"upstreams": [backend.url]}, **r} for r in routes],
            }
        ],
        **extra,
    }


def received(backend: Backend, prefix: str) -> list[str]:
    return sorted(r["path"] for r in backend.requests if r["path"].startswith(prefix))


def assert_refused_with_fields(answer: Answer, limit_name: str) -> None:
    assert answer.status == 429, answer
    assert int(answer.headers["retry-after"]) >= 1
    assert f'"{limit_name}";' in answer.headers["ratelimit-policy"]
    assert f'"{limit_name}";r=0;' in answer.headers["ratelimit"]


def test_two_gateways_admit_exactly_the_limit_between_them(
    redis_server: Callable[[], RedisServer], backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    redis = redis_server()
    routes = [{"path": "/", "rate_limits": [{"rate": "10/m", "name": "shared"}]}]
    one = gateway(config(redis.url, backend, routes))
    two = gateway(config(redis.url, backend, routes))

    answers = [get((one, two)[i % 2], f"/burst/{i}") for i in range(30)]

    admitted = [i for i, a in enumerate(answers) if a.status == 200]
    assert len(admitted) == 10, answers
    for answer in answers:
        if answer.status != 200:
            assert_refused_with_fields(answer, "shared")
    # both instances admitted some: the count is shared, not each one's own
    assert {i % 2 for i in admitted} == {0, 1}
    assert received(backend, "/burst/") == sorted(f"/burst/{i}" for i in admitted)


def test_two_workers_admit_exactly_the_limit_between_them(
    redis_server: Callable[[], RedisServer], backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    redis = redis_server()
    routes = [{"path": "/", "rate_limits": [{"rate": "10/m", "name": "shared"}]}]
    gw = gateway(config(redis.url, backend, routes, workers=2))

    answers = [get(gw, f"/w/{i}") for i in range(30)]

    assert [a.status for a in answers].count(200) == 10, answers
    assert len(received(backend, "/w/")) == 10


def test_a_quota_is_exact_across_two_instances_over_a_unix_socket(
    redis_server: Callable[[], RedisServer], backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    redis = redis_server()
    routes = [{"path": "/", "quotas": [{"limit": 7, "per": "day", "key": "header:X-Key"}]}]
    one = gateway(config(redis.unix_url, backend, routes))
    two = gateway(config(redis.unix_url, backend, routes))

    answers = [get((one, two)[i % 2], f"/q/{i}", {"X-Key": "customer"}) for i in range(20)]
    other = get(one, "/q/other", {"X-Key": "someone-else"})

    assert [a.status for a in answers] == [200] * 7 + [429] * 13, answers
    refused = answers[-1]
    assert int(refused.headers["retry-after"]) >= 1
    assert ";r=0;" in refused.headers["ratelimit"]
    assert other.status == 200  # counted by key: another customer has its own
    assert len(received(backend, "/q/")) == 8


def test_a_refused_request_consumes_nothing_of_the_other_limits(
    redis_server: Callable[[], RedisServer], backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    """A rate limit per client address and a quota of 1 per key: each key's second
    request is refused by its quota, and must not use the client's rate limit."""
    redis = redis_server()
    route = {
        "path": "/",
        "rate_limits": [{"rate": "4/m", "name": "rate"}],
        "quotas": [{"limit": 1, "per": "day", "key": "header:X-Key", "name": "quota"}],
    }
    gw = gateway(config(redis.url, backend, [route]))

    statuses = []
    for n in range(1, 5):
        for attempt in range(2):
            statuses.append(get(gw, f"/a/{n}/{attempt}", {"X-Key": f"k{n}"}).status)
    last = get(gw, "/a/5/0", {"X-Key": "k5"})

    # 4 keys admitted once each: the rate limit's 4, untouched by the 4 quota refusals
    assert statuses == [200, 429] * 4
    assert_refused_with_fields(last, "rate")
    assert '"quota";r=1;' in last.headers["ratelimit"]  # k5's quota was not consumed either
    assert received(backend, "/a/") == [f"/a/{n}/0" for n in range(1, 5)]


def test_redis_frozen_each_limit_falls_back_as_configured_then_is_exact_again(
    redis_server: Callable[[], RedisServer],
    backend: Backend,
    gateway: Callable[..., Gateway],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    redis = redis_server()
    redis.command("CONFIG", "SET", "requirepass", "s3cret-pass")
    monkeypatch.setenv("REDIS_PASSWORD", "s3cret-pass")
    url = f"redis://:${{REDIS_PASSWORD}}@127.0.0.1:{redis.port}/0"
    routes = [
        {"path": "/allow/", "rate_limits": [{"rate": "2/m", "on_store_down": "allow"}]},
        {"path": "/local/", "rate_limits": [{"rate": "6/m", "name": "local"}]},
        {"path": "/deny/", "quotas": [{"limit": 100, "per": "day", "on_store_down": "deny"}]},
    ]
    # (a short timeout, but not so short that a busy test machine misses it before the pause)
    state = {"timeout": "250ms", "breaker": {"failures": 3, "open_for": "1s"}, "instances": 3}
    metrics = free_port()
    gw = gateway(
        config(url, backend, routes, state=state, metrics={"listen": f"127.0.0.1:{metrics}"})
    )
    assert get(gw, "/deny/before").status == 200  # Redis answers

    redis.pause()
    try:
        # these open the breaker (3 timeouts), then are let through without a round trip
        allowed = [get(gw, f"/allow/{i}") for i in range(6)]
        local = [get(gw, f"/local/{i}") for i in range(6)]
        denied = get(gw, "/deny/during")
        during = scrape(metrics)
    finally:
        redis.resume()

    assert during[("bastion_limit_store_unavailable", ())] == 1
    assert {
        decision: during.get(("bastion_limit_store_fallbacks_total", (("decision", decision),)))
        for decision in ("allow", "local", "local_refused", "deny")
    } == {"allow": 6, "local": 2, "local_refused": 4, "deny": 1}
    for answer in [*allowed, *local, denied]:
        assert answer.took < 2.0, answer
    assert [a.status for a in allowed] == [200] * 6
    # 6/m shared by 3 instances: each worker admits 2 on its own
    assert [a.status for a in local] == [200, 200, 429, 429, 429, 429]
    assert int(local[-1].headers["retry-after"]) >= 1
    assert denied.status == 503
    problem = json.loads(denied.body)
    assert "limit store is unavailable" in problem["detail"]
    assert int(denied.headers["retry-after"]) >= 1
    log = gw.stderr
    assert log.count(f"limit store redis://127.0.0.1:{redis.port}/0 unavailable") == 1, log
    assert "s3cret-pass" not in log

    # the breaker tries again after open_for; from then on the counts are Redis's again
    time.sleep(1.2)
    after = [get(gw, f"/local/after/{i}") for i in range(8)]
    assert [a.status for a in after] == [200] * 6 + [429] * 2, after
    assert_refused_with_fields(after[-1], "local")
    assert gw.stderr.count("answers again: limits are shared again") == 1
    assert scrape(metrics)[("bastion_limit_store_unavailable", ())] == 0
    assert received(backend, "/local/") == sorted(
        [f"/local/{i}" for i in range(2)] + [f"/local/after/{i}" for i in range(6)]
    )


def test_redis_restarted_on_the_same_port_is_used_again(
    redis_server: Callable[[], RedisServer], backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    redis = redis_server()
    routes = [{"path": "/", "rate_limits": [{"rate": "5/m", "name": "r"}]}]
    state = {"timeout": "250ms", "breaker": {"failures": 1, "open_for": "300ms"}}
    gw = gateway(config(redis.url, backend, routes, state=state))
    assert get(gw, "/r/before").status == 200

    redis.stop()
    during = [get(gw, f"/r/down/{i}") for i in range(3)]
    assert [a.status for a in during] == [200] * 3  # local: 5/m in this one worker
    assert "unavailable" in gw.stderr

    redis.start()  # empty: the counters start again
    time.sleep(0.5)
    deadline = time.monotonic() + 10
    while "answers again: limits are shared again" not in gw.stderr and time.monotonic() < deadline:
        get(gw, "/r/probe")
        time.sleep(0.2)
    assert redis.keys("bastion:{*") == 1  # the probe was counted in the new server
    used = 5 - int(get(gw, "/r/look").headers["ratelimit"].split(";r=")[1].split(";")[0])
    assert used >= 2  # the probe and this request, counted in Redis


def test_a_gateway_without_redis_never_loads_redis_py(
    redis_server: Callable[[], RedisServer], backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    """Checked in the running worker's memory map: redis-py loads the hiredis parser."""
    routes = [
        {"path": "/", "rate_limits": [{"rate": "5/m"}], "quotas": [{"limit": 9, "per": "day"}]}
    ]
    plain = config("", backend, routes)
    del plain["state"]
    without = gateway(plain)
    assert get(without, "/").status == 200
    assert "hiredis" not in Path(f"/proc/{without.pid}/maps").read_text()

    redis = redis_server()
    with_redis = gateway(config(redis.url, backend, routes))
    assert get(with_redis, "/").status == 200
    assert "hiredis" in Path(f"/proc/{with_redis.pid}/maps").read_text()


def test_a_sentinel_master_counts_for_two_gateways(
    redis_sentinel: tuple[RedisServer, RedisServer, SentinelGroup],
    backend: Backend,
    gateway: Callable[..., Gateway],
) -> None:
    master, _, sentinel = redis_sentinel
    redis = {"sentinel": sentinel.addresses, "service": sentinel.service}
    routes = [{"path": "/", "rate_limits": [{"rate": "5/m", "name": "s"}]}]
    one = gateway(config(redis, backend, routes))
    two = gateway(config(redis, backend, routes))

    answers = [get((one, two)[i % 2], f"/s/{i}") for i in range(12)]

    assert [a.status for a in answers].count(200) == 5, answers
    # counted in the master the Sentinel named (limit keys: "bastion:{tag}…"; the
    # instances' heartbeats are "bastion:instances")
    assert master.keys("bastion:{*") == 1
    assert "unavailable" not in one.stderr + two.stderr  # never fell back


def test_a_cluster_counts_for_two_gateways(
    redis_cluster: list[RedisServer], backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    redis = {"cluster": [f"127.0.0.1:{redis_cluster[0].port}"]}
    routes = [
        {
            "path": f"/{n}/",
            "rate_limits": [{"rate": "5/m", "name": "r"}],
            "quotas": [{"limit": 4, "per": "day", "key": "header:X-Key", "name": "q"}],
        }
        for n in range(4)
    ]
    one = gateway(config(redis, backend, routes))
    two = gateway(config(redis, backend, routes))

    statuses = {
        n: [get((one, two)[i % 2], f"/{n}/{i}", {"X-Key": "k"}).status for i in range(8)]
        for n in range(4)
    }

    # every route: its quota (4) admits before its rate limit (5) refuses; one script
    # call per request although the two keys count different things
    assert statuses == {n: [200] * 4 + [429] * 4 for n in range(4)}
    holders = [node for node in redis_cluster if node.keys("bastion:{*")]
    for node in holders:
        assert node.keys("bastion:{*") % 2 == 0  # a route's two keys are on one node
    assert sum(node.keys("bastion:{*") for node in redis_cluster) == 8


def test_a_quota_raised_by_a_reload_admits_again_at_once(
    redis_server: Callable[[], RedisServer], backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    """The counters stay in Redis across the reload; a refusal remembered under the old
    config does not outlive it."""
    redis = redis_server()

    def routes(limit: int) -> list[dict[str, Any]]:
        return [{"path": "/", "quotas": [{"limit": limit, "per": "day", "key": "route"}]}]

    gw = gateway(config(redis.url, backend, routes(2)))
    assert [get(gw, f"/before/{i}").status for i in range(3)] == [200, 200, 429]

    current = config(redis.url, backend, routes(3))
    current["listen"] = {"http": f"127.0.0.1:{gw.port}"}
    current["data_dir"] = str(gw.workdir / "data")
    gw.reload(current, wait_for="configuration reloaded")

    # one more under the raised quota (the two before the reload still count), then none
    assert [get(gw, f"/after/{i}").status for i in range(2)] == [200, 429]


def test_after_a_sentinel_failover_the_counts_go_on_in_the_new_master(
    redis_sentinel: tuple[RedisServer, RedisServer, SentinelGroup],
    backend: Backend,
    gateway: Callable[..., Gateway],
) -> None:
    master, replica, sentinel = redis_sentinel
    redis = {"sentinel": sentinel.addresses, "service": sentinel.service}
    routes = [{"path": "/", "rate_limits": [{"rate": "10/m", "name": "s"}]}]
    state = {"timeout": "1s", "breaker": {"failures": 1, "open_for": "300ms"}}
    gw = gateway(config(redis, backend, routes, state=state))
    before = [get(gw, f"/before/{i}") for i in range(4)]
    # counted in Redis (answers of the fallback carry no RateLimit field)
    for n, answer in enumerate(before):
        assert answer.status == 200
        assert f'"s";r={9 - n};' in answer.headers.get("ratelimit", ""), (answer, gw.stderr)
    # the replica has the count (replication is asynchronous)
    [key] = master.all_keys("bastion:{*")  # the limit's (instances are registered too)
    deadline = time.monotonic() + 10
    while replica.get(key) != master.get(key):
        assert time.monotonic() < deadline, "the replica did not catch up"
        time.sleep(0.05)

    master.stop()
    deadline = time.monotonic() + 20
    while sentinel.master_port() != replica.port:
        assert time.monotonic() < deadline, "no failover"
        get(gw, "/during")  # answered by the fallback meanwhile
        time.sleep(0.1)
    while "answers again: limits are shared again" not in gw.stderr:
        assert time.monotonic() < deadline, gw.stderr
        get(gw, "/during")
        time.sleep(0.1)

    # the four requests before the failover still count: not a fresh bucket
    after = get(gw, "/after")
    assert after.status == 200
    left = int(after.headers["ratelimit"].split(";r=")[1].split(";")[0])
    assert left <= 10 - 4 - 1, after
    assert replica.keys("bastion:{*") == 1
