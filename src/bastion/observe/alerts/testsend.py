"""``bastion alerts test``: one test notification on every channel, each result printed."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import TYPE_CHECKING, TextIO

from bastion.observe.alerts.channels import Notification
from bastion.observe.alerts.delivery import try_send

if TYPE_CHECKING:
    from bastion.config.alert_models import Alerts

__all__ = ["send_test"]


def test_notification(settings: Alerts, now: float) -> Notification:
    return Notification(
        alert="test",
        state="test",
        kind="test",
        value=None,
        threshold=None,
        summary="a test notification sent by `bastion alerts test`; nothing is wrong",
        time=now,
        instance=settings.instance or socket.gethostname(),
    )


def send_test(settings: Alerts, secrets: frozenset[str], out: TextIO) -> int:
    """Send on every channel at once (one attempt each); 0 when every one delivered."""
    if not settings.channels:
        print("no alert channel is configured (alerts.channels)", file=out)
        return 1
    note = test_notification(settings, time.time())

    async def all_channels() -> list[str | None]:
        return await asyncio.gather(
            *(try_send(n, c, note, secrets) for n, c in settings.channels.items())
        )

    reasons = asyncio.run(all_channels())
    for (name, channel), reason in zip(settings.channels.items(), reasons, strict=True):
        result = "OK" if reason is None else f"FAILED: {reason}"
        print(f"{name} ({channel.type}): {result}", file=out)
    return 0 if all(r is None for r in reasons) else 1
