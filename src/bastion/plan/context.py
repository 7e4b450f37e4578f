"""What a builder is given: `BuildContext` (one per plan) and `RouteSpec` (one per route).

Builders turn one piece of config into a runtime object; anything they need beyond their
own piece comes from here, worked out once by the compiler: the resolved data directory,
the clock, the trusted-proxy predicate, the per-site facts, and the stores shared by
routes. The stores are opened on first use (a feature that no route uses opens nothing)
and once per plan; swapping them for other backends touches only this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from bastion.clock import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    from bastion.cache.setup import PlanCache
    from bastion.config.cache_models import Cache
    from bastion.config.errors import Loc
    from bastion.config.sites import Route, Site
    from bastion.config.state_models import State
    from bastion.observe.events import EventCounters
    from bastion.plan.facts import SiteFacts
    from bastion.proxy.pool import PoolRegistry
    from bastion.state.challenges import ChallengeTokens
    from bastion.state.keys import KeyStore
    from bastion.state.limits import AnyLimitStore
    from bastion.state.stores import Stores

__all__ = ["BuildContext", "RouteSpec"]


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One route as its builders see it: its config, its site's, and where it is."""

    route: Route
    site: Site
    facts: SiteFacts
    """The site's facts (TLS mode, HSTS line)."""
    loc: Loc
    """The route's key path, ``("sites", 0, "routes", 1)``, for configuration errors."""
    name: str
    """``"<first host> <path>"``: names the route's upstream pool in logs and status."""


@dataclass(frozen=True)
class BuildContext:
    source: str
    """The config file (or ``<built-in>``), named by configuration errors."""
    data_dir: Path
    """The data directory, resolved (``data_dir`` key, ``$BASTION_DATA_DIR`` or default)."""
    trusted: Callable[[str], bool] | None
    """Whether an address is a trusted proxy (None: no ``trusted_proxies``)."""
    sites: tuple[SiteFacts, ...]
    """Per-site facts, in config order."""
    https_port: int | None
    """The first HTTPS listener's port; None without HTTPS listeners."""
    pools: PoolRegistry
    """Upstream connection pools, kept across reloads."""
    cache_settings: Cache
    """The ``cache:`` section: the size of the response cache, its purge sources."""
    workers: int
    """Worker processes serving this plan (several share purges through files)."""
    clock: Clock = SYSTEM_CLOCK
    traceparent: bool = True
    """Whether proxied requests carry the W3C trace context (``tracing.traceparent``)."""
    checking: str | None = None
    """None when the plan will serve; ``"online"`` or ``"offline"`` when it is compiled only
    to be checked (``bastion check``, the doctor): documents the gateway would fetch from
    a backend must be good now (online) or are not fetched (offline), and nothing is
    written to the data dir."""
    warnings: list[str] = field(default_factory=list)
    """What a check should show that is not an error (e.g. a document not fetched)."""
    state: State | None = None
    """The ``state`` section: where shared state lives (Redis); None keeps it in process."""

    @property
    def events(self) -> EventCounters:
        """The process's event counters (auth and rate-limit refusals count there); the
        pool registry holds them, as it outlives the plan."""
        return self.pools.events

    # ---------------------------------------------------- stores, opened on first use
    @cached_property
    def stores(self) -> Stores:
        """The process's shared state for the data dir (`bastion.state.stores`): it
        outlives this plan, so what it holds survives a reload."""
        from bastion.state.stores import stores_for

        stores = stores_for(self.data_dir, self.clock)
        stores.use_state(self.state)
        return stores

    @property
    def limit_store(self) -> AnyLimitStore:
        """Rate-limit and quota counters (kept across reloads)."""
        return self.stores.limits

    @property
    def key_store(self) -> KeyStore:
        """API keys managed with ``bastion keys``."""
        return self.stores.keys

    @cached_property
    def challenges(self) -> ChallengeTokens:
        """HTTP-01 challenge answers written by the ACME client (of any instance, with
        ``state.redis``)."""
        return self.stores.challenges(self.state)

    @cached_property
    def response_cache(self) -> PlanCache:
        """The response cache and its purge queue, shared by the plan's cached routes
        (dropped with the plan)."""
        from bastion.cache.setup import open_plan_cache

        return open_plan_cache(self.cache_settings, self.stores)

    def opened_response_cache(self) -> PlanCache | None:
        """The response cache if some route opened it, without opening it."""
        cache: PlanCache | None = self.__dict__.get("response_cache")
        return cache
