"""Answers from the cache: a stored entry, or a response a capture client collected."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.cache.conditional import not_modified
from bastion.http.request import BODY_LENGTH, BODY_NONE

if TYPE_CHECKING:
    from bastion.cache.capture import CaptureClient
    from bastion.http.downstream import Downstream
    from bastion.http.request import Request
    from bastion.state.cache import Entry

HIT = b"X-Cache: HIT\r\n"
MISS = b"X-Cache: MISS\r\n"
STALE = b"X-Cache: STALE\r\n"
REVALIDATED = b"X-Cache: REVALIDATED\r\n"
BYPASS = b"X-Cache: BYPASS\r\n"
# the outcome each label records on the request (Request.cache), for the observers
OUTCOME = {label: label[9:-2].decode("ascii") for label in (HIT, MISS, STALE, REVALIDATED, BYPASS)}
_NOT_MODIFIED = b"HTTP/1.1 304 Not Modified\r\n"


def serve(client: Downstream, req: Request, entry: Entry, label: bytes, now: float) -> None:
    """Answer from a stored entry: the prebuilt head plus Date, Age, X-Cache and the
    length, then the body, in one write."""
    req.cache = OUTCOME[label]
    age = b"Age: %d\r\n" % int(entry.age(now))
    date = client.date_header
    if entry.status == 200 and not_modified(req, entry):
        req.status = 304
        head = b"".join((_NOT_MODIFIED, entry.meta, date, age, label))
        framing = BODY_NONE
        body = b""
    else:
        req.status = entry.status
        body = entry.body
        if entry.status == 204 or entry.status == 304:
            head = b"".join((entry.head, date, age, label))
            framing = BODY_NONE
            body = b""
        else:
            length = b"Content-Length: %d\r\n" % len(body)
            head = b"".join((entry.head, date, age, label, length))
            framing = BODY_LENGTH
            if req.method == "HEAD":
                framing = BODY_NONE
                body = b""
    client.cork()
    client.write_head(req, head, framing)
    if body:
        client.write_body(body)
    client.end_response()
    client.uncork()


def relay(client: Downstream, req: Request, cap: CaptureClient) -> None:
    """Pass on a response collected by a capture client (not stored)."""
    req.status = cap.status
    framing = cap.framing
    body = cap.body
    if req.method == "HEAD":
        framing = BODY_NONE
        body = b""
    client.cork()
    client.write_head(req, cap.head, framing)
    if body:
        client.write_body(body)
    client.end_response()
    client.uncork()
