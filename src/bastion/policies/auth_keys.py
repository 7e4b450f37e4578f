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
from bastion.policies.authcommon import Identity, authorization, invalid_request
from bastion.policies.base import Denied

if TYPE_CHECKING:
    from bastion.config.policy_auth import ApiKeysAuth
    from bastion.http.request import Request
    from bastion.observe.events import EventCounters
    from bastion.state.keys import KeyStore

__all__ = ["ApiKeyPolicy", "split_query_param", "strip_query_param"]

_MAX_KEY = 512
_MAX_SEEN = 4096  # key header values remembered between two looks at the key store


def strip_query_param(query: str, name: str) -> tuple[str, str | None]:
    """``query`` without every ``name=value`` pair, and the first such value (decoded)."""
    rest, found = split_query_param(query, name)
    return rest, found[0] if found else None


def split_query_param(query: str, name: str) -> tuple[str, list[str]]:
    """``query`` without every ``name=value`` pair, and their values (decoded)."""
    found: list[str] = []
    kept: list[str] = []
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if unquote_plus(key) == name:
            found.append(unquote_plus(value))
            continue
        kept.append(pair)
    return "&".join(kept), found


def _cut_query_param(req: Request, name: str) -> list[str]:
    """Cut the query parameter ``name`` out of the request (its target and query), so that
    it reaches neither the upstream nor the access log; its values."""
    rest, found = split_query_param(req.query, name)
    if found:
        req.query = rest
        path = req.target.split(b"?", 1)[0]
        req.target = path + (b"?" + rest.encode("latin-1") if rest else b"")
    return found


class ApiKeyPolicy:
    kind = "auth"  # the config key it comes from: what metrics and logs call it
    auth_scheme = "api_key"  # the method, as the auth failure metric labels it
    # counted for the metrics on refusal (set by the builder; `policies/chain.py`)
    events: EventCounters | None = None
    is_async = False

    def __init__(self, conf: ApiKeysAuth, store: KeyStore, identity: Identity) -> None:
        self.store = store
        self.identity = identity
        self.header = conf.header.lower().encode("latin-1") if conf.header else None
        self.header_name = conf.header or ""
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
        """(key, the request header it came from, refusal of a malformed or ambiguous key).

        A key in the query is cut out first, whatever else the request carries. A key
        sent twice (two key fields, two query parameters, or a header and a query
        parameter that differ) is refused: which one the gateway checks must never
        differ from which one the backend reads."""
        in_query: str | None = None
        if self.query is not None and req.query:
            values = _cut_query_param(req, self.query)
            if len(values) > 1:
                return None, None, self._ambiguous(f"the {self.query} query parameter twice")
            in_query = values[0] if values else None
        key: str | None = None
        source: bytes | None = None
        if self.header is not None:
            fields = [value for lname, _, value in req.headers if lname == self.header]
            if len(fields) > 1:
                return None, None, self._ambiguous(f"more than one {self.header_name} field")
            if fields:
                key, source = fields[0].strip().decode("latin-1"), self.header
        if self.bearer and authorization(req):
            # with bearer tokens on, `Authorization: Bearer` is a key field too: one
            # that differs from the key header is a second key, not the backend's own
            token = self.identity.bearer(req, self.challenge, self.realm)
            if isinstance(token, str):
                if key is None:
                    key, source = token, b"authorization"
                elif token != key:
                    return None, None, self._ambiguous("two different keys (two fields)")
            elif token.status == 400:
                return None, None, token
        if key is None:
            return in_query, None, None
        if in_query and in_query != key:  # (an empty parameter carries no key)
            return None, None, self._ambiguous("two different keys (a field and the query)")
        return key, source, None

    def _ambiguous(self, what: str) -> Denied:
        return invalid_request(self.realm, f"The request carries {what}.")

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
            # the common case first: a valid key in the one key header
            found: bytes | None = None
            for lname, _, value in req.headers:
                if lname == header:
                    if found is not None:
                        return self._check(req)  # a second key field: refused there
                    found = value
                elif lname == b"authorization" and self.bearer:
                    return self._check(req)  # a bearer token too: compared there
            if found is not None:
                if req.start < self.seen_until:
                    seen = self.seen.get(found)
                    if seen is not None:
                        req.consumer = seen[0]
                        req.upstream_extra += seen[1]
                        return None
                record = self.store.find(found)
                if record is not None and (self.allowed is None or record.consumer in self.allowed):
                    self.identity.accept(req, record.consumer)
                    self._remember(req, found, record.consumer)
                    return None
                # else the full path below gives the right refusal
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
            return Denied(401, self.missing, self.challenge, "missing")
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
