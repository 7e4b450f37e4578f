"""The event metrics on `/metrics`: upstream state and errors, auth and rate-limit
refusals, certificate expiry, ACME orders and config reloads.

A `prometheus-client` custom collector, built at each scrape from:
- the event counters (`observe/events.py`) of this worker, live, plus the latest snapshot
  of every other worker (each publishes its counters under the ``events`` topic of the
  `Snapshots` store once a second): the totals of the instance, whichever worker answers;
- the balancers of this worker's plan and the other workers' pool status snapshots
  (``status`` topic, `balance/status.py`): an endpoint is up when no worker sees it
  unhealthy or ejected;
- the certificates of the TLS table in force (their files' expiry, read once per file
  version).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from bastion.balance import status
from bastion.observe.events import EventCounters, merge

if TYPE_CHECKING:
    from prometheus_client.core import GaugeMetricFamily, Metric

    from bastion.balance.balancer import Balancer
    from bastion.state.snapshots import Snapshots
    from bastion.tls.table import TLSTable

log = logging.getLogger("bastion.observe")

TOPIC = "events"
PUBLISH_EVERY = 1.0


class EventMetrics:
    """The collector (an `exposition.MetricSource`: prometheus-client is imported by the
    first scrape), and the task that publishes this worker's counters for the others."""

    def __init__(
        self,
        counters: EventCounters,
        snapshots: Snapshots,
        balancers: Callable[[], list[Balancer]],
        tls_table: Callable[[], TLSTable | None],
        now: Callable[[], float],
    ) -> None:
        self.counters = counters
        self.snapshots = snapshots
        self.balancers = balancers
        self.tls_table = tls_table
        self.now = now  # the loop's clock: ejections are kept in it
        self.pid = os.getpid()
        self.publisher: asyncio.Task[None] | None = None
        # certificate file -> ((mtime_ns, size), expiry as epoch seconds or None)
        self._expiry: dict[str, tuple[tuple[int, int], float | None]] = {}

    # ------------------------------------------------------------ publishing
    def start(self, loop: asyncio.AbstractEventLoop, shared: bool = True) -> None:
        """Publish this worker's counters once a second when other workers serve the
        instance too (`shared`); a single worker has nobody to tell."""
        if shared:
            self.publisher = loop.create_task(self._publish())

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.cancel()
            self.publisher = None

    async def _publish(self) -> None:
        try:
            while True:
                await asyncio.sleep(PUBLISH_EVERY)
                snapshot = {"pid": self.pid, "events": self.counters.snapshot()}
                # a snapshot is a convenience for the other workers: never a reason to stop
                with contextlib.suppress(OSError):
                    self.snapshots.put(TOPIC, snapshot)
        finally:
            with contextlib.suppress(OSError):
                self.snapshots.remove(TOPIC)

    def _others(self, topic: str) -> list[dict[str, Any]]:
        with contextlib.suppress(OSError):
            return [s for s in self.snapshots.read(topic) if s.get("pid") != self.pid]
        return []

    # ------------------------------------------------------------ collecting
    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        theirs = [s["events"] for s in self._others(TOPIC) if isinstance(s.get("events"), dict)]
        merged = merge([self.counters.snapshot(), *theirs])
        yield self._upstream_up()
        errors = CounterMetricFamily(
            "bastion_upstream_errors",
            "Upstream failures seen by the proxy, by pool, endpoint and kind (connect, "
            "timeout, reset, invalid, 5xx).",
            labels=["pool", "endpoint", "kind"],
        )
        for (pool, endpoint, kind), count in sorted(merged["upstream_errors"].items()):
            errors.add_metric([pool, endpoint, kind], count)
        yield errors
        auth = CounterMetricFamily(
            "bastion_auth_failures",
            "Requests an auth policy refused, by route, scheme and reason.",
            labels=["route", "scheme", "reason"],
        )
        for (route, scheme, reason), count in sorted(merged["auth_failures"].items()):
            auth.add_metric([route, scheme, reason], count)
        yield auth
        limits = CounterMetricFamily(
            "bastion_rate_limit_refusals",
            "Requests refused with 429 by a route's rate limit or quota.",
            labels=["route", "limit"],
        )
        for (route, limit), count in sorted(merged["rate_limit_refusals"].items()):
            limits.add_metric([route, limit], count)
        yield limits
        fallbacks = CounterMetricFamily(
            "bastion_limit_store_fallbacks",
            "Requests whose limits were decided without the shared limit store (Redis "
            "unavailable), by decision: deny, allow, local, local_refused.",
            labels=["decision"],
        )
        for decision, count in sorted(merged["store_fallbacks"].items()):
            fallbacks.add_metric([decision], count)
        yield fallbacks
        yield GaugeMetricFamily(
            "bastion_limit_store_unavailable",
            "Workers whose shared limit store (Redis) is unavailable now: their limits "
            "apply on_store_down.",
            value=merged["store_unavailable"],
        )
        yield self._certificates()
        acme = CounterMetricFamily(
            "bastion_acme_orders", "ACME certificate orders, by result.", labels=["result"]
        )
        for result in ("issued", "failed"):
            acme.add_metric([result], merged["acme_orders"].get(result, 0))
        yield acme
        reloads = CounterMetricFamily(
            "bastion_config_reloads", "Configuration reloads, by result.", labels=["result"]
        )
        for result in ("success", "failure"):
            reloads.add_metric([result], merged["reloads"].get(result, 0))
        yield reloads
        last = merged["last_reload_success"]
        if last is not None:
            yield GaugeMetricFamily(
                "bastion_config_last_reload_success_timestamp_seconds",
                "When the configuration was last reloaded successfully (Unix time).",
                value=last,
            )

    def _upstream_up(self) -> GaugeMetricFamily:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily(
            "bastion_upstream_up",
            "1 when the endpoint takes requests (healthy and not ejected) in every worker.",
            labels=["pool", "endpoint"],
        )
        state: dict[tuple[str, str], bool] = {}
        now = self.now()
        for balancer in self.balancers():
            for member in balancer.members:
                ep = member.ep
                key = (balancer.name, ep.label)
                state[key] = state.get(key, True) and ep.healthy and ep.ejected_until <= now
        for snap in self._others(status.TOPIC):
            for pool in snap.get("pools", ()):
                for ep in pool.get("endpoints", ()):
                    key = (pool.get("name", ""), ep.get("url", ""))
                    if key in state:  # a pool of this worker's plan (others may lag a reload)
                        state[key] = state[key] and ep.get("healthy") and not ep.get("ejected")
        for (pool_name, endpoint), is_up in sorted(state.items()):
            up.add_metric([pool_name, endpoint], 1 if is_up else 0)
        return up

    def _certificates(self) -> GaugeMetricFamily:
        from prometheus_client.core import GaugeMetricFamily

        expiry = GaugeMetricFamily(
            "bastion_certificate_expiry_timestamp_seconds",
            "When the certificate served for a name expires (Unix time).",
            labels=["name"],
        )
        table = self.tls_table()
        if table is None:
            return expiry
        seen: dict[str, float] = {}
        for site in table.sites:
            not_after = self._not_after(site.cert_file)
            if not_after is None:
                continue
            for name in site.names:
                seen.setdefault(name, not_after)
        for name, not_after in sorted(seen.items()):
            expiry.add_metric([name], not_after)
        return expiry

    def _not_after(self, path: str) -> float | None:
        """The expiry of the first certificate in ``path``, read again when the file
        changes (renewals write a new file version)."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        version = (st.st_mtime_ns, st.st_size)
        known = self._expiry.get(path)
        if known is not None and known[0] == version:
            return known[1]
        value: float | None = None
        # imported here: a gateway without TLS never loads cryptography (~10 MB)
        from cryptography import x509

        try:
            with open(path, "rb") as f:
                cert = x509.load_pem_x509_certificate(f.read())
            value = cert.not_valid_after_utc.replace(tzinfo=dt.UTC).timestamp()
        except (OSError, ValueError) as exc:
            log.warning("metrics: cannot read the certificate %s: %s", path, exc)
        self._expiry[path] = (version, value)
        return value
