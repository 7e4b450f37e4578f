"""The admin listener: the dashboard, its login, and the JSON API (see
docs/observability.md). `AdminEndpoint` is what a worker starts; `StatsSource`
and `AlertSource` are what it reads the traffic figures and alert states through."""

from bastion.server.admin.endpoint import AdminEndpoint
from bastion.server.admin.sources import AlertSource, StatsSource

__all__ = ["AdminEndpoint", "AlertSource", "StatsSource"]
