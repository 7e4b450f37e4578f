"""The figures and actions behind the admin API's JSON endpoints (shapes in
docs/observability.md)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import bastion.server.admin.views as views
from bastion import __version__
from bastion.balance.status import INSTANCE_ENV
from bastion.server.admin.sources import WINDOWS

if TYPE_CHECKING:
    from bastion.observe.alerts.inputs import QuotaUse
    from bastion.plan import Plan
    from bastion.server.admin.state import AdminState
    from bastion.state.broadcast import Broadcast
    from bastion.state.snapshots import Snapshots

STATS_OFF = "statistics are off"
STATS_UNREADABLE = (sqlite3.Error, OSError)  # a locked, damaged or vanished file
READERS = 2  # threads of the admin's reads (statistics, certificates) in one worker
_T = TypeVar("_T")


class Refused(Exception):
    """An action refused with a problem answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class AdminApi:
    def __init__(
        self,
        state: AdminState,
        plan: Callable[[], Plan],
        snapshots: Snapshots,
        broadcast: Callable[[], Broadcast],
        quotas: Callable[[], dict[str, QuotaUse]] | None = None,
    ) -> None:
        self.state = state
        self.quotas = quotas  # each consumer's quota use (this worker's limit store)
        self.plan = plan  # the plan in force (a reload replaces it)
        self.snapshots = snapshots
        self.broadcast = broadcast  # made on first use
        self.instance = int(os.environ.get(INSTANCE_ENV, os.getpid()))
        self.renewing = asyncio.Lock()
        self._live_reading: asyncio.Future[dict[str, Any]] | None = None
        self.readers: ThreadPoolExecutor | None = None  # made at the first read
        self._cluster: tuple[object, Any] | None = None  # (state settings, RedisStats)

    async def in_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        """`fn` in a thread of the admin's own: a read waiting for a lock on the
        statistics file (seconds) holds one of them, never a thread of the loop's default
        pool, which requests wait for (basic auth's password checks, DNS lookups)."""
        if self.readers is None:
            self.readers = ThreadPoolExecutor(READERS, thread_name_prefix="bastion-admin")
        return await self.state.loop.run_in_executor(self.readers, fn, *args)

    def close(self) -> None:
        if self.readers is not None:
            self.readers.shutdown(wait=False, cancel_futures=True)
            self.readers = None

    # ----------------------------------------------------------- read only
    async def overview(self) -> dict[str, Any]:
        state = self.state
        config = state.loaded.config
        certs = await self.in_thread(views.certificates, config)
        try:
            live = await self.live_figures()
        except STATS_UNREADABLE:
            live = None
        alerts = self.alerts()["alerts"]
        return {
            "version": __version__,
            "started": state.started,
            "config_hash": views.config_hash(views.config_view(state.loaded)),
            "workers": config.workers,
            "in_flight": live.get("in_flight") if live is not None else None,
            "upstreams": views.pool_counts(self.upstreams()),
            "certificates": views.earliest(certs),
            "alerts": {"firing": sum(1 for a in alerts if a.get("state") == "FIRING")},
            # the dashboard offers the cluster scope when the instances share Redis
            "cluster": config.state.redis is not None,
        }

    async def instances(self) -> dict[str, Any]:
        """The instances sharing ``state.redis`` (their heartbeats), each marked with
        ``drift`` when its config hash differs from the majority's."""
        import time

        settings = self.state.loaded.config.state
        if settings.redis is None:
            return {"shared": False, "majority": None, "instances": []}
        from bastion.state.instances import alive, hash_name, mark_drift
        from bastion.state.redis_hub import Unreachable, hub_for

        name = hash_name(settings.key_prefix)
        try:
            found = await hub_for(settings).run(lambda client: client.hgetall(name))
        except Unreachable as exc:
            return {"shared": True, "error": str(exc), "majority": None, "instances": []}
        records = alive(found, time.time())
        majority = mark_drift(records)
        return {"shared": True, "majority": majority, "instances": records}

    async def live_figures(self) -> dict[str, Any] | None:
        """The last complete second (None: statistics are off). Read in a thread: a read
        of the statistics file may wait seconds for a lock, which the event loop must not.
        The live streams of this worker share one read at a time."""
        stats = self.state.stats
        if stats is None:
            return None
        reading = self._live_reading
        if reading is None:
            reading = self._live_reading = asyncio.ensure_future(self.in_thread(stats.live))
            reading.add_done_callback(self._live_read)
        return await asyncio.shield(reading)

    def _live_read(self, reading: asyncio.Future[dict[str, Any]]) -> None:
        self._live_reading = None
        if not reading.cancelled():
            reading.exception()  # retrieved: the streams that waited for it report it

    async def live_event(self) -> dict[str, Any] | None:
        """One event of /api/live (None: statistics are off)."""
        live = await self.live_figures()
        if live is None:
            return None
        return {"in_flight": None, **live}

    async def stats(self, window: str) -> tuple[int, Any]:
        if window not in WINDOWS:
            return 400, f"window must be one of {', '.join(WINDOWS)}"
        stats = self.state.stats
        if stats is None:
            return 503, STATS_OFF
        try:
            summary = await self.in_thread(stats.summary, window)
        except STATS_UNREADABLE as exc:
            return 503, f"the statistics file cannot be read now: {exc}"
        use = self.quotas() if self.quotas is not None else {}
        for row in summary.get("top", {}).get("consumers", ()):
            quota = use.get(row["key"])
            # the consumer's fullest quota in its current day or month (null: none)
            row["quota"] = None if quota is None else {"used": quota.used, "limit": quota.limit}
        return 200, summary

    async def cluster_stats(self, window: str) -> tuple[int, Any]:
        """Every instance's minutes of the window, merged (`observe.stats.merge`)."""
        from redis.exceptions import RedisError

        from bastion.observe.stats.cluster import instance_name
        from bastion.observe.stats.merge import cluster_summary

        config = self.state.loaded.config
        if config.state.redis is None:
            return 400, "scope=cluster needs state.redis: this instance shares no statistics"
        reader = self._cluster_reader()
        try:
            summary = await self.in_thread(cluster_summary, reader, window, time.time())
        except ValueError as exc:
            return 400, str(exc)
        except (RedisError, OSError) as exc:
            return 503, (
                f"Redis cannot be read now ({str(exc).splitlines()[0][:200]}): the cluster "
                "view is unavailable; scope=instance shows this instance's statistics"
            )
        summary["instance"] = instance_name(config.stats.instance)
        return 200, summary

    def _cluster_reader(self) -> Any:
        """The blocking Redis client of the cluster view, made again after a reload that
        changed state settings."""
        from bastion.state.redis_stats import RedisStats
        from bastion.state.redis_sync import connect_sync

        settings = self.state.loaded.config.state
        if self._cluster is None or self._cluster[0] is not settings:
            self._cluster = (settings, RedisStats(connect_sync(settings), settings.key_prefix))
        return self._cluster[1]

    def alerts(self) -> dict[str, Any]:
        source = self.state.alerts
        return {"alerts": source.status() if source is not None else []}

    def upstreams(self) -> dict[str, Any]:
        try:
            return views.upstreams(self.snapshots, self.instance)
        except OSError:
            return {"pools": []}

    async def certificates(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.in_thread(views.certificates, self.state.loaded.config)
        return result

    def config(self) -> dict[str, Any]:
        return views.config_view(self.state.loaded)

    # ------------------------------------------------------------- actions
    async def renew(self, data: dict[str, Any]) -> tuple[int, Any]:
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            raise Refused(400, 'Give the certificate as {"name": "one of its names"}.')
        from bastion.acme.problems import AcmeError

        async with self.renewing:  # one order at a time from this worker
            try:
                result = await self.in_thread(views.renew, self.state.loaded.config, name)
            except views.NotFound as exc:
                raise Refused(404, str(exc)) from None
            except AcmeError as exc:
                raise Refused(502, f"the renewal failed: {exc}. What to do: {exc.hint}") from None
            except (OSError, ValueError) as exc:
                raise Refused(502, f"the renewal failed: {exc}") from None
        return 200, result

    async def purge(self, data: dict[str, Any]) -> tuple[int, Any]:
        """`bastion cache purge`'s semantics: one of url, prefix or tag; applied in this
        worker at once, and queued for the others (they apply it within a second)."""
        from bastion.cache.purge import publish

        given = [(k, v) for k in ("url", "prefix", "tag") if (v := data.get(k)) is not None]
        if len(given) != 1 or not isinstance(given[0][1], str) or not given[0][1]:
            raise Refused(400, 'Give exactly one of {"url"}, {"prefix"} or {"tag"} (a string).')
        kind, value = given[0]
        if kind == "url" and "://" not in value:
            raise Refused(400, f"{value!r} is not a URL (expected http://host/path)")
        cache = self.plan().cache
        here = 0
        try:
            if cache is not None:
                here = cache.purge.submit(kind, value)
            else:
                publish(self.broadcast(), kind, value)
        except OSError as exc:
            raise Refused(503, f"cannot queue the purge for the other workers: {exc}") from None
        return 200, {"kind": kind, "value": value, "purged_here": here, "queued": True}
