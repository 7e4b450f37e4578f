"""The head sent to the client, rewritten from the upstream's: no socket, no state.

Each upstream field is looked at once. Hop-by-hop fields and those the Connection field
names are dropped (RFC 9110 §7.6.1), framing fields are read to choose how the body is
delimited towards the client (the client's protocol writes its own framing), and the
route's header rules that only remove fields (`policies/fields.py`) are applied in the
same pass. A `101 Switching Protocols` is relayed as sent, Connection and Upgrade
included: the tunnel that follows needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from bastion.http.request import BODY_CHUNKED, BODY_CLOSE, BODY_LENGTH, BODY_NONE
from bastion.http.status import STATUS_LINES, status_line
from bastion.proxy.headers import RESPONSE_DROPPED

if TYPE_CHECKING:
    from bastion.policies.fields import FieldEdit

__all__ = ["PLAIN_CONNECTION", "RESPONSE_KINDS", "edit_kinds", "framing_of", "rewrite_head"]

# What to do with a response field, by name: a dict probe on the name as sent (most
# backends use one spelling) before falling back to its lowercase form.
# (one Final each: compiled, a read is a C constant, not a lookup in the module's dict)
KEEP: Final = 0
LENGTH: Final = 1
DATE: Final = 2
CHUNKED: Final = 3
CONNECTION: Final = 4
UPGRADE: Final = 5
DROP: Final = 6
# Connection values that name no other header: nothing to strip besides Connection
PLAIN_CONNECTION: Final = frozenset((b"keep-alive", b"Keep-Alive", b"close", b"Close"))
RESPONSE_KINDS: Final[dict[bytes, int]] = {}
for _name in RESPONSE_DROPPED:
    RESPONSE_KINDS[_name] = DROP
RESPONSE_KINDS[b"transfer-encoding"] = CHUNKED
RESPONSE_KINDS[b"connection"] = CONNECTION
# Connection options that never remove a field from the relayed head
_NOT_HOP_BY_HOP: Final = frozenset((b"close", b"keep-alive", b"", b"content-length"))
RESPONSE_KINDS[b"upgrade"] = UPGRADE
RESPONSE_KINDS[b"content-length"] = LENGTH
RESPONSE_KINDS[b"date"] = DATE
for _name, _kind in list(RESPONSE_KINDS.items()):
    RESPONSE_KINDS[_name.title()] = _kind  # "Content-Length", "Transfer-Encoding", …
for _name in (
    b"Server",
    b"Content-Type",
    b"Cache-Control",
    b"ETag",
    b"Last-Modified",
    b"Vary",
    b"Set-Cookie",
    b"Location",
    b"Expires",
    b"Accept-Ranges",
):
    RESPONSE_KINDS[_name] = KEEP


def edit_kinds(edit: FieldEdit) -> dict[bytes, int]:
    """The field table of a route whose header rules remove fields: removed names are
    dropped (framing fields cannot be named in the rules). Made once per route, kept
    in `edit.kinds`."""
    kinds = {
        name: kind
        for name, kind in RESPONSE_KINDS.items()
        if kind != KEEP or not edit.removes(name.lower())  # left to the lowercase probe
    }
    for lname in edit.drop:
        if RESPONSE_KINDS.get(lname, KEEP) in (KEEP, DATE):
            kinds[lname] = kinds[lname.title()] = DROP
    edit.kinds = kinds
    return kinds


def rewrite_head(
    status: int,
    headers: list[tuple[bytes, bytes]],
    kinds: dict[bytes, int],
    prefixes: tuple[bytes, ...],
    head_request: bool,
) -> tuple[list[bytes], bool, int, int]:
    """The status line and the upstream fields relayed to the client, each a
    ``name: value\\r\\n`` line, and how the answer's body is framed.

    `kinds` is `RESPONSE_KINDS`, or a route's table from `edit_kinds` (then `prefixes`
    are the name prefixes its rules remove). `head_request`: the answer is to a HEAD.

    Returns ``(lines, add_date, framing, upstream_framing)``: `add_date` when the
    upstream sent no Date and the route's rules do not remove it (the gateway adds its
    own); `framing` the BODY_* constant for the client's protocol; `upstream_framing`
    how the upstream's body ends, the same except for a 204 announcing a body
    (BODY_CLOSE: the backend may send that body where the next answer belongs, so its
    connection is not reused). Both are BODY_NONE for a 101.
    """
    lines = [STATUS_LINES.get(status) or status_line(status)]
    chunked = False
    length = b""  # the Content-Length value, if any
    has_date = False
    tokens: list[bytes] = []
    for name, value in headers:
        kind = kinds.get(name)
        if kind is None:
            lname = name.lower()
            kind = kinds.get(lname, KEEP)
            if prefixes and kind == KEEP and lname.startswith(prefixes):
                continue
        if kind == KEEP:
            lines.append(name + b": " + value + b"\r\n")
            continue
        if kind == LENGTH:
            length = value
        elif kind == DATE:
            has_date = True
        else:
            if kind == CHUNKED:
                chunked = True
            elif kind == CONNECTION and value not in PLAIN_CONNECTION:
                tokens += [t.strip().lower() for t in value.split(b",")]
            if status != 101 or kind in (CHUNKED, DROP):
                continue
        lines.append(name + b": " + value + b"\r\n")
    if tokens and status != 101:
        # Content-Length frames the body being relayed: named in Connection or not, the
        # client needs it (without it, a length-framed body would reach the client with
        # neither a length nor chunks)
        named = set(tokens) - _NOT_HOP_BY_HOP
        if named:
            lines = [lines[0]] + [p for p in lines[1:] if p.split(b":", 1)[0].lower() not in named]
    # a route that removes Date has it dropped in its table
    add_date = not has_date and kinds.get(b"date") != DROP
    # (framing_of's decision, written out: a call is dear in the pure build, where every
    # response comes this way)
    if status == 101 or head_request or status == 204 or status == 304:
        if status == 204 and not head_request and (chunked or (length and length != b"0")):
            return lines, add_date, BODY_NONE, BODY_CLOSE
        return lines, add_date, BODY_NONE, BODY_NONE
    if chunked:
        return lines, add_date, BODY_CHUNKED, BODY_CHUNKED
    if length:
        return lines, add_date, BODY_LENGTH, BODY_LENGTH
    return lines, add_date, BODY_CLOSE, BODY_CLOSE


def framing_of(status: int, head_request: bool, chunked: bool, length: bytes) -> tuple[int, int]:
    """How the answer's body is framed towards the client, and how the upstream's ends
    (see rewrite_head), from the status and the upstream's framing fields."""
    if status == 101 or head_request or status == 204 or status == 304:
        if status == 204 and not head_request and (chunked or (length and length != b"0")):
            return BODY_NONE, BODY_CLOSE
        return BODY_NONE, BODY_NONE
    if chunked:
        return BODY_CHUNKED, BODY_CHUNKED
    if length:
        return BODY_LENGTH, BODY_LENGTH
    return BODY_CLOSE, BODY_CLOSE
