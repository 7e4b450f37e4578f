"""Traffic statistics that survive restarts: the recorder's per-second Intervals written
into one SQLite file of the data dir by every worker (`StatsWriter`, a recorder sink),
and read back as summaries of a window, the last seconds, or a period (`StatsStore`) by
the admin API, the alerts and `bastion stats`. See docs/observability.md."""

from __future__ import annotations

from bastion.observe.stats.schema import STATS_FILE
from bastion.observe.stats.store import WINDOWS, StatsStore
from bastion.observe.stats.writer import StatsWriter

__all__ = ["STATS_FILE", "WINDOWS", "StatsStore", "StatsWriter"]
