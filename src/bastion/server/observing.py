"""What a worker runs to show its traffic, started, reloaded and stopped in one place.

- the recorder (`observe/recorder.py`): the request tap and the per-second Intervals, when
  anything reads them;
- the statistics writer (`observe/stats/`), a sink of the recorder (`stats.enabled`);
- the metrics listener and its event metrics (`metrics.listen`);
- the admin listener (`admin.listen`), bound to the statistics and the alerts;
- the alerts (`alerts.rules`), evaluated by one worker of the instance.

The worker calls `start` once its listeners are open, `reloaded` after each reload
attempt, `close_listeners` when it stops and `close` once its requests are drained (so the
last ones are counted).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.state.files import resolve_data_dir
from bastion.state.stores import stores_for

if TYPE_CHECKING:
    from bastion.config import LoadedConfig
    from bastion.config.models import Config
    from bastion.observe.alerts.inputs import StoreFallback
    from bastion.observe.alerts.service import AlertService
    from bastion.observe.event_exposition import EventMetrics
    from bastion.observe.recorder import Recorder
    from bastion.observe.stats import StatsStore, StatsWriter
    from bastion.observe.stats.cluster import ClusterPublisher
    from bastion.proxy.pool import PoolRegistry
    from bastion.server.admin import AdminEndpoint
    from bastion.server.context import WorkerContext
    from bastion.server.metrics import MetricsEndpoint

log = logging.getLogger("bastion.server")

IN_FLIGHT_TOPIC = "in-flight"  # each worker's requests in progress, for the live view


def observing(config: Config) -> bool:
    """Whether the per-second traffic figures are recorded: something reads them."""
    return (
        config.metrics.listen is not None
        or config.stats.enabled
        or config.admin.listen is not None
        or bool(config.alerts.rules)
    )


def detailed(config: Config) -> bool:
    """Whether the figures include the details (paths, clients, user agents, referrers,
    the 5xx answers) that only the statistics read: the metrics need counts only, and
    details cost more per request (observe/tap.py)."""
    return config.stats.enabled


class LiveStats:
    """The statistics store as the admin API reads it: the live second gets the requests
    in progress of every worker (each publishes its own count once a second)."""

    def __init__(
        self, store: StatsStore, data_dir: Path, in_flight: Callable[[], int], shared: bool
    ) -> None:
        self.store = store
        self.in_flight = in_flight
        self.shared = shared  # several workers: read the others' counts too
        self.snapshots = stores_for(data_dir).snapshots if shared else None
        self.pid = os.getpid()

    def summary(self, window: str) -> dict[str, Any]:
        return self.store.summary(window)

    def live(self) -> dict[str, Any]:
        return {**self.store.live(), "in_flight": self.requests_in_progress()}

    def requests_in_progress(self) -> int:
        total = self.in_flight()
        if self.snapshots is not None:
            with contextlib.suppress(OSError):
                for snap in self.snapshots.read(IN_FLIGHT_TOPIC):
                    count = snap.get("in_flight")
                    if snap.get("pid") != self.pid and isinstance(count, int):
                        total += count
        return total

    def publish(self, _interval: object) -> None:
        """A recorder sink: this worker's count for the others (several workers only)."""
        if self.snapshots is not None:
            with contextlib.suppress(OSError):
                mine: dict[str, object] = {"pid": self.pid, "in_flight": self.in_flight()}
                self.snapshots.put(IN_FLIGHT_TOPIC, mine)


class Observability:
    """One worker's recorder, statistics, metrics and admin listeners, and alerts."""

    def __init__(
        self, ctx: WorkerContext, registry: PoolRegistry, loaded: Callable[[], LoadedConfig]
    ) -> None:
        self.ctx = ctx
        self.registry = registry
        self.loaded = loaded
        self.recorder: Recorder | None = None
        self.stats: StatsWriter | None = None
        self.metrics: MetricsEndpoint | None = None
        self.events: EventMetrics | None = None
        self.admin: AdminEndpoint | None = None
        self.alerts: AlertService | None = None
        self.live: LiveStats | None = None
        self.store: StatsStore | None = None

    async def start(self, reuse_port: bool) -> None:
        loaded = self.loaded()
        config = loaded.config
        ctx = self.ctx
        data_dir = resolve_data_dir(config.data_dir)
        stores = stores_for(data_dir)
        if observing(config):
            self.recorder = _start_recorder(ctx, detailed(config))
        store: StatsStore | None = None
        if config.stats.enabled:
            assert self.recorder is not None
            from bastion.observe.stats import StatsStore, StatsWriter

            self.stats = StatsWriter(
                data_dir, geoip=config.stats.geoip, cluster=_cluster_publisher(config)
            )
            self.recorder.add_sink(self.stats.add)
            store = StatsStore(data_dir)
        if config.metrics.listen is not None:
            assert self.recorder is not None
            # imported only then: prometheus-client costs memory that nobody else needs
            from bastion.server.metrics import MetricsEndpoint

            self.metrics = MetricsEndpoint(ctx, config.metrics, stores.snapshots, self.recorder)
            await self.metrics.start(reuse_port)
            self.events = self._event_metrics(self.metrics, stores, reuse_port)
        self.store = store
        if config.alerts.rules or config.admin.listen is not None:
            self.alerts = self._alert_service()
        if config.admin.listen is not None:
            from bastion.server.admin import AdminEndpoint

            self.admin = AdminEndpoint(ctx, loaded, stores)
            if store is not None:
                assert self.recorder is not None
                self.live = LiveStats(store, data_dir, ctx.in_flight, config.workers > 1)
                self.recorder.add_sink(self.live.publish, top=False)
                self.admin.bind_stats(self.live)
            self.admin.bind_alerts(self.alerts)
            await self.admin.start(reuse_port)

    def _alert_service(self) -> AlertService:
        """The alerting of this worker, started (idle until the config has rules)."""
        from bastion.observe.alerts.service import AlertService

        ctx, store = self.ctx, self.store
        alerts = AlertService(
            self.loaded,
            lambda: ctx.plan.balancers,
            ctx.loop,
            period=None if store is None else store.period,
            store=self._store_fallback,
        )
        alerts.start()
        return alerts

    def _store_fallback(self) -> StoreFallback | None:
        """The shared limit store's state for the store_fallback alert: this worker's
        breaker, and the other workers' as they publish their event counters (they do
        with several workers and the metrics listener on)."""
        if self.loaded().config.state.redis is None:
            return None
        from bastion.observe.alerts.inputs import StoreFallback
        from bastion.observe.events import merge

        mine = self.registry.events.snapshot()
        others: list[dict[str, Any]] = []
        if self.loaded().config.workers > 1:
            with contextlib.suppress(OSError):
                snapshots = stores_for(resolve_data_dir(self.loaded().config.data_dir)).snapshots
                for snap in snapshots.read("events"):
                    events = snap.get("events")
                    if snap.get("pid") != os.getpid() and isinstance(events, dict):
                        others.append(events)
        merged = merge([mine, *others])
        return StoreFallback(
            int(merged["store_unavailable"]), sum(merged["store_fallbacks"].values())
        )

    def _event_metrics(self, metrics: MetricsEndpoint, stores: Any, shared: bool) -> EventMetrics:
        """The event metrics (upstream errors, refusals, certificates, reloads) on the
        metrics listener, published for the other workers."""
        from bastion.observe.event_exposition import EventMetrics

        ctx = self.ctx
        events = EventMetrics(
            self.registry.events,
            stores.snapshots,
            lambda: ctx.plan.balancers,
            lambda: ctx.plan.tls,
            ctx.loop.time,
        )
        events.start(ctx.loop, shared)
        metrics.collectors.append(events)
        return events

    def reloaded(self, ok: bool, error: str | None = None) -> None:
        """After a reload attempt: the reload metrics and alert, and the new settings."""
        self.registry.events.reload(ok, time.time())
        if self.alerts is not None:
            self.alerts.reloaded(ok, error)
        if not ok:
            return
        config = self.loaded().config
        if self.alerts is None and config.alerts.rules:
            self.alerts = self._alert_service()  # rules the config started without
        if self.metrics is not None:
            self.metrics.configure(config.metrics)
        elif config.metrics.listen is not None:
            log.warning("metrics.listen set: metrics are served after a restart")
        if self.admin is not None:
            self.admin.configure(self.loaded())
        elif config.admin.listen is not None:
            log.warning("admin.listen set: the admin listener starts after a restart")
        if config.stats.enabled != (self.stats is not None):
            log.warning("stats.enabled changed: statistics follow it after a restart")

    def close_listeners(self) -> None:
        """The worker stops: no more scrapes, admin requests or alerts."""
        if self.metrics is not None:
            self.metrics.close()
        if self.admin is not None:
            self.admin.close()
        if self.events is not None:
            self.events.close()
        if self.alerts is not None:
            self.alerts.stop()

    def close(self) -> None:
        """After the drain: the last requests are counted and written."""
        if self.recorder is not None:
            self.recorder.close()
        if self.stats is not None:
            self.stats.close()
        if self.live is not None and self.live.snapshots is not None:
            with contextlib.suppress(OSError):
                self.live.snapshots.remove(IN_FLIGHT_TOPIC)


def _start_recorder(ctx: WorkerContext, details: bool) -> Recorder:
    """The tap as a request observer and the recorder counting it once a second. A
    reload keeps both (and their counts)."""
    from bastion.observe.recorder import Recorder, request_tap

    tap = request_tap(details)
    # the default clock's monotonic is `http.context.request_clock`, the tap's clock
    recorder = Recorder(tap, in_flight=ctx.in_flight)
    ctx.add_observer(tap.record)
    recorder.start(ctx.loop)
    return recorder


def _cluster_publisher(config: Config) -> ClusterPublisher | None:
    """With state.redis: what writes this worker's minutes for the cluster view."""
    state = config.state
    if state.redis is None:
        return None
    from bastion.observe.stats.cluster import ClusterPublisher, instance_name
    from bastion.observe.stats.prune import TOP_KEPT
    from bastion.state.redis_stats import RedisStats
    from bastion.state.redis_sync import connect_sync

    return ClusterPublisher(
        instance_name(config.stats.instance),
        config.stats.cluster_interval,
        lambda: RedisStats(connect_sync(state), state.key_prefix),
        TOP_KEPT,
    )
