"""The request path, checked and put into its one canonical form.

Both protocols end here (HTTP/1.1's request line after the absolute-form is taken
apart, HTTP/2's `:path`), so a request has one path from then on: the router matches
it, the proxy forwards it (after `strip_prefix`), the cache keys on it, policies see
it. A backend therefore never serves another path than the one whose route's policies
ran. The rules and their reasons are in docs/behaviour.md ("Paths: what
is routed is what is forwarded").

Canonical form, segment by segment:
- an escape of an unreserved character is decoded (``%41`` → ``A``, ``%2e`` → ``.``);
  any other escape is kept, in uppercase hex (``%3f`` → ``%3F``);
- a character a path cannot hold as it is (``"``, ``{``, ``|``, ...) is escaped;
- empty segments (``//``) are merged, ``.`` and ``..`` resolved (above the root: refused);
- ``%2F`` and ``%5C`` (an encoded slash or backslash) stay encoded, as part of their
  segment; backends disagree on whether they separate segments, so a route refuses them
  unless it says its backend keeps them (`encoded_slashes`, checked by `Plan.route`), and
  a segment that would hold an empty or dot segment once they are decoded is refused here;
- ``;`` parameters stay part of their segment; Java servlet containers cut them off each
  segment before matching (``/admin;x/secret`` is ``/admin/secret`` there), so a route
  refuses a path with a ``;`` (or ``%3B``) unless it says its backend takes it as data
  (`path_parameters`, checked by `Plan.route`), and a segment that is empty or a dot
  segment once its parameter is cut (``..;x``, ``;x``) is refused here, on every route;
- refused: a fragment (``#``) and a control character, raw or escaped.
The query passes unchanged (a ``;`` there is data).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.http.request import Request

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# RFC 3986 pchar without escapes: unreserved, sub-delims, ":" and "@"
_PCHAR = _UNRESERVED | frozenset(b"!$&'()*+,;=:@")


def _escaped(b: int) -> str:
    return f"%{b:02X}"


# What a path character or an escape becomes in the canonical form, by byte value;
# None: refused. `#` never gets here (the whole target is checked first).
_AS_RAW = tuple(
    chr(b)
    if b in _PCHAR or b == 0x2F
    else None
    if b <= 0x20 or b == 0x7F or b == 0x25  # a "%" that does not start an escape
    else _escaped(b)
    for b in range(256)
)
_AS_ESCAPE = tuple(
    chr(b) if b in _UNRESERVED else None if b < 0x20 or b == 0x7F else _escaped(b)
    for b in range(256)
)
# anything that makes a path non-canonical: an escape, a character outside pchar, ...
_first_unplain = re.compile(r"[^A-Za-z0-9\-._~!$&'()*+,;=:@/]").search
# ... and in the slow path the units that are rewritten
_UNIT = re.compile(r"%[0-9A-Fa-f]{2}|[^A-Za-z0-9\-._~!$&'()*+,;=:@/]")

# Paths already found canonical as they came (most traffic repeats a few paths): one set
# lookup instead of the character-class search. Bounded in count and length (a few
# hundred kB per worker at most); a pure function's memo, so never stale. HTTP/1.1's
# _parse_target looks a path up here itself before it calls set_origin_target.
SEEN_CANONICAL: set[str] = set()
_SEEN_MAX_PATHS = 4096
_SEEN_MAX_LENGTH = 128

MALFORMED = "The request path is malformed."
FRAGMENT = "A request target cannot contain a fragment (#)."
ENCODED_SLASH = (
    "The request path hides an empty or dot segment behind an encoded slash (%2F) "
    "or backslash (%5C)."
)


class _Refused(Exception):
    def __init__(self, detail: str) -> None:
        self.detail = detail


def _recode(unit: re.Match[str]) -> str:
    text = unit.group()
    out = _AS_ESCAPE[int(text[1:], 16)] if len(text) == 3 else _AS_RAW[ord(text)]
    if out is None:
        raise _Refused(MALFORMED)
    return out


def canonical_path(path: str) -> str:
    """The canonical form of an absolute path (latin-1 text of its bytes, no query): the
    same object when it already is. Raises ValueError with the client-facing detail when
    the path is refused."""
    if path[:1] != "/":
        raise ValueError(MALFORMED)
    if _first_unplain(path) is None and "//" not in path and "/." not in path and ";" not in path:
        return path  # the common case: nothing to decode, merge, resolve or refuse
    return _rewrite(path)


def _rewrite(path: str) -> str:
    try:
        text = _UNIT.sub(_recode, path) if _first_unplain(path) is not None else path
    except _Refused as refused:  # a control character, or "%" not followed by two hex digits
        raise ValueError(refused.detail) from None
    out: list[str] = []
    segments = text.split("/")
    for segment in segments[1:]:
        if segment == "" or segment == ".":
            continue
        if segment == "..":
            if not out:
                raise ValueError(MALFORMED)  # above the root
            out.pop()
            continue
        if "%" in segment and ("%2F" in segment or "%5C" in segment):
            _check_encoded_slashes(segment)
        if ";" in segment and segment.partition(";")[0] in ("", ".", ".."):
            # "..;x" is ".." to Tomcat/Spring/Jetty; ";x" alone is an empty segment there
            raise ValueError(MALFORMED)
        out.append(segment)
    trailing = "/" if out and segments[-1] in ("", ".", "..") else ""
    return "/" + "/".join(out) + trailing


def _check_encoded_slashes(segment: str) -> None:
    """A segment that a backend decoding %2F or %5C would split into an empty or a dot
    segment ("..%2F..%2Fadmin", "%2Fetc") is refused on every route: kept or not, it
    would be another path there."""
    for piece in segment.replace("%5C", "%2F").split("%2F"):
        if piece.partition(";")[0] in ("", ".", ".."):
            raise ValueError(ENCODED_SLASH)


def has_encoded_slash(path: str) -> bool:
    """True for a canonical path with %2F or %5C (routes refuse it unless they keep it)."""
    return "%2F" in path or "%5C" in path


def has_path_parameter(path: str) -> bool:
    """True for a canonical path with a ";" or its escape %3B, which some stacks decode
    before they cut parameters (routes refuse it unless they keep them)."""
    return ";" in path or "%3B" in path


def set_origin_target(req: Request, target: bytes) -> str | None:
    """Fill the request's path fields from an origin-form target ("/path?query", which the
    caller checked starts with "/"): `raw_path` as sent, `path` canonical, `query`
    unchanged, and `target` the one forwarded (the canonical path and the query). The
    detail of a 400 when the target is refused.

    Every request pays for this, so the common case is inlined: a set lookup for a path
    seen before, else a few `in` scans and one precompiled character-class search."""
    raw = target.decode("latin-1")
    if "#" in raw:  # scanned as text: `b"#" in target` costs several times more
        return FRAGMENT
    path, sep, query = raw.partition("?")
    req.raw_path = path
    req.query = query
    if path in SEEN_CANONICAL:  # its hash is computed once, and reused by the route lookup
        req.path = path
        return None
    # a path with ";" takes the slow path, so that it is a new object and the route it
    # matches decides on it (Plan.route); it also covers "/;", a segment refused there
    if _first_unplain(path) is None and "//" not in path and "/." not in path and ";" not in path:
        if len(path) <= _SEEN_MAX_LENGTH:
            if len(SEEN_CANONICAL) >= _SEEN_MAX_PATHS:
                SEEN_CANONICAL.clear()  # a flood of distinct paths: start again
            SEEN_CANONICAL.add(path)
        req.path = path
        return None
    try:
        canonical = _rewrite(path)
    except ValueError as refused:
        return str(refused)
    req.path = canonical
    req.target = (canonical + sep + query).encode("latin-1")  # what was routed is sent
    return None
