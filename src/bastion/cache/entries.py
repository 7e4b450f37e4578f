"""Turn a backend response (status, fields, body) into a stored `Entry`."""

from __future__ import annotations

from bastion.cache.key import parse_vary
from bastion.cache.policy import Decision
from bastion.state.cache import Entry

# Fields never stored: hop-by-hop ones, and those written fresh on every hit.
UNSTORED = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"content-length",
        b"date",
        b"age",
        b"x-cache",
        b"x-request-id",
    )
)
# Fields a 304 answered from the cache carries (RFC 9110 §15.4.5).
META_FIELDS = frozenset(
    (b"cache-control", b"content-location", b"etag", b"expires", b"vary", b"last-modified")
)
TAG_FIELDS = (b"surrogate-key", b"cache-tag")


def field_map(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Lowercased names to values, repeated fields joined with ", "."""
    fields: dict[str, str] = {}
    for name, value in headers:
        lname = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        fields[lname] = fields[lname] + ", " + text if lname in fields else text
    return fields


def tags_of(fields: dict[str, str]) -> frozenset[str]:
    tags: set[str] = set()
    for name in ("surrogate-key", "cache-tag"):
        value = fields.get(name)
        if value:
            tags.update(t for t in value.replace(",", " ").split() if t)
    return frozenset(tags)


def build_entry(
    key: str,
    url: str,
    status_line: bytes,
    status: int,
    headers: list[tuple[bytes, bytes]],
    fields: dict[str, str],
    body: bytes,
    decision: Decision,
    now: float,
) -> Entry:
    lines = []
    meta = []
    for name, value in headers:
        lname = name.lower()
        if lname in UNSTORED:
            continue
        line = name + b": " + value + b"\r\n"
        lines.append(line)
        if lname in META_FIELDS:
            meta.append(line)
    try:
        initial_age = float(max(int(fields.get("age", "0")), 0))
    except ValueError:
        initial_age = 0.0
    etag = fields.get("etag")
    modified = fields.get("last-modified")
    return Entry(
        key,
        url,
        status,
        status_line + b"".join(lines),
        body,
        now,
        decision.lifetime,
        initial_age,
        decision.stale_while_revalidate,
        decision.stale_if_error,
        etag.encode("latin-1") if etag else None,
        modified.encode("latin-1") if modified else None,
        tags_of(fields),
        b"".join(meta),
        headers,
        parse_vary(fields.get("vary", "")),
    )
