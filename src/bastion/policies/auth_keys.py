"""API keys: a key from `bastion keys create` in X-API-Key, Authorization: Bearer or a query
parameter; the key's consumer becomes the request's consumer.

401 for a missing, unknown or revoked key, 403 for a valid key whose consumer is not allowed on
the route. A key in the query string is always cut out of the request target, so that it
reaches neither the upstream nor the access log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import unquote_plus

from bastion.policies.auth_any import MAYBE, SURELY, offered_scheme
from bastion.policies.authcommon import Identity, authorization
from bastion.policies.base import Denied

if TYPE_CHECKING:
    from bastion.config.policy_auth import ApiKeysAuth
    from bastion.http1.request import Request
    from bastion.policies.keystore import KeyStore

__all__ = ["ApiKeyPolicy", "strip_query_param"]

_MAX_KEY = 512
_MAX_SEEN = 4096  # key header values remembered between two looks at the key store


def strip_query_param(query: str, name: str) -> tuple[str, str | None]:
    """``query`` without every ``name=value`` pair, and the first such value (decoded)."""
    found: str | None = None
    kept: list[str] = []
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if unquote_plus(key) == name:
            if found is None:
                found = unquote_plus(value)
            continue
        kept.append(pair)
    return "&".join(kept), found


def _cut_query_param(req: Request, name: str) -> str | None:
    """Cut the query parameter ``name`` out of the request (its target and query), so that
    it reaches neither the upstream nor the access log; its first value."""
    rest, found = strip_query_param(req.query, name)
    if found is not None:
        req.query = rest
        path = req.target.split(b"?", 1)[0]
        req.target = path + (b"?" + rest.encode("latin-1") if rest else b"")
    return found


class ApiKeyPolicy:
    is_async = False

    def __init__(self, conf: ApiKeysAuth, store: KeyStore, identity: Identity) -> None:
        self.store = store
        self.identity = identity
        self.header = conf.header.lower().encode("latin-1") if conf.header else None
        self.bearer = conf.bearer
        self.query = conf.query
        self.allowed = frozenset(conf.consumers) if conf.consumers is not None else None
        self.hide = conf.hide_credentials
        # dropped from every request of the route: a client's consumer header, and the key
        # header itself when credentials are hidden (a key from a bearer field is dropped
        # per request)
        hidden = [self.header] if self.hide and self.header is not None else []
        self.upstream_drops = identity.drops | frozenset(hidden)
        # accepted key header values -> (consumer, its upstream header line), valid until
        # `seen_until` (loop time): a client sends the same key on every request, and this
        # answers it without a call to the store (see `_remember`)
        self.seen: dict[bytes, tuple[str, bytes]] = {}
        self.seen_until = float("-inf")
        where = []
        if conf.header:
            where.append(f"the {conf.header} header")
        if conf.bearer:
            where.append("an Authorization: Bearer field")
        if conf.query:
            where.append(f"the {conf.query} query parameter")
        self.needs = f"an API key in {' or '.join(where)}"
        self.missing = f"This route needs {self.needs}."
        # 401 must carry a challenge (RFC 9110): the standard Bearer one when bearer keys are
        # accepted, else an ApiKey challenge naming where the key goes
        if conf.bearer:
            self.realm = b'Bearer realm="api"'
        elif conf.header:
            self.realm = f'ApiKey realm="api", header="{conf.header}"'.encode()
        else:
            self.realm = f'ApiKey realm="api", query="{conf.query}"'.encode()
        self.challenge = b"WWW-Authenticate: " + self.realm + b"\r\n"
        self.invalid = (
            b"WWW-Authenticate: " + self.realm + b', error="invalid_token"\r\n'
            if conf.bearer
            else self.challenge
        )

    def _find(self, req: Request) -> tuple[str | None, bytes | None, Denied | None]:
        """(key, the request header it came from, refusal of a malformed field).

        A key in the query is cut out first, whatever else the request carries: a key
        header wins, but the query's key must not be forwarded with it."""
        in_query = (
            _cut_query_param(req, self.query) if self.query is not None and req.query else None
        )
        if self.header is not None:
            for lname, _, value in req.headers:
                if lname == self.header:
                    return value.strip().decode("latin-1"), self.header, None
        if self.bearer and authorization(req):
            token = self.identity.bearer(req, self.challenge, self.realm)
            if isinstance(token, str):
                return token, b"authorization", None
            if token.status == 400:
                return None, None, token
        return in_query, None, None

    def offered(self, req: Request) -> int:
        """How surely the request carries an API key (several methods on a route)."""
        if self.header is not None and any(f[0] == self.header for f in req.headers):
            return SURELY
        query = self.query
        if query is not None and req.query and strip_query_param(req.query, query)[1] is not None:
            return SURELY
        if self.bearer and offered_scheme(req, b"bearer"):
            return MAYBE  # a bearer token may be a JWT as well
        return 0

    def on_request(self, req: Request) -> Denied | None:
        header = self.header
        if header is not None and not (self.query is not None and req.query):
            # the common case first: a valid key in the key header
            for lname, _, value in req.headers:
                if lname == header:
                    if req.start < self.seen_until:
                        seen = self.seen.get(value)
                        if seen is not None:
                            req.consumer = seen[0]
                            req.upstream_extra += seen[1]
                            return None
                    record = self.store.find(value)
                    if record is None or (
                        self.allowed is not None and record.consumer not in self.allowed
                    ):
                        break  # the full path below gives the right refusal
                    self.identity.accept(req, record.consumer)
                    self._remember(req, value, record.consumer)
                    return None
        return self._check(req)

    def _remember(self, req: Request, value: bytes, consumer: str) -> None:
        """Remember an accepted key header for as long as the store's answers stay
        current (until it next looks at its file), so that a revoked key is refused as
        soon as the store knows."""
        if req.start >= self.seen_until:
            self.seen = {}
            self.seen_until = req.start + self.store.fresh_for()
        if len(self.seen) < _MAX_SEEN:
            self.seen[value] = (consumer, self.identity.line(consumer))

    def _check(self, req: Request) -> Denied | None:
        key, source, malformed = self._find(req)
        if malformed is not None:
            return malformed
        if not key:
            return Denied(401, self.missing, self.challenge)
        record = self.store.lookup(key) if len(key) <= _MAX_KEY else None
        if record is None:
            return Denied(401, "The API key is unknown or revoked.", self.invalid)
        if self.allowed is not None and record.consumer not in self.allowed:
            req.consumer = record.consumer  # the access log shows who was refused
            return Denied(403, "This API key is not allowed on this route.")
        if self.hide and source is not None:
            req.drop_upstream_header(source)
        self.identity.accept(req, record.consumer)
        return None
