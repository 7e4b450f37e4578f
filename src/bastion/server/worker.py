"""One worker process: an event loop, its listeners, reload and graceful shutdown.

Reload swaps the plan reference in the worker context. Requests already being
served keep the route objects they matched (so they finish on the old plan);
the next request on any connection reads the new one. Listeners that exist in
both plans are never closed; upstream pools for endpoints still configured keep
their warm connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import subprocess
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from bastion.balance import status
from bastion.config import Address, ConfigError, LoadedConfig, handoff
from bastion.http1.server import HTTP1Connection
from bastion.observe.accesslog import AccessLog
from bastion.plan import Plan, compile_plan
from bastion.proxy.pool import PoolRegistry
from bastion.server.context import WorkerContext
from bastion.server.listen import where_to_listen
from bastion.server.observing import Observability
from bastion.state.files import resolve_data_dir
from bastion.state.stores import stores_for
from bastion.tls.alpn import AlpnListener, listening_socket
from bastion.tls.context import HTTP1_ONLY, apply_profile, dispatch_context

if TYPE_CHECKING:
    from bastion.acme.renewal import CertManager
    from bastion.config.models import Config
    from bastion.server.cluster import ClusterLink

log = logging.getLogger("bastion.server")


class Worker:
    def __init__(self, loaded: LoadedConfig, *, reuse_port: bool = False) -> None:
        # the config in force: the plan compiled from it holds only what requests need;
        # what is the server's own business (watch, access log, TLS profile, shutdown,
        # data dir, ACME) is read from here
        self.loaded = loaded
        self.reuse_port = reuse_port
        self.servers: dict[str, asyncio.Server | AlpnListener] = {}
        self.stopping: asyncio.Event | None = None
        self.ctx: WorkerContext | None = None
        self.registry: PoolRegistry | None = None
        self._reload_lock: asyncio.Lock | None = None
        self.ready: asyncio.Event | None = None
        self._tls_context: ssl.SSLContext | None = None
        self._certs: CertManager | None = None  # created by the first plan with TLS
        self._alpn_dir: Path | None = None
        # recorder, statistics, metrics and admin listeners, alerts (server/observing.py)
        self.observing: Observability | None = None

    # ------------------------------------------------------------------ serve
    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self.registry = PoolRegistry(loop)
        config = self.loaded.config
        plan = compile_plan(config, self.registry, _source(self.loaded))
        self._alpn_dir = _alpn_challenge_dir(config)
        self.ctx = WorkerContext(loop, plan)
        self._configure_access_log(plan, config)
        # signals before the listeners: a reload or a stop may come as soon as a client can
        # connect (SIGHUP's default action would end the process); a reload waits for ready
        self._install_signals(loop)
        await self._sync_listeners(plan)
        self.observing = Observability(self.ctx, self.registry, lambda: self.loaded)
        await self.observing.start(self.reuse_port)
        self._start_acme(plan)
        watch = None
        if config.watch and self.loaded.source is not None:
            watch = loop.create_task(self._watch(self.loaded.source))
        ctx = self.ctx
        publisher = loop.create_task(
            status.publish(
                lambda: ctx.plan.balancers,
                stores_for(resolve_data_dir(config.data_dir)).snapshots,
                int(os.environ.get(status.INSTANCE_ENV, os.getpid())),
            )
        )
        cluster = self._join_cluster(config)
        self.ready.set()
        try:
            await self.stopping.wait()
        finally:
            publisher.cancel()
            if cluster is not None:
                cluster.close()
            self.observing.close_listeners()
            if watch is not None:
                watch.cancel()
            if self._certs is not None:
                self._certs.stop()
            await self._drain()
            self.observing.close()  # the requests drained are counted too

    def _join_cluster(self, config: Config) -> ClusterLink | None:
        """With ``state.redis``: follow ``bastion reload --all``, and write this
        instance's heartbeat (``server/cluster.py``)."""
        if config.state.redis is None:
            return None
        from bastion.server.cluster import ClusterLink

        return ClusterLink(
            config.state,
            stores_for(resolve_data_dir(config.data_dir)).broadcast,
            int(os.environ.get(status.INSTANCE_ENV, os.getpid())),
            lambda: self.loaded,
            self.reload,
        )

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self._reload_when_ready()))
        loop.add_signal_handler(signal.SIGUSR1, self.reopen_logs)

    async def _reload_when_ready(self) -> None:
        """A SIGHUP that arrives while the worker is still starting is served once it is up."""
        assert self.ready is not None
        await self.ready.wait()
        await self.reload()

    def stop(self) -> None:
        if self.stopping is not None:
            self.stopping.set()

    def reopen_logs(self) -> None:
        if self.ctx is not None and self.ctx.access_log is not None:
            self.ctx.access_log.reopen()
            log.info("access log reopened")

    # -------------------------------------------------------------- listeners
    async def _sync_listeners(self, plan: Plan) -> None:
        """Open listeners that are new, close those no longer configured. Raises
        OSError (before closing anything) when a new address cannot be bound."""
        assert self.ctx is not None
        ctx = self.ctx
        loop = ctx.loop
        keys: dict[str, tuple[Address, bool]] = {f"http://{a}": (a, False) for a in plan.listeners}
        keys.update({f"https://{a}": (a, True) for a in plan.https_listeners})
        opened: dict[str, asyncio.Server | AlpnListener] = {}
        try:
            for key, (address, secure) in keys.items():
                if key in self.servers:
                    continue
                server: asyncio.Server | AlpnListener
                # the protocol factories are partials, not lambdas: uvloop calls one a
                # connection, and this module is interpreted (a lambda's frame: about 0.7k
                # instructions more a new connection, callgrind)
                if secure and self._alpn_dir is not None:
                    # TLS-ALPN-01 may be used: a listener that can answer it (tls/alpn.py)
                    server = await self._alpn_listener(address, self._alpn_dir)
                elif secure:
                    server = await loop.create_server(
                        partial(HTTP1Connection, ctx, b"https"),
                        **where_to_listen(address, self.reuse_port, backlog=2048),
                        ssl=self._dispatch_context(),
                        ssl_handshake_timeout=ctx.plan.timeouts.header,
                    )
                else:
                    server = await loop.create_server(
                        partial(HTTP1Connection, ctx),
                        **where_to_listen(address, self.reuse_port, backlog=2048),
                    )
                opened[key] = server
        except OSError:
            for server in opened.values():
                server.close()
            raise
        for key, server in opened.items():
            self.servers[key] = server
            log.info("listening on %s", key)
        for key in [k for k in self.servers if k not in keys]:
            self.servers.pop(key).close()
            log.info("stopped listening on %s", key)

    async def _alpn_listener(self, address: Address, directory: Path) -> AlpnListener:
        assert self.ctx is not None
        ctx = self.ctx
        from bastion.acme.solvers import ALPN_POLL

        listener = AlpnListener(
            ctx.loop,
            listening_socket(address, self.reuse_port),
            partial(HTTP1Connection, ctx, b"https"),
            self._dispatch_context(),
            ctx.plan.timeouts.header,
            directory,
            ALPN_POLL,
        )
        await listener.start()
        return listener

    def _dispatch_context(self) -> ssl.SSLContext:
        """One SNI-dispatching context for every https listener of this worker. It
        consults the current plan at each handshake, so a reload's certificates are
        used by the next handshake while the listening sockets stay open."""
        if self._tls_context is None:
            ctx = self.ctx
            assert ctx is not None

            def lookup(server_name: str | None) -> ssl.SSLContext | None:
                plan = ctx.plan
                table = plan.tls
                chosen = None if table is None else table.lookup(server_name)
                if chosen is not None and not plan.http2.enabled:
                    # ALPN is chosen from the certificate context's list: narrow it
                    chosen.set_alpn_protocols(HTTP1_ONLY)
                return chosen

            # HTTP/2 is negotiated over TLS only: h2 is imported with the first https listener
            from bastion.http2.connection import start_http2

            ctx.start_http2 = lambda transport: start_http2(ctx, transport)

            profile = self.loaded.config.tls.profile
            self._tls_context = apply_profile(dispatch_context(lookup), profile)
        return self._tls_context

    # ------------------------------------------------------------------- ACME
    def _start_acme(self, plan: Plan) -> None:
        """Order the certificates this plan still lacks, renew the others, and watch
        certificate files (see ``acme/renewal.py``); all in the background."""
        if self._certs is None:
            if plan.tls is None:
                return  # plain HTTP: not even the ACME client is imported (its memory)
            from bastion.acme.renewal import CertManager

            ctx = self.ctx
            assert ctx is not None
            self._certs = CertManager(lambda: ctx.plan.tls)
            assert self.registry is not None
            self._certs.events = self.registry.events  # ACME orders are counted there
        config = self.loaded.config
        if self._tls_context is not None:
            apply_profile(self._tls_context, config.tls.profile)
        self._certs.start(plan.tls, config, resolve_data_dir(config.data_dir))

    # ----------------------------------------------------------------- reload
    async def reload(self) -> bool:
        """Load the file again; on any error keep serving the running config."""
        assert self.ctx is not None and self.registry is not None
        assert self._reload_lock is not None
        source = self.loaded.source
        if source is None:
            log.warning("reload ignored: this instance was not started from a file")
            return False
        async with self._reload_lock:
            loaded: LoadedConfig | None = None
            try:
                loaded = await _load_config_apart(source)
                if self.stopping is not None and self.stopping.is_set():
                    log.info("reload dropped: the worker is stopping")
                    return False
                plan = compile_plan(loaded.config, self.registry, _source(loaded))
                await self._sync_listeners(plan)
            except ConfigError as exc:
                if loaded is not None:
                    exc = loaded.locate(exc)  # the plan's errors know key paths, not lines
                log.error("reload rejected, still serving the previous config:\n%s", exc)
                self._reloaded(False, str(exc))
                return False
            except (OSError, ValueError) as exc:
                # OSError includes ssl.SSLError: a certificate that does not load
                log.error("reload rejected, still serving the previous config: %s", exc)
                self._reloaded(False, str(exc))
                return False
            except Exception as exc:  # a bug: the running config stays, the watcher lives
                log.exception("reload failed, still serving the previous config")
                self._reloaded(False, f"{type(exc).__name__}: {exc}")
                return False
            old_config = self.loaded.config
            self.loaded = loaded
            old = self.ctx.plan
            self.ctx.use_plan(plan)
            if old.cache is not None:
                old.cache.purge.stop()  # the old plan's cache is dropped with it
            self.registry.keep_only(plan.pools)
            for conn in list(self.ctx.http2_connections):
                conn.goaway()  # clients reconnect and meet the new config
            if _log_settings(old_config) != _log_settings(loaded.config):
                self._configure_access_log(plan, loaded.config)
            self._start_acme(plan)
            self._reloaded(True)
            log.info("configuration reloaded from %s", source)
            return True

    def _reloaded(self, ok: bool, error: str | None = None) -> None:
        if self.observing is not None:
            self.observing.reloaded(ok, error)

    async def _watch(self, path: Path) -> None:
        last = _mtime(path)
        while True:
            await asyncio.sleep(1.0)
            current = _mtime(path)
            if current != last:
                last = current
                await self.reload()

    def _configure_access_log(self, plan: Plan, config: Config) -> None:
        assert self.ctx is not None
        if self.ctx.access_log is not None:
            self.ctx.access_log.close()
            self.ctx.set_access_log(None)
        settings = config.access_log
        if settings.format != "off":
            self.ctx.set_access_log(
                AccessLog(
                    self.ctx.loop,
                    settings.format,
                    settings.path,
                    _key_query_params(config),
                    plan.trusted,
                )
            )

    # --------------------------------------------------------------- shutdown
    async def _drain(self) -> None:
        """Stop accepting, let in-flight requests finish up to shutdown_timeout,
        then close what is left."""
        assert self.ctx is not None
        ctx = self.ctx
        for server in self.servers.values():
            server.close()
        self.servers.clear()
        ctx.draining = True
        timeout = self.loaded.config.shutdown_timeout
        deadline = ctx.loop.time() + timeout
        while ctx.connections and ctx.loop.time() < deadline:
            for conn in list(ctx.connections):
                conn.close_idle()
            await asyncio.sleep(0.05)
        for conn in list(ctx.connections):
            conn.abort()
        if ctx.access_log is not None:
            ctx.access_log.close()
        if self.registry is not None:
            self.registry.close()
        ctx.close()
        log.info("stopped")


def _source(loaded: LoadedConfig) -> str:
    """The config file as configuration errors name it."""
    return str(loaded.source) if loaded.source is not None else "<built-in>"


def _log_settings(config: Config) -> tuple[str, str]:
    return config.access_log.format, config.access_log.path


def _mtime(path: Path) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def run_worker(loaded: LoadedConfig, *, reuse_port: bool = False) -> None:
    """Run one worker in this process until SIGTERM/SIGINT."""
    import uvloop

    uvloop.run(Worker(loaded, reuse_port=reuse_port).serve())


def _alpn_challenge_dir(config: Config) -> Path | None:
    """See ``acme.settings.alpn_challenge_dir``; a config without https listeners needs
    neither it nor the ACME modules it imports (cryptography: ~10 MB of memory)."""
    if not config.listen.https:
        return None
    from bastion.acme.settings import alpn_challenge_dir

    return alpn_challenge_dir(config)


def _key_query_params(config: Config) -> set[str]:
    """The names API keys are sent under on some route (query parameter and header field):
    a parameter of either name is masked in the access log, whatever its case."""
    keys = [
        route.auth.api_keys
        for site in config.sites
        for route in site.routes
        if route.auth is not None and route.auth.api_keys is not None
    ]
    return {name for k in keys for name in (k.query, k.header) if name is not None}


async def _load_config_apart(path: Path) -> LoadedConfig:
    """The file validated by a child process (``bastion.config.handoff``) while the loop
    goes on serving; the child is killed if the reload is cancelled or takes too long."""
    proc = await asyncio.create_subprocess_exec(
        *handoff.child_command("--file", os.fspath(path)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        env=handoff.child_environment(),
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), handoff.TIMEOUT)
    except BaseException as exc:  # timed out, or cancelled (the worker stops)
        if proc.returncode is None:
            proc.kill()
        with contextlib.suppress(TimeoutError):  # one stuck in the kernel is left to init
            await asyncio.wait_for(proc.wait(), 5.0)
        if isinstance(exc, TimeoutError):
            raise handoff.too_slow(path) from None
        raise
    assert proc.returncode is not None
    return handoff.read_answer(path, proc.returncode, out)
