"""Alerts: rules evaluated like CloudWatch alarms over the gateway's figures, and the
channels (signed webhook, Slack-compatible webhook, SMTP mail) told when one fires or
resolves. See docs/observability.md.

The names below are loaded on first use: a worker without alert rules imports only
``service`` and ``gateway``, never the senders (smtplib, urllib, email) nor the manager.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bastion.observe.alerts.channels import Notification, SendError, sign
    from bastion.observe.alerts.inputs import (
        AlertInputs,
        Certificate,
        PoolHealth,
        QuotaUse,
        ReloadResult,
        StoreFallback,
    )
    from bastion.observe.alerts.leader import AlertLock
    from bastion.observe.alerts.manager import AlertManager

_WHERE = {
    "AlertInputs": "inputs",
    "Certificate": "inputs",
    "PoolHealth": "inputs",
    "QuotaUse": "inputs",
    "ReloadResult": "inputs",
    "StoreFallback": "inputs",
    "AlertLock": "leader",
    "AlertManager": "manager",
    "Notification": "channels",
    "SendError": "channels",
    "sign": "channels",
}

__all__ = [
    "AlertInputs",
    "AlertLock",
    "AlertManager",
    "Certificate",
    "Notification",
    "PoolHealth",
    "QuotaUse",
    "ReloadResult",
    "SendError",
    "StoreFallback",
    "sign",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
