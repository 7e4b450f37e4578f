"""Whose answer is it: the consumer part of a cache key on an authenticated route.

On a route with `auth`, the gateway knows who asks. An answer is stored for its
consumer alone (the primary key plus the consumer's identity) unless the response says
it is the same for everybody (`public`, `s-maxage`) or the route does (`shared: true`,
which compiles to no `ConsumerKey` at all). The identity is the consumer the auth policy
set on the request (API key's consumer, JWT claim, Basic user, forward auth's
`consumer_from`); when the policy set none (a JWT without the claim, forward auth without
`consumer_from`), a keyed digest of the credential fields the route's auth reads stands
in, so that two credentials never share an entry and no credential is ever kept as text.
A request with neither gets no entry of its own: it may only use shared ones.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.config.policy_auth import Auth
    from bastion.http.request import Request

# separates a primary key from the consumer part (the variant part, "\x1d", comes after)
CONSUMER_MARK = "\x1c"
_MAX_NAMES = 4096  # consumer names whose key part is remembered


class ConsumerKey:
    """Compiled once per route from its `auth` (and `cache.key.consumer`)."""

    __slots__ = ("always", "fields", "names", "query_param", "secret")

    def __init__(self, fields: frozenset[bytes], query_param: str | None, always: bool) -> None:
        self.fields = fields  # lowercased request fields holding credentials
        self.query_param = query_param  # the API key's query parameter, never in a key
        # `key.consumer: true`: even answers that say `public` are kept per consumer
        self.always = always
        # per process: a digest in a key cannot be matched against guessed credentials
        # by anyone who reads the keys
        self.secret = os.urandom(16)
        self.names: dict[str, str] = {}  # consumer name -> its key part

    def identity(self, req: Request) -> str | None:
        """The key part of the request's consumer; None when it has no identity."""
        consumer = req.consumer
        if consumer:
            part = self.names.get(consumer)
            if part is None:
                if consumer.isprintable():
                    part = "c:" + consumer
                else:  # control characters could fake the marks around the part
                    part = "d:" + self._digest(consumer.encode("utf-8", "replace"))
                if len(self.names) >= _MAX_NAMES:
                    self.names.clear()
                self.names[consumer] = part
            return part
        fields = self.fields
        values = [v for n, _, v in req.headers if n in fields]
        if not values:
            return None
        return "h:" + self._digest(b"\x00".join(values))

    def own_primary(self, primary: str, req: Request) -> str | None:
        """`primary` narrowed to the request's consumer; None without an identity."""
        identity = self.identity(req)
        if identity is None:
            return None
        return primary + CONSUMER_MARK + identity

    def key_query(self, query: str) -> str:
        """The query without the API key's parameter (a credential is never a key)."""
        name = self.query_param
        if name is not None and name in query:
            # (rare: the auth cuts the key out of the query before the cache sees it)
            from bastion.policies.auth_keys import strip_query_param

            return strip_query_param(query, name)[0]
        return query

    def _digest(self, data: bytes) -> str:
        return hashlib.blake2b(data, digest_size=16, key=self.secret).hexdigest()


def consumer_key(auth: Auth | None, per_consumer: bool, shared: bool) -> ConsumerKey | None:
    """The route's consumer rule: None when its answers are shared by everybody (no
    `auth`: nobody is identified; or `shared: true`)."""
    if shared or auth is None:
        return None
    fields: set[bytes] = set()
    query_param = None
    if auth.api_keys is not None:
        if auth.api_keys.header:
            fields.add(auth.api_keys.header.lower().encode("latin-1"))
        if auth.api_keys.bearer:
            fields.add(b"authorization")
        query_param = auth.api_keys.query
    if auth.jwt is not None or auth.basic is not None:
        fields.add(b"authorization")
    if auth.forward is not None:
        fields.update(h.lower().encode("latin-1") for h in auth.forward.request_headers)
    return ConsumerKey(frozenset(fields), query_param, per_consumer)
