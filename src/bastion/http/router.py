"""The plan as a wire protocol sees it: a `Router` hands back a request's `Route`, whose
`Handler` answers it through a `Downstream`.

Base classes, not protocols: `dispatch` makes these calls once a request, and the
compiled build calls a protocol's methods by name (a lookup and an argument parse each)
but a base class's through its method table, and reads a base class's attributes from
its struct (docs/compiled.md). The plan's classes (`plan/runtime.py`, `plan/routes.py`),
the handlers and the worker's own listeners derive from them; so does a test's stand-in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mypy_extensions import mypyc_attr

if TYPE_CHECKING:
    from bastion.http.context import HTTP2Settings, Limits, Timeouts
    from bastion.http.downstream import Downstream
    from bastion.http.request import Request

__all__ = ["Handler", "Route", "Router"]


@mypyc_attr(allow_interpreted_subclasses=True)
class Handler:
    """What answers a routed request (the proxy, a fixed answer, a policy chain…)."""

    def handle(self, client: Downstream, req: Request) -> None:
        raise NotImplementedError


@mypyc_attr(allow_interpreted_subclasses=True)
class Route:
    """A route as dispatch sees it."""

    def __init__(self, name: str, handler: Handler, extra_head: bytes = b"") -> None:
        self.name = name
        self.handler = handler
        # header lines added to every answer of the route (HSTS over HTTPS; a listener's
        # own, refusals included)
        self.extra_head = extra_head


@mypyc_attr(allow_interpreted_subclasses=True)
class Router:
    """The compiled plan, as protocols see it: copied into a connection when it opens."""

    @property
    def limits(self) -> Limits:
        raise NotImplementedError

    @property
    def timeouts(self) -> Timeouts:
        raise NotImplementedError

    @property
    def http2(self) -> HTTP2Settings:
        raise NotImplementedError

    def route(self, req: Request, secure: bool) -> tuple[Route | None, int, bytes]:
        """The route of `req`, or (None, 404 or 405, the Allow value)."""
        raise NotImplementedError

    def is_trusted(self, ip: str) -> bool:
        """`ip` is one of the trusted proxies (its X-Request-Id is kept)."""
        raise NotImplementedError
