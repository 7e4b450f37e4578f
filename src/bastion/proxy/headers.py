"""Header rewriting between client and upstream (RFC 9110 §7.6.1, RFC 7239 practice).

Everything here runs per request, so the sets are built once and each header is
looked at exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from bastion.http.joining import join_bytes
from bastion.http.request import Request
from bastion.proxy.forwarded import forwarded_chain
from bastion.proxy.tracing import TRACE_FIELDS, trace_lines

_join_bytes: Final = join_bytes  # a C static (http1/head.py says why)

# Hop-by-hop fields: meaningful for one connection only, never forwarded.
HOP_BY_HOP: Final = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    )
)

# Request fields the gateway sets itself; the client's copies are dropped (or,
# from a trusted proxy, folded into ours).
_REQUEST_REWRITTEN: Final = HOP_BY_HOP | frozenset(
    (
        b"host",
        b"content-length",
        b"expect",
        # the h2c upgrade's settings: connection-specific, and h2c is never forwarded
        b"http2-settings",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-real-ip",
        b"x-request-id",
    )
)
# From a peer that is not a trusted proxy, its RFC 7239 `Forwarded` field is dropped too:
# bastion does not write that field, so a client's own would reach the backend as if a
# proxy had vouched for it.
_REQUEST_REWRITTEN_UNTRUSTED: Final = _REQUEST_REWRITTEN | frozenset((b"forwarded",))
# With trace context on (`tracing.traceparent`), the client's trace fields are set aside
# too: the gateway writes them itself, a valid one as it was sent (`tracing.py`).
_TRACED: Final = (_REQUEST_REWRITTEN | TRACE_FIELDS, _REQUEST_REWRITTEN_UNTRUSTED | TRACE_FIELDS)
_RID: Final = b"\r\nX-Request-ID: "
_TRACEPARENT: Final = b"\r\ntraceparent: 00-"
_SAMPLED: Final = b"-01\r\n"
# Response fields not relayed: hop-by-hop ones, and the request id the gateway
# adds itself (a backend echoing it would duplicate it).
RESPONSE_DROPPED: Final = HOP_BY_HOP | frozenset((b"x-request-id",))


def build_request_head(
    req: Request,
    target: bytes,
    host_line: bytes,
    client_host: bytes,
    scheme: bytes,
    trusted: Callable[[str], bool] | None,
    underscores: bool = False,
    trace: bool = False,
) -> bytes:
    """The request line and header block sent upstream, ending with the blank line.

    `host_line` is the full "Host: …\\r\\n" line sent upstream, `client_host` the
    host the client asked for (X-Forwarded-Host); `trusted` tells whether an address
    belongs to `trusted_proxies` (None when none are configured). Fields whose names
    hold "_" are dropped unless `underscores`: CGI/WSGI backends map "X_Real_IP" and
    "X-Real-IP" to the same variable, so such a field could stand in for one the
    gateway sets. `trace`: write the W3C trace context (`tracing.py`).
    """
    parts = [req.method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n", host_line]
    tokens = req.connection_tokens
    from_proxy = trusted is not None and trusted(req.client_ip)
    if trace:
        skip = _TRACED[0] if from_proxy else _TRACED[1]
    else:
        skip = _REQUEST_REWRITTEN if from_proxy else _REQUEST_REWRITTEN_UNTRUSTED
    drop = req.upstream_drop
    trace_fields: list[tuple[bytes, bytes]] | None = None
    for lname, name, value in req.headers:
        if (
            lname in skip
            or (tokens and lname in tokens)
            or (drop and lname in drop)
            # the byte's value, not b"_": `bytes in bytes` first tries the argument as an
            # integer and builds a TypeError before it searches (several times the cost)
            or (0x5F in lname and not underscores)  # "_"
        ):
            if lname in TRACE_FIELDS:  # (only set aside with tracing on: see `skip`)
                if trace_fields is None:
                    trace_fields = []
                trace_fields.append((lname, value))
            continue
        # the line's pieces, not `name + b": " + value + b"\r\n"`: each `+` makes a bytes
        # object that the next copies and frees. Interpreted, this saves about 1k
        # instructions a request; compiled, the appends and the longer join cost what the
        # `+`s did (callgrind, docs/benchmarks.md)
        parts.append(name)
        parts.append(b": ")
        parts.append(value)
        parts.append(b"\r\n")
    if req.upstream_extra:
        parts.append(req.upstream_extra)

    if from_proxy and trusted is not None:
        xff, real_ip = forwarded_chain(req, trusted)
        xfp = req.xfp or scheme
        xfh = req.xfh or client_host
    else:
        xff = real_ip = req.client_ip.encode("latin-1")
        xfp = scheme
        xfh = client_host
    parts.append(b"X-Forwarded-For: ")
    parts.append(xff)
    parts.append(b"\r\nX-Forwarded-Proto: ")
    parts.append(xfp)
    parts.append(b"\r\nX-Forwarded-Host: ")
    parts.append(xfh)
    parts.append(b"\r\nX-Real-IP: ")
    parts.append(real_ip)
    rid = req.request_id.encode("latin-1")
    if trace_fields is None and trace and (not from_proxy or req.xrid is None):
        # the common case, inline: a new trace named by the gateway's own request id
        parts.append(_RID)
        parts.append(rid)
        parts.append(_TRACEPARENT)
        parts.append(rid)
        parts.append(b"-")
        parts.append(rid[16:])
        parts.append(_SAMPLED)
        req.trace_id = req.request_id
    else:
        parts.append(_RID)
        parts.append(rid)
        parts.append(b"\r\n")
        if trace:
            parts.append(trace_lines(req, trace_fields, rid))
    if req.upgrade is not None:
        parts.append(b"Connection: upgrade\r\nUpgrade: " + req.upgrade + b"\r\n")
    if req.chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif req.content_length is not None:
        parts.append(b"Content-Length: %d\r\n" % req.content_length)
    parts.append(b"\r\n")
    return _join_bytes(parts)


def upgrade_to_forward(value: bytes, allowed: frozenset[bytes]) -> bytes | None:
    """The protocols of an Upgrade field that the route forwards (`allowed`: lowercase
    names), as the client spelled them; None when there is none left.

    A protocol is `name[/version]` (RFC 9110 §7.8), its name compared
    case-insensitively."""
    kept = [
        protocol
        for protocol in (p.strip() for p in value.split(b","))
        if protocol and protocol.partition(b"/")[0].lower() in allowed
    ]
    return b", ".join(kept) if kept else None

