"""Conditional requests: the ones the cache sends to revalidate an entry, and the
clients' own, answered with 304 from an entry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.cache.entries import UNSTORED
from bastion.cache.policy import http_date

if TYPE_CHECKING:
    from bastion.http.request import Request
    from bastion.state.cache import Entry

_CONDITIONAL = frozenset(
    (b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since", b"if-range")
)


def conditional_request(req: Request, entry: Entry) -> Request:
    """A GET for the same resource, with the entry's validators instead of the
    client's own conditions (the answer must be usable for the entry). It is `req` as
    the route's policies left it (consumer, added and dropped fields), so the backend
    gets the gateway's identity fields and never the client's credentials or its own
    copy of them."""
    headers = [h for h in req.headers if h[0] not in _CONDITIONAL and h[0] != b"range"]
    if entry.etag is not None:
        headers.append((b"if-none-match", b"If-None-Match", entry.etag))
    if entry.last_modified is not None:
        headers.append((b"if-modified-since", b"If-Modified-Since", entry.last_modified))
    return req.derived_get(headers)


def _etags(value: bytes) -> list[bytes]:
    return [t.strip().removeprefix(b"W/") for t in value.split(b",") if t.strip()]


def not_modified(req: Request, entry: Entry) -> bool:
    """Does the client's own If-None-Match / If-Modified-Since hold for the entry?"""
    inm = None
    ims = None
    for name, _, value in req.headers:
        if name == b"if-none-match":
            inm = value if inm is None else inm + b"," + value
        elif name == b"if-modified-since":
            ims = value
    if inm is not None:
        # weak comparison (RFC 9110 §13.1.2)
        if entry.etag is None:
            return False
        tags = _etags(inm)
        return b"*" in tags or entry.etag.removeprefix(b"W/") in tags
    if ims is not None and entry.last_modified is not None:
        since = http_date(ims.decode("latin-1"))
        modified = http_date(entry.last_modified.decode("latin-1"))
        return since is not None and modified is not None and modified <= since
    return False


def refreshed_headers(
    stored: list[tuple[bytes, bytes]], head_304: bytes
) -> list[tuple[bytes, bytes]]:
    """The stored fields updated with those of a 304 (RFC 9111 §3.2)."""
    update: list[tuple[bytes, bytes]] = []
    for line in head_304.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() not in UNSTORED:
            update.append((name.strip(), value.strip()))
    replaced = {n.lower() for n, _ in update}
    kept = [(n, v) for n, v in stored if n.lower() not in replaced]
    return kept + update
