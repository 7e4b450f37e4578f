"""A listener of the worker's own (the metrics, the admin): bastion's HTTP/1.1 protocol
with a plan of one route, the connection limits and timeouts of the sites' plan in force,
and the worker's Date line. Its requests are not the sites' traffic: its context has no
observers, so they are neither logged nor counted."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.http.context import ServerContext
from bastion.http.router import Route, Router
from bastion.http.settings import ConnectionSettings

if TYPE_CHECKING:
    from bastion.http.context import HTTP2Settings, Limits, Timeouts
    from bastion.http.request import Request
    from bastion.server.context import WorkerContext


class OwnRoute(Route):
    """The one route of such a listener (`extra_head`: header lines of every answer,
    refusals included)."""


class OwnRouter(Router):
    """The listener's plan: every request goes to its route (a subclass may refuse paths or
    methods in `route`)."""

    def __init__(self, worker: WorkerContext, route: OwnRoute) -> None:
        self.worker = worker
        self.only = route

    @property
    def limits(self) -> Limits:
        return self.worker.plan.limits

    @property
    def timeouts(self) -> Timeouts:
        return self.worker.plan.timeouts

    @property
    def http2(self) -> HTTP2Settings:
        return self.worker.plan.http2

    def route(self, req: Request, secure: bool) -> tuple[OwnRoute | None, int, bytes]:
        return self.only, 0, b""

    def is_trusted(self, ip: str) -> bool:
        return False


class OwnContext(ServerContext):
    """The listener's connections: the worker's Date line, no observers."""

    def __init__(self, worker: WorkerContext, router: OwnRouter) -> None:
        super().__init__(worker.loop, router)
        self.worker = worker

    @property
    def settings(self) -> ConnectionSettings:
        # the worker's plan in force, whichever it is now (a reload replaces it); read by
        # each new connection of the listener, which are few
        return ConnectionSettings(self.loop, self.wheel, self.plan)

    @settings.setter
    def settings(self, value: ConnectionSettings) -> None:
        pass  # made from the worker's plan when read

    @property
    def date_header(self) -> bytes:
        return self.worker.date_header

    @date_header.setter
    def date_header(self, value: bytes) -> None:
        pass  # the worker refreshes its own line; this context reads it
