"""A compiled route: what `Plan.route` hands back for a request, and the answer of a
route to a target that was not in canonical form."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.http.router import Handler, Route
from bastion.http.target import has_encoded_slash, has_path_parameter

if TYPE_CHECKING:
    from bastion.http.downstream import Downstream
    from bastion.http.request import Request

__all__ = ["CanonicalRedirect", "CompiledRoute", "noncanonical"]


class CompiledRoute(Route):
    """A site's route: `Route`'s name, handler and the header lines added to every
    response of the route (HSTS over HTTPS), and what `Plan.route` checks."""

    def __init__(
        self, name: str, methods: frozenset[str] | None, handler: Handler, extra_head: bytes = b""
    ) -> None:
        super().__init__(name, handler, extra_head)
        self.methods = methods
        # the route's backend takes %2F / %5C as data, not as a separator
        self.encoded_slashes = False
        # the route's backend takes ";" in a path as data, not as a parameter to cut off
        self.path_parameters = False
        # a request whose target was not canonical: None forwards the canonical form;
        # otherwise the route that answers it (a 308 to the canonical form), or 400
        self.noncanonical: CompiledRoute | int | None = None


class CanonicalRedirect(Handler):
    """The answer of a `path_normalisation: redirect` route to a non-canonical target."""

    def handle(self, client: Downstream, req: Request) -> None:
        location = req.path + ("?" + req.query if req.query else "")
        client.respond(req, 308, b"", b"", b"Location: " + location.encode("latin-1") + b"\r\n")


def noncanonical(route: CompiledRoute, req: Request) -> tuple[CompiledRoute | None, int, bytes]:
    """The route's answer to a request whose target was not in canonical form."""
    if not route.encoded_slashes and has_encoded_slash(req.path):
        return None, 400, b""
    if not route.path_parameters and has_path_parameter(req.path):
        return None, 400, b""  # "/admin;x/secret" is "/admin/secret" to a servlet container
    answer = route.noncanonical
    if answer is None or req.path == req.raw_path:  # canonical, only spelled in a new object
        return route, 0, b""
    if isinstance(answer, int):
        return None, answer, b""
    return answer, 0, b""
