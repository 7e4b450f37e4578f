"""What a worker holds for alerts: its ``AlertManager`` over the gateway's inputs, started
when the config has rules (at start or at a reload), told of each reload, stopped with the
worker. The server calls four methods; everything else is here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.clock import SYSTEM_CLOCK, Clock
from bastion.observe.alerts.gateway import GatewayInputs, write_reload_result
from bastion.observe.alerts.inputs import QuotaUse, StoreFallback

if TYPE_CHECKING:
    from bastion.balance.balancer import Balancer
    from bastion.config import LoadedConfig
    from bastion.observe.alerts.manager import AlertManager

__all__ = ["AlertService", "record_rejected_reload"]

# set by `bastion run` to its own pid (bastion.balance.status.INSTANCE_ENV)
_INSTANCE_ENV = "BASTION_INSTANCE"


def _instance() -> int:
    return int(os.environ.get(_INSTANCE_ENV, os.getpid()))


def _data_dir(loaded: LoadedConfig) -> Path:
    from bastion.state.files import resolve_data_dir

    return resolve_data_dir(loaded.config.data_dir)


class AlertService:
    """A worker's alerting: idle without rules, else one ``AlertManager`` task."""

    def __init__(
        self,
        loaded: Callable[[], LoadedConfig],
        balancers: Callable[[], Iterable[Balancer]],
        loop: asyncio.AbstractEventLoop,
        *,
        period: Callable[[float, float, str | None], dict[str, Any]] | None = None,
        quotas: Callable[[], dict[str, QuotaUse]] | None = None,
        store: Callable[[], StoreFallback | None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """``loaded``: the config in force; ``balancers``: the current plan's; ``period``:
        ``StatsStore.period`` (None: traffic rules have no data); ``quotas``: each
        consumer's quota use (None: read from the process's limit store, ``quotas.py``)."""
        self.loaded = loaded
        self.loop = loop
        self.clock = clock
        self.manager: AlertManager | None = None
        self._task: asyncio.Task[None] | None = None
        self.inputs = GatewayInputs(
            period=period,
            balancers=balancers,
            config=lambda: loaded().config,
            quotas=quotas or self._quotas,
            loop_time=loop.time,
            reloads=(_data_dir(loaded()), _instance()),
            store=store,
            clock=clock,
        )

    def _quotas(self) -> dict[str, QuotaUse]:
        from bastion.observe.alerts.quotas import consumer_quotas, quota_prefixes

        loaded = self.loaded()
        if not quota_prefixes(loaded.config):
            return {}  # no per-consumer quota: not even the limit store is opened
        from bastion.state.stores import stores_for

        limits = stores_for(_data_dir(loaded)).limits
        return consumer_quotas(loaded.config, limits, self.clock.time())

    def start(self) -> None:
        """Start the manager when the config has rules (and it is not running yet)."""
        loaded = self.loaded()
        if self.manager is not None or not loaded.config.alerts.rules:
            return
        data_dir = _data_dir(loaded)
        # imported only with rules: the senders' modules (smtplib, urllib, email) cost memory
        from bastion.observe.alerts.leader import AlertLock, shared_status
        from bastion.observe.alerts.manager import AlertManager
        from bastion.state.stores import stores_for

        publish, read = shared_status(stores_for(data_dir).snapshots)
        self.manager = AlertManager(
            loaded.config.alerts,
            self.inputs,
            self.clock,
            secrets=loaded.secrets,
            lock=AlertLock.in_data_dir(data_dir),
            publish=publish,
            leader_status=read,
        )
        self._task = self.loop.create_task(self.manager.run())

    def reloaded(self, ok: bool, error: str | None = None) -> None:
        """After each reload attempt (``error``: why it was rejected, as logged)."""
        self.inputs.record_reload(ok, error)
        if not ok:
            return
        if self.manager is None:
            self.start()
        else:
            loaded = self.loaded()
            self.manager.reconfigure(loaded.config.alerts, loaded.secrets)

    def status(self) -> list[dict[str, Any]]:
        """The rules' states for the admin API (``[]`` without rules)."""
        return [] if self.manager is None else self.manager.status()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None


def record_rejected_reload(loaded: LoadedConfig, error: str) -> None:
    """The supervisor of several workers rejected a reload (its workers never see the file):
    record it for the instance's evaluating worker."""
    if not loaded.config.alerts.rules:
        return
    with contextlib.suppress(OSError):
        write_reload_result(_data_dir(loaded), _instance(), False, error, time.time())
