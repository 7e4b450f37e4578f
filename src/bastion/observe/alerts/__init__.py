"""Alerts: rules evaluated like CloudWatch alarms over the gateway's figures, and the
channels (signed webhook, Slack-compatible webhook, SMTP mail) told when one fires or
resolves. See docs/observability-alerts.md."""

from bastion.observe.alerts.channels import Notification, SendError, sign
from bastion.observe.alerts.inputs import (
    AlertInputs,
    Certificate,
    PoolHealth,
    QuotaUse,
    ReloadResult,
)
from bastion.observe.alerts.leader import AlertLock
from bastion.observe.alerts.manager import AlertManager

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
    "sign",
]
