"""Rate limits and quotas on a shared store (Redis): awaited, with a fallback per limit.

Imported only when the limit store is asynchronous (``state.redis``): a gateway without
Redis builds `RateLimitPolicy` / `OneRateLimitPolicy` and never loads this module.

While the store cannot answer (`StoreUnavailable`: its breaker is open, or the call failed
or timed out) each limit does what its ``on_store_down`` says:

- ``local``: counted in this worker with its share of the limit (``count`` and ``burst``
  divided by ``state.instances`` times workers, at least 1), all-or-nothing among the local
  ones, answered 429 with ``Retry-After`` when refused;
- ``allow``: not counted;
- ``deny``: the request is answered 503 with ``Retry-After`` (when the store is asked
  again): the client did nothing wrong, the gateway cannot check its limit. 503, not 429:
  a client that counts its own requests must not think it went over.

Answers made while the store is down carry no ``RateLimit`` fields: what a worker counts
alone is not what the limit says.

A route with a single rate limit (the common case) has a path of its own, as it has in
process (`OneRateLimitPolicy`): `OneSharedRateLimitPolicy` sends a command made once per
key and adds the ``RateLimit`` line that the script (`LUA_ONE`) wrote, with the same
answers as the general path (tests/integration/test_shared_limits_one.py compares them).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from bastion.http.request import Request
from bastion.policies.base import Denied, Later
from bastion.policies.ratelimit import KEY_CACHE, RateLimitPolicy, is_rate_limit
from bastion.state.limits import Check, LimitStore, MemoryLimitStore, Outcome, StoreUnavailable
from bastion.state.redis_client import UNKNOWN_SCRIPT

if TYPE_CHECKING:
    from bastion.config.policy_traffic import Quota, RateLimit
    from bastion.state.redis_limits import RedisLimitStore

__all__ = ["OneSharedRateLimitPolicy", "SharedRateLimitPolicy", "local_share", "shared_policy"]


def _result(task: asyncio.Future[Any]) -> Denied | None:
    """The ``then`` of `on_request` run as a task: what it returned."""
    return task.result()


class _Taking:
    """A check waiting on Redis: its ``then`` (a `Later`'s) turns the reply into the
    answer. An object, not a closure: a closure that hands itself on (the script sent
    again) would be a reference cycle per request, left to the garbage collector."""

    __slots__ = ("keys", "now", "policy", "req")

    def __init__(
        self, policy: SharedRateLimitPolicy, req: Request, keys: list[str], now: float
    ) -> None:
        self.policy = policy
        self.req = req
        self.keys = keys
        self.now = now

    def then(self, future: asyncio.Future[Any]) -> Denied | Later | None:
        policy, keys, now = self.policy, self.keys, self.now
        try:
            taken = policy.shared.taken(future, policy.checks, keys, now, policy.report)
        except StoreUnavailable as down:
            return policy.fallback(keys, now, down.retry_after)
        if isinstance(taken, tuple):
            return policy.decided(self.req, taken, now)
        return (taken, self.then)  # (the script sent whole: its reply)


def local_share(check: Check, share: int) -> Check:
    """``check`` with its count (and burst) divided among ``share`` processes."""
    count = max(1, check.count // share)
    if check.per is not None:
        return Check(count, 0.0, 0, check.per)
    burst = max(1, check.burst // share)
    # the same rate per process: count/period becomes (count/share)/period
    return Check(count, check.period, burst)


class SharedRateLimitPolicy(RateLimitPolicy):
    """`RateLimitPolicy` on an asynchronous store, with the on_store_down fallbacks."""

    def __init__(
        self,
        scope: str,
        specs: Sequence[RateLimit | Quota],
        store: RedisLimitStore,
        trusted: Callable[[str], bool] | None,
        share: int,
    ) -> None:
        # (the base's synchronous `on_request` is replaced below: it never calls take)
        super().__init__(scope, specs, cast(LimitStore, store), trusted, None)
        self.is_async = True  # awaited by the chain (`policies/chain.py`)
        self.shared = store
        self.local: MemoryLimitStore = store.local
        self.deny = any(spec.on_store_down == "deny" for spec in specs)
        # the limits counted locally while the store is down: their index, their share
        self.local_index = [i for i, spec in enumerate(specs) if spec.on_store_down == "local"]
        self.local_checks = [local_share(self.checks[i], share) for i in self.local_index]

    def begin(self, req: Request) -> Denied | Later | None:
        """The check started (the chain's fast path, `policies/chain.py`): the answer at
        once (a remembered refusal, the breaker open), or the Redis reply's future with
        what turns it into the answer. Before the first connection, and for servers
        reached through redis-py, the coroutine `on_request` runs as a task instead."""
        clock = self.now
        now = clock()
        keys = self.keys(req)
        shared = self.shared
        checks, report = self.checks, self.report
        try:
            started = shared.take_soon(checks, keys, now, report)
        except StoreUnavailable as down:
            return self.fallback(keys, now, down.retry_after)
        if started is None:
            return (asyncio.get_running_loop().create_task(self.on_request(req)), _result)
        if isinstance(started, tuple):
            return self.decided(req, started, now)
        return (started, _Taking(self, req, keys, now).then)

    async def on_request(self, req: Request) -> Denied | None:  # type: ignore[override]
        clock = self.now
        now = clock()
        keys = self.keys(req)
        try:
            taken = await self.shared.take(self.checks, keys, now, self.report)
        except StoreUnavailable as down:
            return self.fallback(keys, now, down.retry_after)
        return self.decided(req, taken, now)

    def decided(
        self, req: Request, taken: tuple[bool, list[Outcome] | None], now: float
    ) -> Denied | None:
        """The answer to what the store said (`LimitStore.take`'s result)."""
        allowed, outcomes = taken
        if outcomes is None:
            return None
        if allowed:
            req.extra_head += self.fields(outcomes, now)
            return None
        return self.denied(outcomes, now)

    def _count(self, decision: str) -> None:
        events = self.events
        if events is not None:  # the builder sets them (`build_rate_limit`)
            events.store_fallback(decision)

    def fallback(self, keys: list[str], now: float, retry_after: float) -> Denied | None:
        """The answer while the store is unavailable (see the module doc)."""
        if self.deny:
            self._count("deny")
            seconds = max(1, math.ceil(retry_after - 1e-6))
            return Denied(
                503,
                f"The limit store is unavailable: the request cannot be counted against its "
                f"limits. Try again in {seconds} s.",
                b"Retry-After: %d\r\n" % seconds,
                "store",
            )
        if not self.local_checks:
            self._count("allow")
            return None
        index = self.local_index
        allowed, outcomes = self.local.take(self.local_checks, [keys[i] for i in index], now)
        if allowed or outcomes is None:
            self._count("local")
            return None
        self._count("local_refused")
        wait = max(o.retry_after for o in outcomes if not o.allowed)
        seconds = max(1, math.ceil(wait - 1e-6))
        refused = [index[i] for i, o in enumerate(outcomes) if not o.allowed]
        kind = "quota" if any(self.limits[i].per is not None for i in refused) else "rate"
        return Denied(
            429,
            f"Too many requests: try again in {seconds} s.",
            b"Retry-After: %d\r\n" % seconds,
            kind,
        )


class _TakingOne:
    """`_Taking` of `OneSharedRateLimitPolicy`: the reply of `LUA_ONE` (one key)."""

    __slots__ = ("key", "now", "policy", "req")

    def __init__(
        self, policy: OneSharedRateLimitPolicy, req: Request, key: str, now: float
    ) -> None:
        self.policy = policy
        self.req = req
        self.key = key
        self.now = now

    def then(self, future: asyncio.Future[Any]) -> Denied | Later | None:
        policy = self.policy
        # The usual reply, read here: an admitted request's value with a breaker that has
        # nothing to hear (no failure counted, not open), so that `script_reply` would do
        # nothing but return it. Anything else (an error, a timeout, the client gone, the
        # script unknown, a refusal, a breaker to tell) goes through `script_reply`.
        try:
            reply = future.result()
        except BaseException:  # (read again by `script_reply`, which says what it is)
            reply = None
        breaker = policy.connection.breaker
        if type(reply) is bytes and not breaker.failures and not breaker.open:
            if policy.report:
                self.req.extra_head += policy.line + reply
            return None
        try:
            reply = policy.connection.script_reply(future)
            if type(reply) is bytes:
                # admitted: the reply is the RateLimit field's value, line end included
                if policy.report:
                    self.req.extra_head += policy.line + reply
                return None
            if reply is UNKNOWN_SCRIPT:  # (the script sent whole: its reply)
                return (policy.shared.one_again(policy.check, self.key, future.get_loop()),
                        self.then)  # fmt: skip
        except StoreUnavailable as down:
            return policy.fallback([self.key], self.now, down.retry_after)
        # refused: `LUA`'s reply, read (and the refusal remembered) as the general path does
        now = self.now
        taken = policy.shared.outcomes(reply, policy.checks, [self.key], now, policy.report)
        return policy.decided(self.req, taken, now)


class OneSharedRateLimitPolicy(SharedRateLimitPolicy):
    """A single rate limit (GCRA) in Redis: the common case, as `OneRateLimitPolicy` is
    in process. Per request: the key's command looked up (made once per key: store key,
    Redis key, script arguments, RESP), sent as it is, and an admitted request's
    ``RateLimit`` line made of a constant start and the script's reply (`LUA_ONE` writes
    the field's value): no list of keys, no encoding, no `Outcome`, no float read and no
    formatting. A refusal, the store down, the script unknown and the first requests
    (connecting: the coroutine `on_request`, through `LUA`) take the general path's
    steps, with the same answers."""

    def __init__(
        self,
        scope: str,
        spec: RateLimit,
        store: RedisLimitStore,
        trusted: Callable[[str], bool] | None,
        share: int,
    ) -> None:
        super().__init__(scope, [spec], store, trusted, share)
        limit = self.limit = self.limits[0]
        self.check = limit.check
        self.connection = store.connection
        # (store key, command) of a consumer, a client address (where they are what is
        # counted, as in `OneRateLimitPolicy`) or any other store key
        self.by_consumer: dict[str, tuple[str, bytes]] | None = (
            {} if limit.key == "consumer" else None
        )
        plain_ip = trusted is None and limit.key in ("consumer", "client_ip")
        self.by_ip: dict[str, tuple[str, bytes]] | None = {} if plain_ip else None
        self.by_key: dict[str, tuple[str, bytes]] = {}
        # the start of the RateLimit lines: the RateLimit-Policy line of a rate limit is
        # constant (`fields` builds it the same way)
        self._policy_line(self.now())
        self.line = b"%sRateLimit: %s" % (self.policy_line, self.state_prefixes[0] or b"")

    def begin(self, req: Request) -> Denied | Later | None:
        clock = self.now
        now = clock()
        # (subscripts in a try block: a miss happens once per consumer or address)
        try:
            if self.by_consumer is not None and req.consumer:
                key, command = self.by_consumer[req.consumer]
            elif self.by_ip is not None:
                key, command = self.by_ip[req.client_ip]
            else:
                key, command = self.by_key[self.limit.store_key(req, self.trusted)]
        except KeyError:
            key, command = self._command(req)
        shared = self.shared
        if shared.refused:  # (none remembered: no call)
            remembered = shared.remembered(self.checks, [key], now)
            if remembered is not None:
                return self.decided(req, remembered, now)
        try:
            future = self.connection.send_soon(command)
        except StoreUnavailable as down:
            return self.fallback([key], now, down.retry_after)
        if future is None:
            return (asyncio.get_running_loop().create_task(self.on_request(req)), _result)
        return (future, _TakingOne(self, req, key, now).then)

    def _command(self, req: Request) -> tuple[str, bytes]:
        """The store key and command of ``req``, made and remembered."""
        key = self.limit.store_key(req, self.trusted)
        made = self.by_key.get(key)
        if made is None:
            made = _bounded(self.by_key, key, (key, self.shared.one_command(self.check, key)))
        if self.by_consumer is not None and req.consumer:
            _bounded(self.by_consumer, req.consumer, made)
        elif self.by_ip is not None:
            _bounded(self.by_ip, req.client_ip, made)
        return made


def _bounded(
    table: dict[str, tuple[str, bytes]], name: str, made: tuple[str, bytes]
) -> tuple[str, bytes]:
    """``made`` remembered in ``table``, which starts again when full (a flood of new
    clients costs a command each, no memory)."""
    if len(table) >= KEY_CACHE:
        table.clear()
    table[name] = made
    return made


def shared_policy(
    scope: str,
    specs: Sequence[RateLimit | Quota],
    store: RedisLimitStore,
    trusted: Callable[[str], bool] | None,
    share: int,
) -> SharedRateLimitPolicy:
    """The policy of ``specs`` in Redis: the single-limit fast path when it applies."""
    if len(specs) == 1 and is_rate_limit(specs[0]):
        return OneSharedRateLimitPolicy(scope, specs[0], store, trusted, share)
    return SharedRateLimitPolicy(scope, specs, store, trusted, share)
