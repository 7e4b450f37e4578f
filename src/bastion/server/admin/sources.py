"""What the admin API reads that other parts of bastion own: the traffic statistics and
the alerts, each through a Protocol bound after the endpoint is made.

Until one is bound (statistics switched off, no alert rules), the endpoints that read it
answer for its absence: `/api/stats` and `/api/live` say 503 "statistics are off",
`/api/alerts` lists none.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["WINDOWS", "AlertSource", "StatsSource"]

WINDOWS = ("5m", "1h", "24h", "7d", "30d")
"""The windows `/api/stats?window=` accepts."""


class StatsSource(Protocol):
    """The instance's traffic figures (the statistics store)."""

    def summary(self, window: str) -> dict[str, Any]:
        """The summary of one of `WINDOWS` (totals, series, routes, top lists, recent
        errors), as plain JSON values."""
        ...

    def live(self) -> dict[str, Any]:
        """The last complete second: requests, rps, status classes, percentiles, bytes,
        cache hits."""
        ...


class AlertSource(Protocol):
    """The alert rules' states."""

    def status(self) -> list[dict[str, Any]]:
        """One item per rule: {"name", "state", "since", "value", "threshold", "summary"}."""
        ...
