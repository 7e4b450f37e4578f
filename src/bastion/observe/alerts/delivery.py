"""Notifications leave the event loop: each delivery runs its blocking sender in a thread and
is retried with backoff; a failure is logged (without secrets) and never reaches the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from bastion.config.show import redact
from bastion.observe.alerts.channels import (
    Notification,
    SendError,
    channel_secrets,
    send,
    with_url_parts,
)

if TYPE_CHECKING:
    from bastion.config.alert_models import AlertChannel

__all__ = ["RETRY_DELAYS", "Deliveries", "try_send"]

log = logging.getLogger("bastion.alerts")

RETRY_DELAYS = (5.0, 30.0, 120.0)
"""Seconds before each retry of a failed delivery: four attempts in about 2.5 minutes."""


SENDERS = 4
"""Attempts of one worker under way at once, each in a daemon thread of its own. A receiver
that accepts and never answers holds one for the channel's timeout: never a thread of the
loop's default pool, which requests wait for (basic auth's password checks, DNS lookups),
and never one that a stopping worker waits for."""


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():
        return  # the delivery was cancelled meanwhile
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


async def in_daemon_thread(fn: Callable[[], object]) -> None:
    """Run `fn` in a daemon thread and wait for it: cancelling the wait leaves the thread to
    its own timeout, and a process that exits does not wait for it."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    run = contextvars.copy_context().run

    def work() -> None:
        error: BaseException | None = None
        try:
            run(fn)
        except BaseException as exc:  # handed to the awaiting task
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(_settle, done, error)

    threading.Thread(target=work, name="bastion-alert", daemon=True).start()
    await done


async def try_send(
    name: str,
    channel: AlertChannel,
    note: Notification,
    hidden: frozenset[str] = frozenset(),
) -> str | None:
    """One attempt in a daemon thread: None when delivered, else the reason (secret-free)."""
    hidden = with_url_parts(hidden) | channel_secrets(channel)
    try:
        await in_daemon_thread(functools.partial(send, channel, note))
    except SendError as exc:
        return redact(str(exc), hidden)
    except Exception as exc:  # a sender's bug must not end the alerting of other rules
        return redact(f"{type(exc).__name__}: {exc}", hidden)
    return None


class Deliveries:
    """The deliveries under way: started without waiting, awaited by ``drain``."""

    def __init__(
        self, delays: Sequence[float] = RETRY_DELAYS, hidden: frozenset[str] = frozenset()
    ) -> None:
        self.delays = tuple(delays)
        self.hidden = hidden
        self._tasks: set[asyncio.Task[bool]] = set()
        self._senders: asyncio.Semaphore | None = None  # made on the loop, at first use

    def start(self, name: str, channel: AlertChannel, note: Notification) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(name, channel, note))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, name: str, channel: AlertChannel, note: Notification) -> bool:
        attempts = len(self.delays) + 1
        for attempt in range(1, attempts + 1):
            if self._senders is None:
                self._senders = asyncio.Semaphore(SENDERS)
            async with self._senders:
                reason = await try_send(name, channel, note, self.hidden)
            if reason is None:
                log.info("alert %s %s: notified on channel %s", note.alert, note.state, name)
                return True
            if attempt == attempts:
                log.error(
                    "alert %s %s: channel %s (%s) failed %d times, giving up: %s",
                    note.alert,
                    note.state,
                    name,
                    channel.type,
                    attempts,
                    reason,
                )
                return False
            delay = self.delays[attempt - 1]
            log.warning(
                "alert %s %s: channel %s (%s) failed: %s; retrying in %.0f s",
                note.alert,
                note.state,
                name,
                channel.type,
                reason,
                delay,
            )
            await asyncio.sleep(delay)
        return False

    async def drain(self) -> None:
        """Wait for every delivery under way (tests; a stopping worker)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
