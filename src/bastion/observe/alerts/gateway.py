"""The gateway's ``AlertInputs``: the statistics store's periods, this worker's balancers, the
certificates the config serves, the consumers' quota use, and the reload results the worker
records. Each source is handed in by the worker (``server/worker.py``), so this module needs
none of the server's objects.

Certificates are read from files and the certificate store, which is too slow for the event
loop at every evaluation: ``refresh()`` reads them in a thread every ``CERT_REFRESH`` seconds
(``AlertManager.run`` calls it), and ``certificates()`` answers from what it read last.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.clock import SYSTEM_CLOCK, Clock
from bastion.observe.alerts.inputs import (
    Certificate,
    PoolHealth,
    QuotaUse,
    ReloadResult,
    StoreFallback,
)

if TYPE_CHECKING:
    from bastion.balance.balancer import Balancer
    from bastion.config.models import Config

__all__ = [
    "CERT_REFRESH",
    "RELOAD_FILE",
    "GatewayInputs",
    "certificates_of",
    "read_reload_result",
    "write_reload_result",
]

log = logging.getLogger("bastion.alerts")

CERT_REFRESH = 300.0
"""Seconds between two readings of the certificates (expiry is counted in days)."""
RELOAD_FILE = "last-reload.json"
"""In the data dir: the last reload the supervisor of several workers rejected. It checks
the file before passing a reload on, so its workers never see a file it rejected."""


def write_reload_result(
    data_dir: Path, instance: int, ok: bool, error: str | None, at: float
) -> None:
    """Record a reload result for the instance's evaluating worker (the supervisor calls
    this; ``error`` as the config loader reports it, free of secrets)."""
    from bastion.state.files import atomic_write

    record = {"instance": instance, "ok": ok, "at": at, "error": error}
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(data_dir / RELOAD_FILE, json.dumps(record).encode(), 0o600)


def read_reload_result(data_dir: Path, instance: int) -> ReloadResult | None:
    """The result ``write_reload_result`` recorded for this instance, if any."""
    try:
        record = json.loads((data_dir / RELOAD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("instance") != instance:
        return None
    at, error = record.get("at"), record.get("error")
    if not isinstance(at, int | float) or not (error is None or isinstance(error, str)):
        return None
    return ReloadResult(record.get("ok") is True, float(at), error)


def certificates_of(config: Config) -> list[Certificate]:
    """The certificates ``bastion certs list`` shows (ACME and files; not the local CA's),
    as alert inputs (blocking: file reads)."""
    if not config.listen.https:
        return []  # no certificate, and no import of cryptography (~10 MB) to find none
    from bastion.tls.table import site_tls_mode

    modes = {site_tls_mode(site, True, config.acme.directory) for site in config.sites}
    if not modes & {"acme", "files"}:
        return []  # local-CA leaves only, which are left out below: no cryptography either
    from bastion.tls.certs import cert_rows

    found = []
    for row in cert_rows(config):
        if row.source == "local CA":
            continue  # 7-day leaves the gateway re-issues itself: always "expiring"
        not_after = None if row.not_after is None else row.not_after.timestamp()
        error = None if row.last_error in ("", "-") else row.last_error
        found.append(Certificate(row.names, not_after, error))
    return found


class GatewayInputs:
    """``AlertInputs`` over the sources a worker hands in (each optional: a missing one is
    no data for the rules that read it)."""

    def __init__(
        self,
        *,
        period: Callable[[float, float, str | None], dict[str, Any]] | None = None,
        balancers: Callable[[], Iterable[Balancer]] | None = None,
        config: Callable[[], Config] | None = None,
        quotas: Callable[[], dict[str, QuotaUse]] | None = None,
        loop_time: Callable[[], float] | None = None,
        reloads: tuple[Path, int] | None = None,
        store: Callable[[], StoreFallback | None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """``period``: ``StatsStore.period``; ``balancers``: the current plan's;
        ``config``: the config in force (its certificates); ``quotas``: each consumer's
        use; ``loop_time``: the clock the balancers' ejections are timed with; ``reloads``:
        the data dir and instance whose supervisor records the reloads it rejects;
        ``store``: the shared limit store's state (the workers' breakers)."""
        self._store = store
        self._period = period
        # (since, until, route) -> totals read ahead by `prefetch`, taken by `period`
        self._prefetched: dict[tuple[float, float, str | None], dict[str, Any]] = {}
        self._balancers = balancers
        self._config = config
        self._quotas = quotas
        self._loop_time = loop_time or clock.monotonic
        self.clock = clock
        self._certs: list[Certificate] = []
        self._certs_read = -CERT_REFRESH
        self._reload: ReloadResult | None = None
        self._reloads = reloads

    # ------------------------------------------------------- what the worker tells
    def record_reload(self, ok: bool, error: str | None = None) -> None:
        """Called by the worker after each reload attempt (``error``: why it was rejected,
        already free of secrets as the config loader reports it)."""
        self._reload = ReloadResult(ok, self.clock.time(), error)
        if ok:
            self._certs_read = -CERT_REFRESH  # the new config may serve other names

    def use_statistics(
        self, period: Callable[[float, float, str | None], dict[str, Any]] | None
    ) -> None:
        """Read traffic from ``period`` (``StatsStore.period``) from now on."""
        self._period = period

    async def refresh(self) -> None:
        """Read the certificates again when ``CERT_REFRESH`` has passed (in a thread)."""
        now = self.clock.monotonic()
        if self._config is None or now - self._certs_read < CERT_REFRESH:
            return
        self._certs_read = now
        config = self._config()
        try:
            self._certs = await asyncio.to_thread(certificates_of, config)
        except (OSError, ValueError) as exc:
            log.warning("alerts: cannot read the certificates: %s", exc)

    # ------------------------------------------------------------- AlertInputs
    def prefetch(self, due: list[tuple[float, float, str | None]]) -> None:
        """Read the periods `due` ahead (the manager calls it in a thread): `period` then
        answers them without touching the file on the loop."""
        if self._period is None:
            return
        read = self._period
        self._prefetched = {key: read(*key) for key in due}

    def period(self, since: float, until: float, route: str | None = None) -> dict[str, Any]:
        if self._period is None:
            return {}
        ready = self._prefetched.pop((since, until, route), None)
        if ready is not None:
            return ready
        return self._period(since, until, route)

    def pools(self) -> dict[str, PoolHealth]:
        if self._balancers is None:
            return {}
        now = self._loop_time()
        found = {}
        for balancer in self._balancers():
            endpoints = balancer.snapshot(now)["endpoints"]
            usable = sum(1 for ep in endpoints if ep["healthy"] and not ep["ejected"])
            found[balancer.name] = PoolHealth(usable, len(endpoints))
        return found

    def certificates(self) -> list[Certificate]:
        return self._certs

    def quotas(self) -> dict[str, QuotaUse]:
        return {} if self._quotas is None else self._quotas()

    def last_reload(self) -> ReloadResult | None:
        """The newest of this worker's last reload and the one its supervisor rejected."""
        found = [self._reload]
        if self._reloads is not None:
            found.append(read_reload_result(*self._reloads))
        known = [r for r in found if r is not None]
        return max(known, key=lambda r: r.at) if known else None

    def store_fallback(self) -> StoreFallback | None:
        return None if self._store is None else self._store()
