"""The pipelined connection of a single Redis server (``redis://``, ``unix://``) against a
real redis-server: the database and the ACL user of the URL, many checks in flight at
once answered each with its own reply, a frozen server failing them all within the
timeout, and the connection made again afterwards."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable

import pytest

from bastion.config.state_models import State
from bastion.state.limits import Check, StoreUnavailable
from bastion.state.redis_limits import RedisLimitStore
from rediskit import REDIS_CLI, RedisServer
from rediskit import redis_server as redis_server  # the fixture

pytestmark = pytest.mark.timeout(60)

RATE = Check(1000, 60.0, 1000)  # 1000/m: never refused here


def store(url: str, **state: object) -> RedisLimitStore:
    made = RedisLimitStore(State.model_validate({"redis": url, "timeout": "2s", **state}))
    assert made.connection.direct is not None  # the pipelined path, not redis-py's
    return made


def keys_in(server: RedisServer, db: int) -> list[str]:
    out = subprocess.run(
        [REDIS_CLI, "-p", str(server.port), "-n", str(db), "--raw", "KEYS", "*"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return sorted(line for line in out.stdout.splitlines() if line)


def test_the_database_of_the_url_over_tcp_and_the_unix_socket(
    redis_server: Callable[[], RedisServer],
) -> None:
    server = redis_server()

    async def run() -> None:
        await store(f"redis://127.0.0.1:{server.port}/3").take([RATE], ["r|tcp"], 0.0)
        await store(f"{server.unix_url}?db=5").take([RATE], ["r|unix"], 0.0)

    asyncio.run(run())
    assert [k.endswith("r|tcp") for k in keys_in(server, 3)] == [True]
    assert [k.endswith("r|unix") for k in keys_in(server, 5)] == [True]
    assert keys_in(server, 0) == []


def test_an_acl_user_and_its_password(redis_server: Callable[[], RedisServer]) -> None:
    server = redis_server()
    server.command("ACL", "SETUSER", "gateway", "on", ">gw-secret", "~*", "+@all")
    wrong = store(f"redis://gateway:not-it@127.0.0.1:{server.port}/0", breaker={"failures": 1})

    async def run() -> tuple[bool, str]:
        good = store(f"redis://gateway:gw-secret@127.0.0.1:{server.port}/0")
        allowed, _ = await good.take([RATE], ["r|acl"], 0.0)
        try:
            await wrong.take([RATE], ["r|acl"], 0.0)
        except StoreUnavailable:
            return allowed, "refused"
        return allowed, "admitted"

    assert asyncio.run(run()) == (True, "refused")
    assert len(keys_in(server, 0)) == 1


def test_many_checks_in_flight_each_get_their_own_answer(
    redis_server: Callable[[], RedisServer],
) -> None:
    """200 checks at once on one connection, on 20 keys of 10 units each: every key
    admits exactly 10, whatever order the replies come back in."""
    server = redis_server()
    limits = store(server.unix_url)
    small = Check(10, 3600.0, 10)

    async def run() -> list[bool]:
        taken = [limits.take([small], [f"r|k{i % 20}"], 0.0, True) for i in range(200)]
        return [allowed for allowed, _ in await asyncio.gather(*taken)]

    answers = asyncio.run(run())
    for key in range(20):
        assert answers[key::20].count(True) == 10, key


def test_a_frozen_server_fails_the_checks_in_flight_then_is_used_again(
    redis_server: Callable[[], RedisServer],
) -> None:
    server = redis_server()
    limits = store(server.url, timeout="300ms", breaker={"failures": 1000})

    async def run() -> tuple[list[object], float, bool]:
        assert (await limits.take([RATE], ["r|f"], 0.0))[0]
        server.pause()
        start = time.monotonic()
        try:
            frozen = await asyncio.gather(
                *(limits.take([RATE], ["r|f"], 0.0) for _ in range(50)), return_exceptions=True
            )
        finally:
            server.resume()
        took = time.monotonic() - start
        after, _ = await limits.take([RATE], ["r|f"], 0.0)
        return frozen, took, after

    frozen, took, after = asyncio.run(run())
    assert all(isinstance(outcome, StoreUnavailable) for outcome in frozen), frozen
    assert took < 2.0  # each waited the timeout (0.3 s), not one after the other
    assert after  # a new connection, answered
