"""The metrics listener: `GET /metrics` in the Prometheus text format, on an address of
its own (never a site's listener), to the addresses of `metrics.allow` only.

Every worker counts its own requests (`observe/tap.py`, taken once a second by
`observe/recorder.py`) and, when there are several workers, puts a snapshot of its counters in the
shared `Snapshots` store once a second. A scrape reaches one worker (the listener is shared with
SO_REUSEPORT): it takes what its tap counted, then answers with its counters plus the
latest snapshot of every other worker, so the figures are the totals of the instance
whichever worker answers. A worker that stops takes its counts with it; Prometheus reads
the drop as a counter reset.

The listener speaks bastion's own HTTP/1.1 protocol with a router of one route.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any

from bastion.config.addresses import client_address
from bastion.config.plain import replaced
from bastion.http.router import Handler
from bastion.http1.server import HTTP1Connection
from bastion.observe.metrics import RequestMetrics, merge
from bastion.server.listen import where_to_listen
from bastion.server.own_listener import OwnContext, OwnRoute, OwnRouter

if TYPE_CHECKING:
    from bastion.config.observe_models import Metrics
    from bastion.http.downstream import Downstream
    from bastion.http.request import Request
    from bastion.observe.exposition import MetricSource
    from bastion.observe.recorder import Recorder
    from bastion.server.context import WorkerContext
    from bastion.state.snapshots import Snapshots

log = logging.getLogger("bastion.server")

TOPIC = "metrics"
PUBLISH_EVERY = 1.0
PATH = "/metrics"
BACKLOG = 100  # the loop's default: a listener for scrapers, not for the traffic


class MetricsHandler(Handler):
    def __init__(self, endpoint: MetricsEndpoint) -> None:
        self.endpoint = endpoint

    def handle(self, client: Downstream, req: Request) -> None:
        endpoint = self.endpoint
        if not endpoint.allowed(client.client_ip):
            client.problem(req, 403, "This address may not read the metrics.")
            return
        # prometheus-client (about 1.5 MiB with the http.server and urllib it imports) is
        # loaded by the first scrape, not with the listener
        from bastion.observe.exposition import CONTENT_TYPE

        client.respond(req, 200, endpoint.render(), CONTENT_TYPE)


class MetricsRouter(OwnRouter):
    """GET and HEAD /metrics only."""

    def route(self, req: Request, secure: bool) -> tuple[OwnRoute | None, int, bytes]:
        if req.path != PATH:
            return None, 404, b""
        if req.method not in ("GET", "HEAD"):
            return None, 405, b"GET, HEAD"
        return self.only, 0, b""


class MetricsEndpoint:
    """The worker's request metrics, their snapshots, and the listener that serves them."""

    def __init__(
        self, worker: WorkerContext, settings: Metrics, snapshots: Snapshots, recorder: Recorder
    ) -> None:
        self.worker = worker
        self.settings = settings
        self.snapshots = snapshots
        self.recorder = recorder
        self.counters = RequestMetrics(settings.status_codes, settings.consumers)
        self.pid = os.getpid()
        self.server: asyncio.Server | None = None
        self.shared = False  # other workers serve the instance too (snapshots exchanged)
        self._allowed: dict[str, bool] = {}
        self.collectors: list[MetricSource] = []  # more metric families (observe/event_exposition)
        self.publisher: asyncio.Task[None] | None = None
        recorder.metrics = self.counters

    def allowed(self, ip: str) -> bool:
        known = self._allowed.get(ip)
        if known is None:
            address = client_address(ip)
            known = address is not None and any(address in net for net in self.settings.allow)
            if len(self._allowed) < 1024:
                self._allowed[ip] = known
        return known

    def configure(self, settings: Metrics) -> None:
        """A reload's settings: the allow list and labels apply at once; a new address
        needs a restart."""
        if settings.listen != self.settings.listen:
            log.warning("metrics.listen changed: the new address is used after a restart")
        self.settings = replaced(settings, listen=self.settings.listen)
        self.counters.exact_status = settings.status_codes
        self.counters.consumers = settings.consumers
        self._allowed = {}

    def render(self) -> bytes:
        self.recorder.flush()  # this worker's figures up to now, not up to the last second
        self.counters.in_flight = self.worker.in_flight()
        mine = self.counters.snapshot()
        others: list[dict[str, Any]] = []
        with contextlib.suppress(OSError):
            for snap in self.snapshots.read(TOPIC) if self.shared else ():
                theirs = snap.get("metrics")
                if snap.get("pid") != self.pid and isinstance(theirs, dict):
                    others.append(theirs)
        from bastion.observe.exposition import exposition

        return exposition(merge([mine, *others], self.settings.consumers), self.collectors)

    async def start(self, reuse_port: bool) -> None:
        address = self.settings.listen
        assert address is not None
        self.shared = reuse_port  # the listeners are shared by several workers
        route = OwnRoute("metrics", MetricsHandler(self))
        ctx = OwnContext(self.worker, MetricsRouter(self.worker, route))
        self.server = await self.worker.loop.create_server(
            lambda: HTTP1Connection(ctx),
            **where_to_listen(address, reuse_port, backlog=BACKLOG),
        )
        if self.shared:  # a single worker has nobody to tell
            self.publisher = self.worker.loop.create_task(self._publish())
        log.info("metrics on http://%s%s", address, PATH)

    async def _publish(self) -> None:
        """Once a second, the counters for the other workers (a convenience for them:
        never a reason to stop)."""
        try:
            while True:
                await asyncio.sleep(PUBLISH_EVERY)
                self.recorder.flush()
                self.counters.in_flight = self.worker.in_flight()
                snapshot = {"pid": self.pid, "metrics": self.counters.snapshot()}
                with contextlib.suppress(OSError):
                    self.snapshots.put(TOPIC, snapshot)
        finally:
            with contextlib.suppress(OSError):
                self.snapshots.remove(TOPIC)

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.cancel()
        if self.server is not None:
            self.server.close()
