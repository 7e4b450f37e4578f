"""RFC 9111 rules for a shared cache: may a response be stored, and for how long is it fresh.

Pure functions over parsed header fields, so that the rules can be checked against a
table of header combinations without a server.
"""

from __future__ import annotations

from dataclasses import dataclass

from bastion.http.dates import parse_http_date

# RFC 9110 §15.1: statuses cacheable by default (heuristically). 206 is left out: the
# cache does not combine partial content.
DEFAULT_STATUSES = frozenset((200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501))


def parse_cache_control(value: str) -> dict[str, str]:
    """Directive names (lowercased) to their argument ("" when none)."""
    directives: dict[str, str] = {}
    for part in value.split(","):
        name, _, arg = part.strip().partition("=")
        name = name.strip().lower()
        if name and name not in directives:
            directives[name] = arg.strip().strip('"')
    return directives


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    return float(max(number, 0))


def http_date(value: str | None) -> float | None:
    """An HTTP date as a Unix time; None when absent or invalid (an invalid
    Expires means "already expired", handled by the caller)."""
    if not value:
        return None
    return parse_http_date(value)


@dataclass(frozen=True, slots=True)
class Rules:
    """How a route caches (compiled from its `cache:` config)."""

    ttl: float | None = None  # overrides the backend's freshness when set
    heuristic: bool = False
    allow_authorization: bool = False
    statuses: frozenset[int] = DEFAULT_STATUSES
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a response may be stored and, if so, its freshness windows."""

    store: bool
    reason: str = ""
    lifetime: float = 0.0  # seconds fresh, counted from when it was generated
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    # the response says it is the same for everybody (`public`, `s-maxage`): on an
    # authenticated route it is stored once for all consumers, not per consumer
    shared: bool = False


def decide(
    method: str,
    status: int,
    headers: dict[str, str],
    rules: Rules,
    request_authorized: bool = False,
    now: float | None = None,
) -> Decision:
    """`headers` maps lowercased response field names to values (repeated fields
    joined with ", "); `now` is the Unix time the response was received."""
    if method != "GET":
        return Decision(False, "method")
    if status not in rules.statuses:
        return Decision(False, "status")
    cc = parse_cache_control(headers.get("cache-control", ""))
    if "no-store" in cc:
        return Decision(False, "no-store")
    if "private" in cc:
        return Decision(False, "private")
    if "set-cookie" in headers:
        return Decision(False, "set-cookie")  # one client's cookie is never another's
    if "*" in (v.strip() for v in headers.get("vary", "").split(",")):
        return Decision(False, "vary-star")
    if (
        request_authorized
        and not rules.allow_authorization
        and not ("public" in cc or "s-maxage" in cc or "must-revalidate" in cc)
    ):
        return Decision(False, "authorization")  # RFC 9111 §3.5
    if "no-cache" in cc and rules.ttl is None:
        # stored, but every use is revalidated: only worth it with a validator
        if "etag" not in headers and "last-modified" not in headers:
            return Decision(False, "no-cache")
        lifetime = 0.0
    else:
        found = freshness_lifetime(cc, headers, rules, now)
        if found is None:
            return Decision(False, "no-freshness")
        lifetime = found
    swr = _seconds(cc.get("stale-while-revalidate"))
    sie = _seconds(cc.get("stale-if-error"))
    if "must-revalidate" in cc or "proxy-revalidate" in cc:
        swr = sie = 0.0  # stale responses must not be used at all
    elif "no-cache" in cc and rules.ttl is None:
        swr = 0.0  # every use waits for a successful validation
    return Decision(
        True,
        "",
        lifetime,
        rules.stale_while_revalidate if swr is None else swr,
        rules.stale_if_error if sie is None else sie,
        "public" in cc or "s-maxage" in cc,
    )


def freshness_lifetime(
    cc: dict[str, str], headers: dict[str, str], rules: Rules, now: float | None = None
) -> float | None:
    """Seconds of freshness (RFC 9111 §4.2.1, shared cache), or None when the response
    gives none and no heuristic or override applies."""
    if rules.ttl is not None:
        return rules.ttl
    for name in ("s-maxage", "max-age"):
        if name in cc:
            return _seconds(cc[name]) or 0.0
    if "expires" in headers:
        expires = http_date(headers["expires"])
        if expires is None:
            return 0.0  # an invalid Expires is in the past
        date = http_date(headers.get("date"))
        base = date if date is not None else now
        if base is None:
            return 0.0
        return max(expires - base, 0.0)
    if rules.heuristic:
        modified = http_date(headers.get("last-modified"))
        date = http_date(headers.get("date"))
        base = date if date is not None else now
        if modified is not None and base is not None and base > modified:
            # the usual 10% of the time since the last change (RFC 9111 §4.2.2)
            return min((base - modified) / 10, 86400.0)
    return None
