"""Unsafe requests invalidate what the cache holds for them (RFC 9111 §4.4).

A `POST /items` that succeeds has changed `/items`: the stored `GET /items` (every
variant, every consumer) is dropped, and so are the answers stored for the URLs its
response names in `Location` and `Content-Location` when they are of the same origin
(another origin's entries are never touched on the word of this one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from bastion.http.target import canonical_path

if TYPE_CHECKING:
    from bastion.cache.handler import CachingHandler
    from bastion.http.request import Request

# RFC 9110 §9.2.1; compared exactly, as method names are case-sensitive: "get" is not
# GET, and a method the cache does not know is unsafe
SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS", "TRACE"))
_LOCATION_FIELDS = frozenset((b"location", b"content-location"))
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


class Invalidator:
    """Fed by the proxy exchange of an unsafe request: a 2xx or 3xx answer invalidates
    (an error changed nothing, so the stored answers stay)."""

    __slots__ = ("handler", "req", "scheme")

    def __init__(self, handler: CachingHandler, scheme: str, req: Request) -> None:
        self.handler = handler
        self.scheme = scheme
        self.req = req

    def on_head(self, status: int, status_line: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        if not 200 <= status < 400:
            return
        req = self.req
        handler = self.handler
        urls = [handler.key_url(self.scheme, req.host, req.path, req.query)]
        for name, value in headers:
            if name.lower() in _LOCATION_FIELDS:
                url = self._same_origin(value.decode("latin-1").strip())
                if url is not None:
                    urls.append(url)
        handler.invalidate(urls)

    def on_body(self, data: bytes) -> None:
        pass

    def on_end(self) -> None:
        pass

    def on_abort(self) -> None:
        pass

    def _same_origin(self, reference: str) -> str | None:
        """The cache URL of a Location/Content-Location value when it names this
        request's origin (scheme, host and port), else None."""
        req = self.req
        scheme = self.scheme
        authority = _authority(scheme, (req.host_header or req.host.encode()).decode("latin-1"))
        base = f"{scheme}://{authority}{req.path}"
        try:
            parts = urlsplit(urljoin(base, reference))
        except ValueError:  # a malformed reference (bad IPv6 literal): nothing to drop
            return None
        if parts.scheme.lower() != scheme or _authority(scheme, parts.netloc) != authority:
            return None
        try:
            path = canonical_path(parts.path or "/")
        except ValueError:  # a path no request could be routed to: nothing stored for it
            return None
        return self.handler.key_url(scheme, req.host, path, parts.query)


def _authority(scheme: str, netloc: str) -> str:
    """Host and port compared without case and without the scheme's default port."""
    netloc = netloc.rpartition("@")[2].lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default is not None and netloc.endswith(default):
        netloc = netloc[: -len(default)]
    return netloc.rstrip(".")
