"""Header translation between HTTP/2 header lists and the HTTP/1.1 shapes the
router, the proxy and the handlers already speak.

The checks of RFC 9113 §8.2 and §8.3 are done here, in the one pass that maps the
fields anyway: `build_request` raises `Malformed` for names that are not lowercase
tokens, control characters (other than HTAB) or surrounding whitespace in values,
connection-specific fields, `te` other than `trailers`, unknown, duplicate,
misplaced or missing pseudo-headers, a :method that is not a token, a :path with
anything but visible ASCII and Host differing from :authority; `check_trailers`
holds trailer fields to the same rules. Nothing that could not be written as an
HTTP/1.1 request line or field reaches the upstream. Split Cookie fields are joined
(RFC 9113 §8.2.3). `response_headers` does the outbound side.
"""

from __future__ import annotations

import re
from typing import Final

from bastion.http.request import REFUSED_METHODS, Request
from bastion.http.target import set_origin_target
from bastion.routing import host_of

# Response fields that mean something only to an HTTP/1.1 connection (RFC 9113 §8.2.2),
# and TE, which only a request may carry.
_CONNECTION_SPECIFIC: Final = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"transfer-encoding",
        b"upgrade",
    )
)
_SPECIAL: Final = frozenset(
    (
        b"content-length",
        b"expect",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-request-id",
        b"user-agent",
        b"referer",
    )
)


# The checks are one precompiled character-class scan per field (measured as cheap
# as bytes.translate with a delete table, and cheaper than a per-character loop).
# A field name is an RFC 9110 §5.6.2 token, and in HTTP/2 a lowercase one (RFC 9113
# §8.2.1: uppercase is malformed); a pseudo-header's leading colon is taken apart first.
_BAD_NAME: Final = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9a-z]")
# RFC 9110 §5.5: a field value holds visible characters, SP, HTAB and obs-text; any
# other control character (NUL, CR, LF, ESC, DEL, ...) is refused, not just the
# three RFC 9113 §8.2.1 names, as an HTTP/1.1 parser refuses them too.
_BAD_VALUE: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_WHITESPACE: Final = (32, 9)  # SP and HTAB, as byte values
# RFC 9110 §9.1: a method is a token, compared case-sensitively. The gateway takes
# methods in uppercase only (as nginx and the HTTP/1.1 parser do): backends that
# uppercase the method they read (WSGI frameworks do) would otherwise run `trace`
# or `get` as TRACE or GET while the gateway's refusals and route `methods` saw
# another method.
_BAD_METHOD: Final = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")
_LOWERCASE: Final = re.compile(rb"[a-z]")
# RFC 9112 §3.2 / RFC 3986: a request target is visible ASCII only; SP, controls,
# DEL and bytes >= 0x80 cannot be written into an HTTP/1.1 request line
_BAD_PATH: Final = re.compile(rb"[^\x21-\x7e]")
# the usual methods as shared str objects, as on HTTP/1.1 (no check, no decoding)
_METHODS: Final = {
    m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
}
# fields HTTP/2 forbids in a request (RFC 9113 §8.2.2); TE is checked by value
_FORBIDDEN: Final = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)


class Malformed(Exception):
    """A malformed request (RFC 9113 §8.1.1): a stream error of type PROTOCOL_ERROR."""


class StreamReject(Exception):
    """The request is refused with `status` on its stream; the connection lives on."""

    def __init__(self, status: int, detail: str | None = None) -> None:
        super().__init__(status, detail)
        self.status = status
        self.detail = detail


def build_request(
    headers: list[tuple[bytes, bytes]],
    req: Request,
    max_header_bytes: int,
    max_uri_bytes: int,
    max_body_bytes: int,
    checked: bool = False,
) -> None:
    """Fill `req` from a request header list; raises Malformed or StreamReject.

    Sizes are counted as the HTTP/1.1 side counts them (name, value and four bytes
    of framing per field), so one `limits:` section means the same on both.
    `checked`: the same list passed these field scans before (a header block the
    decoder's memo knows, see decoder.py): the character scans are skipped, the
    rest of the checks are not.
    """
    method = scheme = path = authority = protocol = None
    host = None
    size = 0
    fields = req.headers
    regular = False  # a regular field was seen: no pseudo-header may follow
    cookie_at = -1  # where the Cookie field is in `fields`
    deferred: StreamReject | None = None  # the gateway's own refusal, after §8 checks
    bad_name = _BAD_NAME.search
    bad_value = _BAD_VALUE.search
    bad_path = _BAD_PATH.search
    for name, value in headers:
        if name[:1] == b":":
            if regular:
                raise Malformed(f"pseudo-header {name!r} after a regular field")
            if name == b":path" and path is None:
                # visible ASCII only (RFC 9112 §3.2, RFC 3986): what an HTTP/1.1
                # request line can carry; this scan stands in for the value check
                if not checked and bad_path(value) is not None:
                    raise Malformed("a character that is not visible ASCII in :path")
                path = value
                continue
            if (
                value
                and not checked
                and (
                    bad_value(value) is not None
                    or value[0] in _WHITESPACE
                    or value[-1] in _WHITESPACE
                )
            ):
                raise Malformed(f"illegal character or whitespace in the value of {name!r}")
            if name == b":method" and method is None:
                method = value
            elif name == b":authority" and authority is None:
                authority = value
            elif name == b":scheme" and scheme is None:
                scheme = value
            elif name == b":protocol" and protocol is None:
                protocol = value
            else:
                raise Malformed(f"unknown or repeated pseudo-header {name!r}")
            continue
        if not checked:
            if value and (
                bad_value(value) is not None
                or value[0] in _WHITESPACE
                or value[-1] in _WHITESPACE
            ):
                raise Malformed(f"illegal character or whitespace in the value of {name!r}")
            if not name or bad_name(name) is not None:
                raise Malformed(f"illegal field name {name!r}")
        regular = True
        if name == b"cookie":
            if cookie_at >= 0:
                # split crumbs are one field again for HTTP/1.1 (RFC 9113 §8.2.3)
                joined = fields[cookie_at][2] + b"; " + value
                fields[cookie_at] = (name, name, joined)
                size += len(value) + 2
                continue
            cookie_at = len(fields)
        size += len(name) + len(value) + 4
        fields.append((name, name, value))
        if name == b"host":
            if host is not None:
                raise Malformed("more than one Host field")
            host = value
        elif name in _SPECIAL:
            if deferred is None:
                try:
                    _special(req, name, value)
                except StreamReject as exc:
                    deferred = exc
        elif name in _FORBIDDEN or (name == b"te" and value.lower() != b"trailers"):
            raise Malformed(f"connection-specific field {name!r}")
    if method is None:
        raise Malformed("no :method pseudo-header")
    known = _METHODS.get(method)
    if known is None:
        if not method or _BAD_METHOD.search(method) is not None:
            raise Malformed(f"the :method {method!r} is not a token")
        if _LOWERCASE.search(method) is not None:
            deferred = deferred or StreamReject(400, "The method must be in uppercase.")
    req.method = known or method.decode("ascii")  # set early: refusals log it too
    if method == b"CONNECT" and protocol is None:
        # plain CONNECT carries neither :scheme nor :path (RFC 9113 §8.5)
        if scheme is not None or path is not None or authority is None:
            raise Malformed("malformed CONNECT request")
        raise StreamReject(501, "CONNECT is not supported on this connection.")
    if scheme is None or not path:
        raise Malformed("no :scheme or empty :path pseudo-header")
    if method == b"TRACE":
        raise StreamReject(501, REFUSED_METHODS[method])
    if protocol is not None:
        # extended CONNECT (RFC 8441) is not offered: SETTINGS_ENABLE_CONNECT_PROTOCOL
        # is never sent, so a client may not use :protocol
        raise Malformed(":protocol without extended CONNECT")
    if authority is None and host is None:
        raise Malformed("neither :authority nor Host")
    if authority is not None and host is not None and authority != host:
        raise Malformed("Host differs from :authority")
    if deferred is not None:
        raise deferred
    if size > max_header_bytes:
        raise StreamReject(431)
    if len(path) > max_uri_bytes:
        raise StreamReject(414)
    if scheme not in (b"https", b"http"):
        raise StreamReject(400, "The :scheme pseudo-header must be https.")
    raw_host = authority or host or b""
    # reg-name, IP literal and port characters only (RFC 3986 §3.2.2), hence no
    # userinfo (RFC 9113 §8.3.1) and no byte outside ASCII: as for Host on HTTP/1.1
    parsed = host_of(raw_host)
    if parsed is None:
        raise StreamReject(400, "The :authority pseudo-header is malformed.")
    req.host = parsed
    req.host_header = raw_host
    req.target = path
    _parse_path(req, path)
    max_body = max_body_bytes
    if max_body and req.content_length is not None and req.content_length > max_body:
        raise StreamReject(413)


def check_trailers(headers: list[tuple[bytes, bytes]]) -> None:
    """Raise Malformed for a trailer section a request could not carry: a pseudo-header
    (RFC 9113 §8.1), a name or value that fails the request field rules, or a
    connection-specific field. Trailers are checked, then not forwarded."""
    bad_name = _BAD_NAME.search
    bad_value = _BAD_VALUE.search
    for name, value in headers:
        if not name or bad_name(name) is not None:
            raise Malformed(f"illegal trailer field name {name!r}")
        if value and (
            bad_value(value) is not None or value[0] in _WHITESPACE or value[-1] in _WHITESPACE
        ):
            raise Malformed(f"illegal character or whitespace in the trailer {name!r}")
        if name in _FORBIDDEN or name == b"te":
            raise Malformed(f"connection-specific trailer field {name!r}")


def _special(req: Request, name: bytes, value: bytes) -> None:
    if name == b"user-agent":  # kept for the traffic statistics (observe/tap.py)
        req.user_agent = value
    elif name == b"referer":
        req.referer = value
    elif name == b"content-length":
        if not value.isdigit() or (
            req.content_length is not None and int(value) != req.content_length
        ):
            raise StreamReject(400, "The Content-Length header is malformed.")
        req.content_length = int(value)
    elif name == b"expect":
        if value.lower() != b"100-continue":
            raise StreamReject(417, "Only the 100-continue expectation is supported.")
        req.expect_continue = True
    elif name == b"x-forwarded-for":
        req.xff = value if req.xff is None else req.xff + b", " + value
    elif name == b"x-forwarded-proto":
        req.xfp = value
    elif name == b"x-forwarded-host":
        req.xfh = value
    elif name == b"x-request-id":
        req.xrid = value


def _parse_path(req: Request, target: bytes) -> None:
    if target[:1] != b"/":
        if target == b"*" and req.method == "OPTIONS":
            req.path = req.raw_path = "*"
            return
        raise StreamReject(400, "The :path pseudo-header is malformed.")
    refused = set_origin_target(req, target)
    if refused is not None:
        raise StreamReject(400, refused)


def response_headers(head: bytes) -> list[tuple[bytes, bytes]]:
    """An HTTP/1.1 response head (status line, fields, optional blank line) as an
    HTTP/2 header list: `:status` first, names lowercased, connection fields dropped.

    This is the outbound check of RFC 9113 §8.2 for what the gateway sends. Raises
    ValueError for a head HTTP/2 cannot carry: a NUL, or a CR
    or LF that is not a line end (an upstream's obs-fold, say)."""
    # (find, not `in`: `bytes in bytes` first tries the needle as an integer, and the
    # TypeError it formats costs more than the scan)
    if head.find(b"\0") >= 0 or head.count(b"\n") != head.count(b"\r\n"):
        raise ValueError("a response header field contains a forbidden character")
    lines = head.split(b"\r\n")
    status = lines[0][9:12]
    if len(status) != 3 or not status.isdigit():
        raise ValueError("the response status is malformed")
    out: list[tuple[bytes, bytes]] = [(b":status", status)]
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(b":")
        lname = name.strip().lower()
        # an empty name (a line starting with ":" included) has no HTTP/2 form
        if not lname or lname in _CONNECTION_SPECIFIC:
            continue
        out.append((lname, value.strip()))
    return out
