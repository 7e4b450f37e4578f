"""Notifications leave the event loop: each delivery runs its blocking sender in a thread and
is retried with backoff; a failure is logged (without secrets) and never reaches the caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from bastion.config.alert_models import AlertChannel
from bastion.config.show import redact
from bastion.observe.alerts.channels import (
    Notification,
    SendError,
    channel_secrets,
    send,
    with_url_parts,
)

__all__ = ["RETRY_DELAYS", "Deliveries", "try_send"]

log = logging.getLogger("bastion.alerts")

RETRY_DELAYS = (5.0, 30.0, 120.0)
"""Seconds before each retry of a failed delivery: four attempts in about 2.5 minutes."""


async def try_send(
    name: str, channel: AlertChannel, note: Notification, hidden: frozenset[str] = frozenset()
) -> str | None:
    """One attempt in a thread: None when delivered, else the reason (secret-free)."""
    hidden = with_url_parts(hidden) | channel_secrets(channel)
    try:
        await asyncio.to_thread(send, channel, note)
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

    def start(self, name: str, channel: AlertChannel, note: Notification) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(name, channel, note))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, name: str, channel: AlertChannel, note: Notification) -> bool:
        attempts = len(self.delays) + 1
        for attempt in range(1, attempts + 1):
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
