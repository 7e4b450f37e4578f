"""The cache's time-dependent rules in-process, on a manual clock: the real caching handler
in front of the real proxy handler, against a real backend on a socket. Freshness, Age,
stale-while-revalidate and stale-if-error are checked by moving the clock instead of
sleeping; test_cache.py keeps gateway tests that wait in real time, to prove the wiring."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from cacheorigin import CountingBackend, Reply

from bastion.balance.balancer import Balancer, Member
from bastion.balance.endpoint import endpoint_of
from bastion.balance.policies import RoundRobin
from bastion.cache.capture import CaptureClient
from bastion.cache.handler import CachingHandler
from bastion.cache.key import KeyRules
from bastion.cache.policy import DEFAULT_STATUSES, Rules
from bastion.clock import ManualClock
from bastion.config import config_from_dict
from bastion.http.request import Request
from bastion.proxy.handler import ProxyHandler
from bastion.proxy.pool import Pool
from bastion.state.cache import MemoryCacheStore


@pytest.fixture
def origin() -> Iterator[CountingBackend]:
    b = CountingBackend()
    yield b
    b.stop()


class _Origin:
    """What the capture client takes from the client it stands in for: its scheme, its
    loop and the current Date line."""

    scheme = b"http"

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.date_header = b"Date: " + formatdate(usegmt=True).encode() + b"\r\n"


class Answer:
    """A response the route gave, as its client received it (the protocol adds the
    request's `extra_head` lines to the head, X-Cache among them)."""

    def __init__(self, client: CaptureClient, req: Request) -> None:
        self.status = client.error or client.status
        self.text = client.body.decode()
        self.headers: dict[str, str] = {}
        for line in (client.head + req.extra_head).split(b"\r\n")[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            if name:
                self.headers[name.strip().lower()] = value.strip()


class CachedRoute:
    """A `proxy:` route with `cache:` as the plan compiles it, run in the test's loop, with
    the cache reading `clock`. `route_cache` and `timeouts` are the route's config keys."""

    def __init__(
        self,
        upstream: str,
        clock: ManualClock,
        route_cache: dict[str, Any] | None = None,
        timeouts: dict[str, str] | None = None,
    ) -> None:
        proxy = {"upstreams": [upstream], "timeouts": timeouts or {"read": "2s", "connect": "1s"}}
        route = {"path": "/", "proxy": proxy, "cache": route_cache or {}}
        config = config_from_dict({"sites": [{"hosts": ["*"], "routes": [route]}]}).config
        compiled = config.sites[0].routes[0]
        assert compiled.proxy is not None and compiled.cache is not None
        self.loop = asyncio.get_running_loop()
        self.origin: Any = _Origin(self.loop)
        settings = compiled.proxy
        pool = Pool(settings.upstreams[0].url, self.loop, 8, settings.idle_timeout)
        self.pool = pool
        member = Member(endpoint_of(pool), 1, None, False)
        balancer = Balancer(
            "/", [member], RoundRobin(), "round_robin", settings.passive, 0.0, 0, 0, None
        )
        cache = compiled.cache
        rules = Rules(
            ttl=cache.ttl,
            heuristic=cache.heuristic,
            allow_authorization=cache.allow_authorization,
            statuses=DEFAULT_STATUSES,
            stale_while_revalidate=cache.stale_while_revalidate,
            stale_if_error=cache.stale_if_error,
        )
        self.handler = CachingHandler(
            ProxyHandler(settings, balancer, None, None),
            MemoryCacheStore(config.cache.max_size, config.cache.max_object_size),
            rules,
            KeyRules("sort", ()),
            config.cache.lock_timeout,
            None,
            clock=clock,
        )

    def send(self, path: str) -> asyncio.Future[Answer]:
        """A GET of `path`: the answer comes when the route has given it all."""
        done: asyncio.Future[Answer] = self.loop.create_future()
        req = Request()
        client = CaptureClient(self.origin, lambda c: done.set_result(Answer(c, req)))
        req.method = "GET"
        req.target = path.encode()
        req.path = req.raw_path = path
        req.host = "cache.test"
        req.host_header = b"cache.test"
        req.headers = [(b"host", b"Host", b"cache.test")]
        req.client_ip = "127.0.0.1"
        req.request_id = "test"
        req.body_done = True
        self.handler.handle(client, req)
        return done

    async def get(self, path: str) -> Answer:
        return await asyncio.wait_for(self.send(path), 10)

    def close(self) -> None:
        self.pool.retire()


def run(
    upstream: str,
    scenario: Callable[[CachedRoute, ManualClock], Awaitable[None]],
    route_cache: dict[str, Any] | None = None,
    timeouts: dict[str, str] | None = None,
) -> None:
    """Run `scenario` against a cached route in a loop of its own; the clock starts now
    (the backend's Date and Last-Modified fields are real times)."""

    async def main() -> None:
        clock = ManualClock(time.time())
        route = CachedRoute(upstream, clock, route_cache, timeouts)
        try:
            await scenario(route, clock)
        finally:
            route.close()

    asyncio.run(main())


def test_ttl_override_to_the_second(origin: CountingBackend) -> None:
    # the backend says no-cache; the route's ttl wins
    origin.replies["/t"] = Reply(headers={"Cache-Control": "no-cache"}, body=b"{n}")

    async def scenario(route: CachedRoute, clock: ManualClock) -> None:
        assert (await route.get("/t")).text == "1"
        clock.advance(1.2)
        hit = await route.get("/t")
        assert hit.headers["x-cache"] == "HIT"  # inside 2 s
        assert hit.headers["age"] == "1"
        assert origin.hits_of("/t") == 1
        clock.advance(0.7)
        assert (await route.get("/t")).headers["x-cache"] == "HIT"  # 1.9 s
        clock.advance(0.2)
        late = await route.get("/t")  # past 2 s: the backend again
        assert late.headers["x-cache"] == "MISS"
        assert late.text == "2"

    run(origin.url, scenario, {"ttl": "2s"})


def test_age_counts_from_the_backend_s_answer(origin: CountingBackend) -> None:
    origin.replies["/age"] = Reply(headers={"Cache-Control": "max-age=600", "Age": "100"})

    async def scenario(route: CachedRoute, clock: ManualClock) -> None:
        await route.get("/age")
        clock.advance(30)
        assert (await route.get("/age")).headers["age"] == "130"
        clock.advance(469)  # 599 s old of 600
        assert (await route.get("/age")).headers["x-cache"] == "HIT"
        clock.advance(2)
        assert (await route.get("/age")).headers["x-cache"] == "MISS"
        assert origin.hits_of("/age") == 2

    run(origin.url, scenario)


def test_heuristic_freshness_is_a_tenth_of_the_last_modified_age(
    origin: CountingBackend,
) -> None:
    async def scenario(route: CachedRoute, clock: ManualClock) -> None:
        modified = formatdate(clock.time() - 1000, usegmt=True)  # 1000 s old: 100 s fresh
        origin.replies["/h"] = Reply(headers={"Last-Modified": modified}, body=b"{n}")
        assert (await route.get("/h")).headers["x-cache"] == "MISS"
        clock.advance(90)
        assert (await route.get("/h")).headers["x-cache"] == "HIT"
        clock.advance(20)
        assert (await route.get("/h")).text == "2"

    run(origin.url, scenario, {"heuristic": True})


def test_stale_while_revalidate_one_refresh(origin: CountingBackend) -> None:
    origin.replies["/s"] = Reply(
        headers={"Cache-Control": "max-age=1, stale-while-revalidate=30"}, body=b"{n}"
    )

    async def scenario(route: CachedRoute, clock: ManualClock) -> None:
        assert (await route.get("/s")).text == "1"
        clock.advance(1.5)
        # a slow refresh must not hold anyone up; its answer stays fresh for the check below
        origin.replies["/s"] = Reply(
            headers={"Cache-Control": "max-age=60, stale-while-revalidate=30"},
            body=b"{n}",
            delay=0.3,
        )
        answers = [route.send("/s") for _ in range(10)]
        # answered at once, from the store, while the one refresh is still under way
        assert all(a.done() for a in answers)
        assert route.handler.refreshing
        assert {a.result().headers["x-cache"] for a in answers} == {"STALE"}
        assert {a.result().text for a in answers} == {"1"}
        deadline = time.monotonic() + 10
        while route.handler.refreshing:
            assert time.monotonic() < deadline, "the refresh never finished"
            await asyncio.sleep(0.02)
        assert origin.hits_of("/s") == 2  # exactly one background refresh
        fresh = await route.get("/s")
        assert (fresh.text, fresh.headers["x-cache"]) == ("2", "HIT")

    run(origin.url, scenario)


def test_stale_if_error_when_backend_dies() -> None:
    backend = CountingBackend()
    # Connection: close, so that no pooled connection outlives the server
    backend.replies["/e"] = Reply(
        headers={"Cache-Control": "max-age=1", "Connection": "close"}, body=b"kept"
    )

    async def scenario(route: CachedRoute, clock: ManualClock) -> None:
        assert (await route.get("/e")).text == "kept"
        backend.stop()
        clock.advance(1.5)
        answer = await route.get("/e")
        assert answer.status == 200 and answer.text == "kept"
        assert answer.headers["x-cache"] == "STALE"
        # past the stale-if-error window: the failure itself
        clock.advance(60)
        assert (await route.get("/e")).status == 502

    try:
        run(backend.url, scenario, {"stale_if_error": "1m"})
    finally:
        backend.stop()


def test_stale_if_error_on_timeout(origin: CountingBackend) -> None:
    origin.replies["/slow"] = Reply(
        headers={"Cache-Control": "max-age=1, stale-if-error=60"}, body=b"old"
    )

    async def scenario(route: CachedRoute, clock: ManualClock) -> None:
        assert (await route.get("/slow")).text == "old"
        clock.advance(1.5)
        origin.replies["/slow"].delay = 2.0  # past the route's read timeout
        answer = await route.get("/slow")
        assert (answer.status, answer.text, answer.headers["x-cache"]) == (200, "old", "STALE")

    # the read timeout runs on the loop's own clock: short, so that the test is quick
    run(origin.url, scenario, timeouts={"read": "300ms", "connect": "1s"})


def test_revalidation_with_304_once_stale(origin: CountingBackend) -> None:
    origin.replies["/r"] = Reply(headers={"Cache-Control": "max-age=10"}, etag='"v1"', body=b"r")

    async def scenario(route: CachedRoute, clock: ManualClock) -> None:
        assert (await route.get("/r")).headers["x-cache"] == "MISS"
        clock.advance(9.9)
        assert (await route.get("/r")).headers["x-cache"] == "HIT"
        clock.advance(0.2)
        again = await route.get("/r")
        assert (again.headers["x-cache"], again.text) == ("REVALIDATED", "r")
        assert origin.requests[-1][1].get("if-none-match") == '"v1"'
        # the 304 made the entry fresh again, for its whole max-age
        clock.advance(9.9)
        assert (await route.get("/r")).headers["x-cache"] == "HIT"
        assert origin.hits_of("/r") == 2

    run(origin.url, scenario)


def test_the_route_is_built_as_the_plan_builds_it(tmp_path: Path) -> None:
    """The harness above builds the caching handler itself; the plan compiler hands its
    clock through to the same object."""
    from bastion.plan import compile_plan
    from bastion.proxy.pool import PoolRegistry

    clock = ManualClock()
    config = config_from_dict(
        {
            "data_dir": str(tmp_path),
            "sites": [
                {
                    "hosts": ["*"],
                    "routes": [
                        {
                            "path": "/",
                            "proxy": {"upstreams": ["http://127.0.0.1:1"]},
                            "cache": {"ttl": "5s"},
                        }
                    ],
                }
            ],
        }
    ).config
    loop = asyncio.new_event_loop()
    pools = PoolRegistry(loop)
    try:
        plan = compile_plan(config, pools, "<test>", clock)
        paths = plan.hosts.lookup("example.test")
        assert paths is not None
        routes = paths.match("/")
        assert routes is not None
        handler = routes[0].handler
        assert isinstance(handler, CachingHandler)
        assert handler.now() == clock.time()
        clock.advance(5)
        assert handler.now() == clock.time()
    finally:
        pools.close()
        loop.close()
