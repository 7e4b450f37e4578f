"""W3C Trace Context (https://www.w3.org/TR/trace-context/): the `traceparent` and
`tracestate` fields sent upstream.

bastion takes part in a trace without recording spans of its own (no span export):
- a client's valid `traceparent` is forwarded as sent (version 00) or restated as
  version 00 (a later version's first fields), with its `tracestate` fields joined into
  one. The parent id is kept: a new one would name a span that nobody records, and the
  backend's span would hang off a parent missing from the trace;
- with no `traceparent`, or an invalid one (bad version or length, upper-case or non-hex
  digits, an all-zero id, two fields), bastion starts a trace: the trace id is the request
  id when bastion made it (32 hex digits: `http.ids`), so a log line,
  an `X-Request-ID` and a trace name the same request; the parent id is the request id's
  counter half; the sampled flag is set, so that a backend that samples by its parent
  records the request. A client's `tracestate` is dropped with its invalid `traceparent`
  (the specification: no `tracestate` without a valid `traceparent`).

`build_request_head` (`headers.py`) writes the common case inline (no field from the
client, the gateway's own request id); this module handles the rest.
"""

from __future__ import annotations

import os
import re
from typing import Final

from bastion.http.request import Request

__all__ = ["TRACE_FIELDS", "trace_lines", "valid_traceparent"]

TRACE_FIELDS: Final = frozenset((b"traceparent", b"tracestate"))

# version-traceid-parentid-flags, lower-case hex only; a later version may add fields
# after a "-" (parsed as version 00, as the specification tells a version-00 reader)
_TRACEPARENT: Final = re.compile(
    rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?"
)
_ZERO_TRACE: Final = b"0" * 32
_ZERO_PARENT: Final = b"0" * 16
# the specification's bound on list members: a longer tracestate is dropped whole
_MAX_TRACESTATE_MEMBERS: Final = 32


def valid_traceparent(value: bytes) -> bytes | None:
    """The version-00 `traceparent` to forward for a client's ``value``, else None."""
    match = _TRACEPARENT.fullmatch(value.strip(b" \t"))
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == b"ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_PARENT:
        return None
    if version == b"00":
        if rest is not None:
            return None  # version 00 has exactly four fields
        return match.group(0)
    # a later version: its known fields, restated as version 00 (only the sampled flag
    # has a meaning there)
    return b"00-" + trace_id + b"-" + parent_id + (b"-01" if int(flags, 16) & 1 else b"-00")


def trace_lines(req: Request, fields: list[tuple[bytes, bytes]] | None, rid: bytes) -> bytes:
    """The trace context lines sent upstream, given the client's trace fields (lower-case
    name, value) and the request id as sent (``rid``). Sets ``req.trace_id``."""
    parents = [value for name, value in fields or () if name == b"traceparent"]
    traceparent = valid_traceparent(parents[0]) if len(parents) == 1 else None
    if traceparent is None:
        # a new trace: the request id when it is one of ours, else a random id
        if _is_trace_id(rid):
            trace_id, parent_id = rid, rid[16:]
        else:
            fresh = os.urandom(16).hex().encode()
            trace_id, parent_id = fresh, fresh[16:]
        req.trace_id = trace_id.decode()
        return b"traceparent: 00-" + trace_id + b"-" + parent_id + b"-01\r\n"
    req.trace_id = traceparent[3:35].decode()
    line = b"traceparent: " + traceparent + b"\r\n"
    states = [value.strip(b" \t") for name, value in fields or () if name == b"tracestate"]
    state = b",".join(s for s in states if s)
    if state and state.count(b",") < _MAX_TRACESTATE_MEMBERS:
        line += b"tracestate: " + state + b"\r\n"
    return line


def _is_trace_id(rid: bytes) -> bool:
    return len(rid) == 32 and rid != _ZERO_TRACE and all(c in b"0123456789abcdef" for c in rid)
