"""Cache keys: scheme + host + path + normalised query (+ chosen request headers) + the
Host field as forwarded, then the request's values of the response's Vary fields for
the variant.

The path is the request's canonical path (`bastion.http.target`): the one the route
matched and the backend received, so a spelling that the backend reads differently
("/api//time", "/api/%2e/time") is never stored under another path's key. The Host
enters as the client sent it and the gateway forwards it (port included): a backend
that builds an answer from "victim.test:6666" has built it for that Host only.
A request from a trusted proxy that carries X-Forwarded-Host or X-Forwarded-Proto adds
them: the gateway forwards them, and a backend that builds links from them answers each
differently. The URL (scheme, host without port, path, query) is what purge by URL
matches."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote, unquote_plus

from bastion.state.cache import VARIANT_MARK

QUERY_ALL = "all"  # every parameter, sorted
QUERY_IGNORE = "ignore"  # no parameter


def normalise_query(query: str, mode: str | frozenset[str]) -> str:
    """Parameters decoded and re-encoded one way, sorted (`?b=2&a=1` is `?a=1&b=2`);
    `mode` is "all", "ignore" or the set of parameter names kept."""
    if not query or mode == QUERY_IGNORE:
        return ""
    pairs = []
    for part in query.split("&"):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = unquote_plus(name)
        if not isinstance(mode, str) and name not in mode:
            continue
        pairs.append((quote(name, safe=""), sep, quote(unquote_plus(value), safe="")))
    pairs.sort()
    return "&".join(n + s + v for n, s, v in pairs)


class KeyRules:
    __slots__ = ("headers", "query")

    def __init__(self, query: str | frozenset[str], headers: Sequence[str]) -> None:
        self.query = query
        self.headers = tuple(h.lower().encode("latin-1") for h in headers)


def header_values(headers: list[tuple[bytes, bytes, bytes]], names: Sequence[bytes]) -> str:
    """The request's values of `names` (lowercased), joined in a stable way."""
    parts = []
    for wanted in names:
        values = [v for n, _, v in headers if n == wanted]
        parts.append(b",".join(values).decode("latin-1").strip())
    return "\x1f".join(parts)


def url_of(scheme: str, host: str, path: str, query: str) -> str:
    return f"{scheme}://{host}{path}" + ("?" + query if query else "")


def forwarded_part(proto: bytes | None, host: bytes | None) -> str:
    """The X-Forwarded-Proto and X-Forwarded-Host a trusted proxy sent, as the backend
    receives them (a missing one is the gateway's own value, already in the key)."""
    return (proto or b"").decode("latin-1") + "\x1f" + (host or b"").decode("latin-1")


def primary_key(url: str, extra: str, host_field: bytes = b"", forwarded: str = "") -> str:
    """`host_field`: the Host (or :authority) as forwarded, which the URL holds without
    its port and lowercased; `forwarded`: a trusted proxy's forwarded scheme and host
    (`forwarded_part`), empty for any other request. Each part has a mark of its own
    (the consumer's is \x1c, the variant's \x1d): none of them can occur in a host, a
    path or a field value."""
    key = url + "\x1b" + host_field.decode("latin-1") if host_field else url
    if forwarded:
        key += "\x1a" + forwarded
    return key + ("\x1e" + extra if extra else "")


def variant_key(
    primary: str, vary: Sequence[str], headers: list[tuple[bytes, bytes, bytes]]
) -> str:
    if not vary:
        return primary
    names = [v.encode("latin-1") for v in vary]
    return primary + VARIANT_MARK + header_values(headers, names)


def parse_vary(value: str) -> tuple[str, ...]:
    return tuple(sorted({v.strip().lower() for v in value.split(",") if v.strip()}))
