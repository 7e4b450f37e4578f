"""Forward auth: ask an external service whether a request may pass, as nginx ``auth_request``
and Traefik ForwardAuth do.

The service gets a GET of its URL with the chosen client headers and the original request in
X-Forwarded-Method/-Proto/-Host/-Uri/-For. Its answer decides:

- 2xx: the request goes on, with ``copy_headers`` of the answer added to it upstream;
- 3xx: sent to the client as it is (a login redirect, e.g. oauth2-proxy);
- 401, 403, 429: the same status to the client as problem+json, with the service's
  WWW-Authenticate / Retry-After;
- anything else, no answer or a timeout: 502 / 504 (the service is broken, not the client).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from bastion.policies.auth_any import MAYBE
from bastion.policies.authclient import AuthClient, AuthClientError, loggable_url
from bastion.policies.base import Answer, Denied, real_client_ip

if TYPE_CHECKING:
    from bastion.config.policy_auth import ForwardAuth
    from bastion.http.request import Request
    from bastion.observe.events import EventCounters
    from bastion.policies.authcommon import Identity

__all__ = ["ForwardAuthPolicy"]

log = logging.getLogger("bastion.auth")

_PASSED_ON = {
    401: (b"www-authenticate",),
    403: (b"www-authenticate",),
    429: (b"retry-after",),
}
_REDIRECT_FIELDS = (b"location", b"set-cookie", b"cache-control")


def _line(name: bytes, value: bytes) -> bytes:
    return name + b": " + value + b"\r\n"


class ForwardAuthPolicy:
    kind = "auth"  # the config key it comes from: what metrics and logs call it
    auth_scheme = "forward_auth"  # the method, as the auth failure metric labels it
    # counted for the metrics on refusal (set by the builder; `policies/chain.py`)
    events: EventCounters | None = None
    is_async = True
    # with other methods on the route (satisfy: any): tried after those whose credentials
    # the request carries, as the service decides from anything (a session cookie)
    challenge = b""
    needs = ""

    def offered(self, req: Request) -> int:
        return MAYBE

    def __init__(
        self,
        conf: ForwardAuth,
        identity: Identity,
        scheme: str = "http",
        trusted: Callable[[str], bool] | None = None,
    ) -> None:
        self.client = AuthClient(conf.url, max_body=64 * 1024, ca=conf.ca, setting="auth.forward")
        self.url = loggable_url(conf.url)  # for log lines
        self.timeout = conf.timeout
        self.identity = identity
        self.upstream_drops = identity.drops  # a client-sent consumer header
        self.send = frozenset(h.lower().encode("latin-1") for h in conf.request_headers)
        self.copy = [(h.lower().encode("latin-1"), h.encode("latin-1")) for h in conf.copy_headers]
        self.consumer_from = conf.consumer_from.lower().encode() if conf.consumer_from else None
        # the scheme the route is served on (its site has TLS or not), never a client's claim
        self.scheme = scheme.encode()
        self.trusted = trusted

    def _headers(self, req: Request) -> list[tuple[str, bytes]]:
        headers = [
            (name.decode("latin-1"), value)
            for lname, name, value in req.headers
            if lname in self.send
        ]
        path = req.target.split(b"?", 1)[0] if req.target else req.raw_path.encode("latin-1")
        uri = path + (b"?" + req.query.encode("latin-1") if req.query else b"")
        headers += [
            ("X-Forwarded-Method", req.method.encode("latin-1")),
            ("X-Forwarded-Proto", self.scheme),
            ("X-Forwarded-Host", req.host_header or req.host.encode("latin-1")),
            ("X-Forwarded-Uri", uri),
            # the client's address after trusted_proxies, as the service's own logs want it
            ("X-Forwarded-For", real_client_ip(req, self.trusted).encode("latin-1")),
        ]
        return headers

    async def on_request(self, req: Request) -> Denied | Answer | None:
        try:
            answer = await self.client.get(self._headers(req), self.timeout)
        except TimeoutError:
            log.error("forward auth %s did not answer within %ss", self.url, self.timeout)
            return Denied(504, "The authentication service did not answer in time.")
        except AuthClientError as exc:
            log.error("forward auth %s failed: %s", self.url, exc)
            return Denied(502, "The authentication service cannot be reached.")
        status = answer.status
        if 200 <= status < 300:
            for lname, name in self.copy:
                req.drop_upstream_header(lname)
                for field, value in answer.headers:
                    if field == lname:
                        req.add_upstream_header(name, value)
            consumer = ""
            if self.consumer_from is not None:
                raw = answer.header(self.consumer_from)
                consumer = raw.decode("utf-8", "replace") if raw else ""
            self.identity.accept(req, consumer)
            return None
        if 300 <= status < 400:
            lines = b"".join(
                _line(name, value) for name, value in answer.headers if name in _REDIRECT_FIELDS
            )
            return Answer(status, lines)
        passed = _PASSED_ON.get(status)
        if passed is not None:
            lines = b"".join(_line(n, v) for n, v in answer.headers if n in passed)
            detail = (
                "The authentication service refused the request."
                if status != 429
                else "The authentication service asks to slow down."
            )
            return Denied(status, detail, lines)
        log.error("forward auth %s answered status %d", self.url, status)
        return Denied(502, "The authentication service gave an unexpected answer.")
