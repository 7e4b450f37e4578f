"""Several authentication methods on one route (``satisfy: any``): a request passes with any
one of them, like nginx's ``satisfy any``.

Each method first says whether the request offers its kind of credential, and how surely
(`offered`): an X-API-Key field is surely an API key, a bearer token with three dot-separated
parts surely a JWT, while a bearer token of another shape may be either. The methods offered
are tried, surest first (then in the configured order), until one accepts. When none
accepts, the answer comes from the surest methods, and is the one that tells the client
most: a 403 (the client proved who it is but may not pass), else a 5xx (a method could not
decide: its JWKS or auth service is down), else the first refusal. So a wrong X-API-Key gets
the API key's 401 even when a forward-auth service would answer with a login redirect. A
request offering nothing gets one 401 with every method's challenge.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from bastion.policies.authcommon import authorization
from bastion.policies.base import Answer, Denied

if TYPE_CHECKING:
    from collections.abc import Sequence

    from bastion.http.request import Request
    from bastion.observe.events import EventCounters

__all__ = ["MAYBE", "SURELY", "AnyAuthPolicy", "any_auth", "bearer_token", "offered_scheme"]

SURELY = 2  # the credential is of this method's kind
MAYBE = 1  # it may be (a bearer token that API keys and JWT both accept)


class AuthMethod(Protocol):
    is_async: bool
    upstream_drops: frozenset[bytes]
    auth_scheme: str  # its name in the auth failure metric: api_key, jwt, basic, forward_auth
    challenge: bytes  # the WWW-Authenticate line of a 401 for missing credentials (or b"")
    needs: str  # what the method wants, for the 401's detail ("an API key in ...")

    def offered(self, req: Request) -> int: ...

    def on_request(self, req: Request) -> Any: ...


def offered_scheme(req: Request, scheme: bytes) -> int:
    """How surely the Authorization field holds credentials of ``scheme`` (lowercase): a
    field of that scheme surely, several fields maybe (the method refuses them as
    malformed), none or another scheme not at all."""
    fields = authorization(req)
    if not fields:
        return 0
    if len(fields) > 1:
        return MAYBE
    return SURELY if fields[0].strip().partition(b" ")[0].lower() == scheme else 0


def bearer_token(req: Request) -> bytes | None:
    """The credentials of a single Authorization: Bearer field, else None."""
    fields = authorization(req)
    if len(fields) != 1:
        return None
    scheme, _, rest = fields[0].strip().partition(b" ")
    return rest.strip() if scheme.lower() == b"bearer" else None


def _pick(refusals: list[tuple[int, Denied | Answer]]) -> Denied | Answer:
    """The refusal sent when no method accepted, from the surest methods' ones."""
    top = refusals[0][0]
    surest = [outcome for sure, outcome in refusals if sure == top]
    for outcome in surest:
        if outcome.status == 403:
            return outcome
    for outcome in surest:
        if outcome.status >= 500:
            return outcome
    return surest[0]


class AnyAuthPolicy:
    """All methods are synchronous: tried inline."""

    kind = "auth"  # the config key it comes from: what metrics and logs call it
    # counted for the metrics on refusal (set by the builder; `policies/chain.py`)
    events: EventCounters | None = None

    is_async = False

    def __init__(self, methods: Sequence[AuthMethod]) -> None:
        self.methods = tuple(methods)
        self.upstream_drops = frozenset().union(*(m.upstream_drops for m in methods))
        self.missing = Denied(
            401,
            "This route needs " + " or ".join(m.needs for m in methods if m.needs) + ".",
            b"".join(m.challenge for m in methods),
            "missing",
        )
        # nothing offered: the metric names every method the route accepts
        self.auth_scheme = self.missing.scheme = "+".join(m.auth_scheme for m in methods)

    def candidates(self, req: Request) -> list[tuple[int, AuthMethod]]:
        """(how surely, method) of the methods offered, surest first, else in order."""
        ranked = [(m.offered(req), i) for i, m in enumerate(self.methods)]
        ranked.sort(key=lambda r: -r[0])
        return [(sure, self.methods[i]) for sure, i in ranked if sure]

    def on_request(self, req: Request) -> Denied | Answer | None:
        candidates = self.candidates(req)
        if not candidates:
            return self.missing
        refusals = []
        for sure, method in candidates:
            outcome = method.on_request(req)
            if outcome is None:
                return None
            if isinstance(outcome, Denied):
                outcome.scheme = method.auth_scheme  # which method refused, for the metrics
            refusals.append((sure, outcome))
        return _pick(refusals)


class AsyncAnyAuthPolicy(AnyAuthPolicy):
    """At least one method waits (JWKS, Basic's hash check, forward auth)."""

    is_async = True

    async def on_request(self, req: Request) -> Denied | Answer | None:  # type: ignore[override]
        # AnyAuthPolicy.on_request, awaiting the methods that wait (kept apart so that a
        # route whose methods are all synchronous runs inline, without a task)
        candidates = self.candidates(req)
        if not candidates:
            return self.missing
        refusals = []
        for sure, method in candidates:
            outcome = method.on_request(req)
            if method.is_async:
                outcome = await outcome
            if outcome is None:
                return None
            if isinstance(outcome, Denied):
                outcome.scheme = method.auth_scheme  # which method refused, for the metrics
            refusals.append((sure, outcome))  # (an Answer: a forward-auth login redirect)
        return _pick(refusals)


def any_auth(methods: Sequence[AuthMethod]) -> AnyAuthPolicy:
    if any(m.is_async for m in methods):
        return AsyncAnyAuthPolicy(methods)
    return AnyAuthPolicy(methods)
