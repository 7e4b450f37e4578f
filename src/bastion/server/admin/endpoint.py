"""The admin listener in a worker: bastion's own HTTP/1.1 protocol with a plan of one
route (every path goes to the admin handler, so every answer, refusals included, carries
the admin's security headers), on an address of its own.

A TCP address is shared by the workers with SO_REUSEPORT, as the sites' are. A Unix
socket cannot be: the worker that holds the lock file `<path>.lock` serves it (the lock
goes with the process, so a restarted worker takes it over).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import ssl
import time
from typing import TYPE_CHECKING, Any

from bastion.config.addresses import UnixAddress
from bastion.http1.server import HTTP1Connection
from bastion.server.admin.api import AdminApi
from bastion.server.admin.handler import AdminHandler
from bastion.server.admin.state import AdminState
from bastion.server.listen import where_to_listen
from bastion.server.own_listener import OwnContext, OwnRoute, OwnRouter

if TYPE_CHECKING:
    import asyncio

    from bastion.config import LoadedConfig
    from bastion.config.models import Config
    from bastion.config.tls_models import TlsFiles
    from bastion.observe.alerts.inputs import QuotaUse
    from bastion.server.admin.sources import AlertSource, StatsSource
    from bastion.server.context import WorkerContext
    from bastion.state.stores import Stores

log = logging.getLogger("bastion.admin")

BACKLOG = 100  # the loop's default: a listener for operators, not for the traffic
SECURITY_HEAD = (
    b"Cache-Control: no-store\r\n"
    b"X-Content-Type-Options: nosniff\r\n"
    b"X-Frame-Options: DENY\r\n"
    # same-origin, not no-referrer: under no-referrer a browser sends `Origin: null` with
    # the login form's POST, which the Origin check must refuse; other sites still get none
    b"Referrer-Policy: same-origin\r\n"
    b"Content-Security-Policy: default-src 'self'; frame-ancestors 'none'; "
    b"base-uri 'none'; form-action 'self'\r\n"
)


def _tls_context(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.cert, files.key)
    context.set_alpn_protocols(["http/1.1"])
    return context


def _quota_use(config: Config, stores: Stores) -> dict[str, QuotaUse]:
    """Each consumer's quota use, as the `quota` alert rule reads it (none without a
    per-consumer quota: the limit store is not even opened)."""
    from bastion.observe.alerts.quotas import consumer_quotas, quota_prefixes

    if not quota_prefixes(config):
        return {}
    return consumer_quotas(config, stores.limits, time.time())


class AdminEndpoint:
    """The admin state, handler and listener of one worker."""

    def __init__(self, worker: WorkerContext, loaded: LoadedConfig, stores: Stores) -> None:
        self.worker = worker
        self.state = AdminState(loaded, worker.loop)
        self.api = AdminApi(
            self.state,
            lambda: worker.plan,
            stores.snapshots,
            lambda: stores.broadcast,
            lambda: _quota_use(self.state.loaded.config, stores),
        )
        self.handler = AdminHandler(self.state, self.api)
        self.server: asyncio.AbstractServer | None = None
        self.ctx: OwnContext | None = None
        self._lock: int | None = None

    # the merge of the statistics store and of the alerts binds them here
    def bind_stats(self, source: StatsSource | None) -> None:
        self.state.stats = source

    def bind_alerts(self, source: AlertSource | None) -> None:
        self.state.alerts = source

    def configure(self, loaded: LoadedConfig) -> None:
        """A reload's settings apply at once (a new token ends the sessions of the old);
        a new address or TLS files need a restart."""
        settings = loaded.config.admin
        old = self.state.settings
        if settings.listen != old.listen or settings.tls != old.tls:
            log.warning("admin.listen or admin.tls changed: the new one is used after a restart")
        if settings.listen is None:
            log.warning("admin.listen removed: the admin listener stops after a restart")
            return
        self.state.configure(loaded)
        self.handler.gate.reset()

    async def start(self, reuse_port: bool) -> None:
        address = self.state.listen
        settings = self.state.settings
        ctx = self.ctx = OwnContext(
            self.worker, OwnRouter(self.worker, OwnRoute("admin", self.handler, SECURITY_HEAD))
        )
        context = _tls_context(settings.tls) if settings.tls is not None else None
        scheme = b"https" if context is not None else b"http"

        def connection() -> Any:
            return HTTP1Connection(ctx, scheme)

        loop = self.worker.loop
        if isinstance(address, UnixAddress):
            if not self._take_unix_lock(address.path):
                log.info("admin on unix:%s (served by another worker)", address.path)
                return
            with contextlib.suppress(FileNotFoundError):
                os.unlink(address.path)  # left by a worker that stopped
            old = os.umask(0o117)  # owner and group only: the socket is the door
            try:
                self.server = await loop.create_unix_server(connection, address.path, ssl=context)
            finally:
                os.umask(old)
        else:
            self.server = await loop.create_server(
                connection, **where_to_listen(address, reuse_port, backlog=BACKLOG), ssl=context
            )
        where = (
            str(address) if isinstance(address, UnixAddress) else f"{scheme.decode()}://{address}"
        )
        log.info("admin on %s (dashboard and API)", where)

    def _take_unix_lock(self, path: str) -> bool:
        fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock = fd
        return True

    def close(self) -> None:
        self.handler.close()
        self.api.close()
        if self.ctx is not None:
            for conn in list(self.ctx.connections):
                conn.close_idle()  # the worker drains the sites' connections, not these
        if self.server is not None:
            self.server.close()
            address = self.state.listen
            if isinstance(address, UnixAddress):
                with contextlib.suppress(OSError):
                    os.unlink(address.path)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
