"""What alert rules read, as one Protocol: the gateway implements it over the statistics
store, the balancers' status, the certificate store and the reload results; tests implement
it with figures they set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "AlertInputs",
    "Certificate",
    "PoolHealth",
    "QuotaUse",
    "ReloadResult",
    "StoreFallback",
]


@dataclass(frozen=True, slots=True)
class PoolHealth:
    """An upstream pool's endpoints: how many are healthy of how many."""

    healthy: int
    total: int


@dataclass(frozen=True, slots=True)
class Certificate:
    """A certificate served: its names, its expiry, the last renewal error (None: none)."""

    names: tuple[str, ...]
    not_after: float | None
    """Epoch seconds; None when no certificate could be read (ordering failed, say)."""
    renewal_error: str | None = None


@dataclass(frozen=True, slots=True)
class QuotaUse:
    """A consumer's use of its quota in the quota's current period."""

    used: int
    limit: int


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """The last configuration reload: whether it was applied, when (epoch), why not."""

    ok: bool
    at: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class StoreFallback:
    """The shared limit store (state.redis) as the instance's workers see it now."""

    unavailable: int
    """Workers whose store breaker is open: their limits apply ``on_store_down``."""
    fallbacks: int
    """Requests decided by the fallback since the workers started."""


class AlertInputs(Protocol):
    """The figures rules are evaluated on. Every method is called on the event loop at an
    evaluation (at most once a second): each must answer from memory or a quick local read."""

    def period(self, since: float, until: float, route: str | None = None) -> dict[str, Any]:
        """Traffic totals of [since, until) in the "totals" shape of ``StatsStore.summary``
        ("requests", "status" by class, "latency" and "upstream_latency" percentiles,
        "refusals" by status), for one route or all traffic; ``{}`` when the gateway keeps
        no statistics (traffic rules then have no data)."""
        ...

    def pools(self) -> dict[str, PoolHealth]:
        """Every configured upstream pool by name."""
        ...

    def certificates(self) -> list[Certificate]:
        """Every certificate the gateway serves."""
        ...

    def quotas(self) -> dict[str, QuotaUse]:
        """Each consumer's quota use (the fullest quota when it has several)."""
        ...

    def last_reload(self) -> ReloadResult | None:
        """The last reload's result; None when none was tried since the start."""
        ...

    def store_fallback(self) -> StoreFallback | None:
        """The shared limit store's state; None when the config has no state.redis."""
        ...
