"""What the authentication policies share: reading credentials from the Authorization field
and handing the authenticated consumer on (access log, upstream header)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from bastion.policies.base import Denied

if TYPE_CHECKING:
    from bastion.http.request import Request

__all__ = ["AuthResult", "Identity", "authorization", "invalid_request"]

AuthResult = Denied | None | tuple[Any, ...]

_MAX_LINES = 4096  # consumer header lines kept

# RFC 6750 section 2.1: b64token
_B64TOKEN = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")


def authorization(req: Request) -> list[bytes]:
    return [value for lname, _, value in req.headers if lname == b"authorization"]


class Identity:
    """Sets the consumer on the request and in the upstream header; removes a client-sent
    consumer header on every request of the route, authenticated or not (``drops``, which
    the route's chain applies to every request, and again here)."""

    def __init__(self, consumer_header: str | None) -> None:
        self.header = consumer_header.encode("latin-1") if consumer_header else None
        self.lheader = self.header.lower() if self.header else None
        self.drops = frozenset([self.lheader]) if self.lheader else frozenset()
        # consumer -> its upstream header line (b"" for a name that cannot be sent): the
        # same few consumers call again and again
        self.lines: dict[str, bytes] = {}

    def accept(self, req: Request, consumer: str) -> None:
        req.consumer = consumer
        if self.lheader is not None:
            req.drop_upstream_header(self.lheader)  # (the chain has usually dropped it)
            req.upstream_extra += self.line(consumer)

    def line(self, consumer: str) -> bytes:
        """The consumer's upstream header line (b"" with no header, or for a name that
        cannot be sent), built once per consumer."""
        line = self.lines.get(consumer)
        if line is None:
            header = self.header
            if header is None or not consumer or any(c in consumer for c in "\r\n\x00"):
                line = b""
            else:
                line = header + b": " + consumer.encode("utf-8") + b"\r\n"
            if len(self.lines) >= _MAX_LINES:
                self.lines.clear()
            self.lines[consumer] = line
        return line

    def bearer(self, req: Request, challenge: bytes, realm: bytes) -> str | Denied:
        """The bearer token of the request, or the RFC 6750 refusal: 401 with a bare
        challenge when there is none, 400 invalid_request when the field is malformed."""
        fields = authorization(req)
        if not fields:
            return Denied(401, "This route needs a bearer token.", challenge, "missing")
        if len(fields) > 1:
            return invalid_request(realm, "Several Authorization fields were sent.")
        scheme, _, rest = fields[0].strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return Denied(401, "This route needs a bearer token.", challenge, "missing")
        token = rest.strip()
        if not _B64TOKEN.fullmatch(token):
            return invalid_request(realm, "The Authorization field is malformed.")
        return token.decode("ascii")


def invalid_request(realm: bytes, detail: str) -> Denied:
    """400 for credentials sent in a way the gateway will not guess at (two fields, a
    malformed one), with the RFC 6750 error in the challenge."""
    line = (
        b"WWW-Authenticate: "
        + realm
        + b', error="invalid_request", error_description="'
        + detail.encode()
        + b'"\r\n'
    )
    return Denied(400, detail, line)
