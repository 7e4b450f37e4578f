"""http/wheel.py on a real event loop: deadlines are met never early, in order, once; a
discarded one never; an earlier deadline filed after later ones re-arms the loop timer;
an owner filed again while its slot runs waits for a later turn; one owner's failure
leaves the others theirs."""

from __future__ import annotations

import asyncio
import logging

import pytest
import uvloop

from bastion.http.wheel import TICK, TimerWheel


class Owner:
    def __init__(self, loop: asyncio.AbstractEventLoop, name: str, deadline: float) -> None:
        self.loop = loop
        self.name = name
        self.deadline = deadline
        self.calls: list[float] = []
        self.fail = False
        self.done = loop.create_future()

    def on_deadline(self) -> None:
        now = self.loop.time()
        self.calls.append(now)
        if not self.done.done():
            self.done.set_result(now)
        if self.fail:
            raise RuntimeError("boom")


def run(body: object) -> None:
    """Run `body` on a uvloop loop; an exception that escaped a loop callback (the
    wheel's own) fails the test, not only a log line."""
    escaped: list[dict[str, object]] = []
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.get_loop().set_exception_handler(lambda _loop, context: escaped.append(context))
        runner.run(body)  # type: ignore[arg-type]
    assert escaped == []


def test_deadlines_are_met_never_early_and_in_order() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        wheel = TimerWheel(loop)
        now = loop.time()
        # filed latest first: each earlier one must re-arm the loop timer
        owners = [Owner(loop, f"o{i}", now + 0.05 + 0.12 * i) for i in (4, 3, 2, 1, 0)]
        for owner in owners:
            wheel.add(owner, owner.deadline)
        met = await asyncio.wait_for(asyncio.gather(*(o.done for o in owners)), 5)
        for owner, at in zip(owners, met, strict=True):
            # (never early, within the loop's own clock: libuv's whole milliseconds, which
            # a loop timer may round either way; a connection checks its deadline again)
            assert at >= owner.deadline - 0.001, (owner.name, at, owner.deadline)
            assert owner.calls == [at]  # once
        assert met == sorted(met, reverse=True)  # the earliest deadline first
        assert not wheel.slots and not wheel.order and wheel.handle is None

    run(body())


def test_a_discarded_owner_is_never_told() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        wheel = TimerWheel(loop)
        now = loop.time()
        gone = Owner(loop, "gone", now + 0.05)
        kept = Owner(loop, "kept", now + 0.05)
        slot = wheel.add(gone, gone.deadline)
        assert wheel.add(kept, kept.deadline) == slot
        wheel.discard(gone, slot)
        wheel.discard(gone, slot + 1000)  # a slot that does not exist: nothing happens
        await asyncio.wait_for(kept.done, 5)
        await asyncio.sleep(3 * TICK)
        assert gone.calls == [] and len(kept.calls) == 1

    run(body())


def test_an_owner_filed_again_while_its_slot_runs_waits_for_a_later_turn() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        wheel = TimerWheel(loop)
        count = 0

        class Again:
            def on_deadline(self) -> None:
                nonlocal count
                count += 1
                if count < 5:
                    # a deadline already past: due at once, but not in this same run
                    wheel.add(self, loop.time() - 1.0)

        again = Again()
        wheel.add(again, loop.time())
        for _ in range(100):
            if count == 5:
                break
            await asyncio.sleep(0.02)
        assert count == 5
        assert not wheel.slots

    run(body())


def test_one_owners_failure_leaves_the_others_theirs(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        wheel = TimerWheel(loop)
        now = loop.time()
        first = Owner(loop, "first", now + 0.01)
        first.fail = True
        second = Owner(loop, "second", now + 0.01)
        wheel.add(first, first.deadline)
        wheel.add(second, second.deadline)
        later = Owner(loop, "later", now + 0.3)
        wheel.add(later, later.deadline)
        await asyncio.wait_for(asyncio.gather(first.done, second.done, later.done), 5)

    with caplog.at_level(logging.ERROR, logger="bastion.server"):
        run(body())
    assert "a connection's timer failed" in caplog.text
