"""A JWKS URL's keys on a manual clock, against a real JWKS server: when they are fetched
again (the refresh interval), how often a failing or rotated server is asked (the cool-down),
and token dates read from the same clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

import pytest

from authtokens import HS_SECRET, JwksServer, Keys, claims, sign
from bastion.clock import ManualClock
from bastion.config.policy_auth import JwtAuth
from bastion.policies.jwks import JwksSource
from bastion.policies.jwt import JwtError, JwtVerifier


@pytest.fixture
def issuer() -> Iterator[JwksServer]:
    made = JwksServer(Keys().jwks())
    yield made
    made.stop()


Scenario = Callable[[JwksSource, ManualClock], Awaitable[None]]


def run(
    issuer: JwksServer, scenario: Scenario, refresh: float = 300.0, cooldown: float = 30.0
) -> None:
    clock = ManualClock()
    source = JwksSource(issuer.url, refresh, cooldown, 5.0, clock=clock)
    asyncio.run(scenario(source, clock))


def test_keys_are_fetched_again_after_the_refresh_interval(issuer: JwksServer) -> None:
    async def scenario(source: JwksSource, clock: ManualClock) -> None:
        await source.wait()
        assert issuer.fetches == 1 and len(source.keys) == 4
        clock.advance(299.0)
        assert not source.stale()  # (requests ask for a refresh only once it is stale)
        clock.advance(2.0)
        assert source.stale()
        issuer.doc = Keys().jwks("rotated-")
        source.refresh_soon()  # in the background: requests go on with the keys held
        assert source.keys and source.keys[0].kid is not None
        assert not source.keys[0].kid.startswith("rotated-")
        await source.wait()  # joins the fetch under way, asks for nothing more
        assert issuer.fetches == 2
        assert all(k.kid is not None and k.kid.startswith("rotated-") for k in source.keys)
        assert not source.stale()

    run(issuer, scenario)


def test_an_unknown_key_id_refetches_at_most_once_per_cooldown(issuer: JwksServer) -> None:
    async def scenario(source: JwksSource, clock: ManualClock) -> None:
        await source.wait(forced=True)
        assert issuer.fetches == 1
        for _ in range(10):  # tokens with made-up kids: no fetch inside the cool-down
            clock.advance(2.9)
            await source.wait(forced=True)
        assert issuer.fetches == 1
        clock.advance(1.0)  # 30 s since the last fetch
        await source.wait(forced=True)
        assert issuer.fetches == 2

    run(issuer, scenario)


def test_a_server_that_fails_keeps_the_keys_and_is_not_hammered(issuer: JwksServer) -> None:
    async def scenario(source: JwksSource, clock: ManualClock) -> None:
        await source.wait()
        held = source.keys
        issuer.status = 500
        clock.advance(301.0)
        source.refresh_soon()
        await source.wait()  # the fetch under way, which fails
        assert issuer.fetches == 2
        assert source.keys == held and source.error == "status 500"
        assert source.stale()
        for _ in range(29):  # stale, but tried a moment ago: no new attempt per request
            clock.advance(1.0)
            source.refresh_soon()
            assert source._task is None
        clock.advance(1.0)  # the cool-down has passed: tried again
        issuer.status = 200
        source.refresh_soon()
        await source.wait()
        assert issuer.fetches == 3 and not source.stale() and not source.error

    run(issuer, scenario)


def test_with_no_key_held_the_server_is_asked_every_5_seconds(issuer: JwksServer) -> None:
    issuer.status = 503

    async def scenario(source: JwksSource, clock: ManualClock) -> None:
        await source.wait(forced=True)
        assert issuer.fetches == 1 and not source.keys
        clock.advance(4.9)
        await source.wait(forced=True)
        assert issuer.fetches == 1
        clock.advance(0.1)  # 5 s, though the cool-down is 30 s: the issuer may be starting
        issuer.status = 200
        await source.wait(forced=True)
        assert issuer.fetches == 2 and source.keys

    run(issuer, scenario)


def test_token_dates_are_read_from_the_clock() -> None:
    clock = ManualClock()
    verifier = JwtVerifier(JwtAuth(algorithms=["HS256"], secret=HS_SECRET, leeway=10), clock)
    now = int(clock.time())
    token = claims(iat=now, nbf=now + 60, exp=now + 120)
    verifier.parse(sign(token))
    with pytest.raises(JwtError, match="not valid yet"):
        verifier.check_claims(token)
    clock.advance(50)  # inside the leeway of nbf
    verifier.check_claims(token)
    clock.advance(79)  # exp + leeway - 1
    verifier.check_claims(token)
    clock.advance(1)
    with pytest.raises(JwtError, match="expired"):
        verifier.check_claims(token)
