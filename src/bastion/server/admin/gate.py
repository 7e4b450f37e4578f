"""Every admin request passes the gate before anything answers it, in this order:

1. the client address is in `admin.allow` (TCP listeners);
2. the Host is the admin's own (421 otherwise: DNS rebinding);
3. an Origin, when sent, is the admin's own origin (403 otherwise);
4. no credential travels in the URL (400: URLs end up in logs and browser history);
5. the login page and its stylesheet are open; everything else needs the token, as
   `Authorization: Bearer <token>` or the login session's cookie: an API request without
   it gets 401, a page request goes to /login (303);
6. a POST made with the cookie carries the session's `X-CSRF-Token`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from bastion.config.addresses import client_address
from bastion.server.admin.security import COOKIE, Session, token_matches

if TYPE_CHECKING:
    from bastion.http.downstream import Downstream
    from bastion.http.request import Request
    from bastion.server.admin.state import AdminState

log = logging.getLogger("bastion.admin")

OPEN_PATHS = frozenset({"/login", "/login.css"})
_URL_CREDENTIALS = frozenset({"token", "access_token", "auth", "authorization", "api_key"})
UNAUTHORIZED = b'WWW-Authenticate: Bearer realm="bastion admin"\r\n'


@dataclass(frozen=True)
class Caller:
    """Who a request comes from: with the token itself, or with a login session."""

    via: str  # "token" or "cookie"; "open" for the login page; "refused": answered
    session: Session | None = None


OPEN = Caller("open")
REFUSED = Caller("refused")


def header(req: Request, name: bytes) -> bytes | None:
    for lname, _, value in req.headers:
        if lname == name:
            return value
    return None


def cookie_value(req: Request, name: str) -> str | None:
    wanted = name.encode() + b"="
    for lname, _, value in req.headers:
        if lname != b"cookie":
            continue
        for part in value.split(b";"):
            part = part.strip()
            if part.startswith(wanted):
                return part[len(wanted) :].decode("latin-1")
    return None


def client_key(client: Downstream) -> str:
    """The address failed attempts are counted under."""
    return client.client_ip or "unix"


class Gate:
    def __init__(self, state: AdminState) -> None:
        self.state = state
        self._allowed: dict[str, bool] = {}

    def reset(self) -> None:
        self._allowed = {}

    def allowed(self, ip: str) -> bool:
        if self.state.unix:
            return True  # the socket file's permissions say who may connect
        known = self._allowed.get(ip)
        if known is None:
            address = client_address(ip)
            networks = self.state.settings.allow
            known = address is not None and any(address in net for net in networks)
            if len(self._allowed) < 1024:
                self._allowed[ip] = known
        return known

    def check(self, client: Downstream, req: Request) -> Caller:
        """The authenticated caller, `OPEN` for the login page, or `REFUSED` (the
        refusal is sent)."""
        state = self.state
        if not self.allowed(client.client_ip):
            client.problem(req, 403, "This address may not use the admin listener.")
            return REFUSED
        host = req.host_header.decode("latin-1")
        if not host or not state.hosts.host_ok(host):
            client.problem(req, 421, "This Host is not the admin listener's (see admin.hosts).")
            return REFUSED
        origin = header(req, b"origin")
        scheme = "https" if client.secure else "http"
        if origin is not None and not state.hosts.origin_ok(origin.decode("latin-1"), scheme, host):
            client.problem(req, 403, "Cross-origin requests are refused.")
            return REFUSED
        if req.query and any(k.lower() in _URL_CREDENTIALS for k, _ in parse_qsl(req.query)):
            client.problem(
                req,
                400,
                "Credentials are never accepted in the URL: send the token in the "
                "Authorization header (Bearer).",
            )
            return REFUSED
        if req.raw_path in OPEN_PATHS:
            return OPEN
        caller = self.authenticate(client, req)
        if caller is None:
            self.refuse(client, req)
            return REFUSED
        if caller is REFUSED:
            return REFUSED
        if req.method == "POST" and caller.session is not None:
            given = header(req, b"x-csrf-token")
            if given is None or not token_matches(given, caller.session.csrf):
                client.problem(
                    req, 403, "A POST made with the login session needs its X-CSRF-Token."
                )
                return REFUSED
        return caller

    def authenticate(self, client: Downstream, req: Request) -> Caller | None:
        """The caller, None when no valid credential was sent, `REFUSED` when refused
        (and answered: a wrong token, or too many of them)."""
        state = self.state
        authorization = header(req, b"authorization")
        if authorization is not None:
            scheme, _, given = authorization.partition(b" ")
            ip = client_key(client)
            wait = state.throttle.wait(ip)
            if wait > 0:
                self.too_many(client, req, wait)
                return REFUSED
            if scheme.lower() == b"bearer" and token_matches(given.strip(), state.token):
                state.throttle.succeeded(ip)
                return Caller("token")
            count = state.throttle.failed(ip)
            log.warning("admin: wrong token from %s (%d failures in a row)", ip, count)
            client.problem(req, 401, "The admin token is not right.", UNAUTHORIZED)
            return REFUSED
        value = cookie_value(req, COOKIE)
        if value:
            session = state.sessions.check(value)
            if session is not None:
                return Caller("cookie", session)
        return None

    def refuse(self, client: Downstream, req: Request) -> None:
        """No credential: a page asked for by a browser goes to the login page."""
        if req.method in ("GET", "HEAD") and not req.raw_path.startswith("/api/"):
            client.respond(req, 303, b"", b"", b"Location: /login\r\n")
        else:
            client.problem(
                req,
                401,
                "The admin API needs the admin token (Authorization: Bearer) or a login session.",
                UNAUTHORIZED,
            )

    @staticmethod
    def too_many(client: Downstream, req: Request, wait: float) -> None:
        client.problem(
            req,
            429,
            "Too many wrong tokens from this address: wait before trying again.",
            b"Retry-After: %d\r\n" % max(1, round(wait + 0.5)),
        )
