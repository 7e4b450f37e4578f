"""Rate limits and quotas of a route, answered with 429, Retry-After and the IETF
RateLimit-Policy / RateLimit fields (draft-ietf-httpapi-ratelimit-headers).

Everything a request needs is prepared here once per plan: the store keys' prefixes, the
periods, the constant ``RateLimit-Policy`` line. Per request: one key string per limit (cached
per consumer, client address or header value) and one ``store.take`` for all of them (all
consumed or none).

This runs on every request of a limited route, so the common case has a path of its own: a
route with a single rate limit on the in-process store (`OneRateLimitPolicy`) takes one TAT
from the store and looks its ``RateLimit`` line up in a small table, with no list, no
`Outcome` and no formatting per request.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from mypy_extensions import mypyc_attr

from bastion.config.plain import is_a
from bastion.config.units import parse_rate
from bastion.http.request import Request
from bastion.policies.base import Denied, real_client_ip
from bastion.state.limits import Check, LimitStore, MemoryLimitStore, Outcome, quota_window

if TYPE_CHECKING:
    from typing_extensions import TypeIs

    from bastion.config.policy_traffic import Quota, RateLimit
    from bastion.observe.events import EventCounters

__all__ = ["LONG_WINDOW", "Limit", "OneRateLimitPolicy", "RateLimitPolicy", "build_policy"]

def is_rate_limit(spec: RateLimit | Quota) -> TypeIs[RateLimit]:
    """A rate limit, not a quota (the config's model or its plain node)."""
    return is_a(spec, "RateLimit")


LONG_WINDOW = 60.0
"""Rate limits with a period of at least this many seconds are saved across restarts."""

_K = TypeVar("_K")

_PERIOD_NAMES = {1.0: "s", 60.0: "m", 3600.0: "h", 86400.0: "day"}

KEY_CACHE = 4096
"""Store keys remembered per limit (per consumer, client address or header value); the
table starts again when full, so a flood of new clients costs a string each, no memory."""

LONG_VALUE = 64
"""Header values longer than this (in bytes) are counted by a digest: the client chooses
them, and a store key must stay small however long the field is."""

LINE_CACHE = 1024
"""``RateLimit`` lines remembered per single-limit policy, by how far ahead the TAT is."""


class Limit:
    """One configured limit, resolved: how to key it, and its check parameters."""

    __slots__ = ("advertise", "burst", "by_ip", "by_value", "check", "count", "header",
                 "ip_prefix", "key", "name", "per", "period", "persist", "prefix",
                 "span", "v6_prefix")  # fmt: skip

    def __init__(self, scope: str, spec: RateLimit | Quota) -> None:
        self.key = spec.key
        self.advertise = spec.advertise
        self.v6_prefix = spec.ipv6_prefix
        self.span = (0.0, 0.0)  # the current calendar period of a quota
        if is_rate_limit(spec):
            self.count, self.period = parse_rate(spec.rate)
            self.burst = spec.burst or self.count
            self.per: str | None = None
            self.persist = self.period >= LONG_WINDOW
            unit = _PERIOD_NAMES.get(self.period) or f"{self.period:g}s"
            self.name = spec.name or f"{_short(spec.key)}-{self.count}-per-{unit}"
            identity = f"r:{self.count}/{self.period:g}:{self.burst}:{spec.name or ''}"
        else:
            self.count, self.period, self.burst = spec.limit, 0.0, 0
            self.per = spec.per
            self.persist = True
            self.name = spec.name or f"{_short(spec.key)}-{spec.limit}-per-{spec.per}"
            # not the limit: a quota's counter is kept when its limit changes
            identity = f"q:{spec.per}:{spec.name or ''}"
        self.prefix = f"{scope}|{identity}|{spec.key}="
        self.check = Check(self.count, self.period, self.burst, self.per, self.persist)
        # what a request is counted by (see `store_key`), resolved once
        self.header = spec.key[len("header:") :].lower().encode() if ":" in spec.key else b""
        self.ip_prefix = self.prefix if spec.key == "client_ip" else self.prefix + "ip:"
        self.by_ip: dict[str, str] = {}  # client address -> store key
        self.by_value: dict[str | bytes, str] = {}  # consumer name or header value -> store key

    def store_key(self, req: Request, trusted: Callable[[str], bool] | None) -> str:
        """The store key of this limit for ``req``: the prefix and the consumer, header
        value or client address (the fallback when there is no consumer or header)."""
        # a dict hit per request instead of concatenating the same strings again
        key = self.key
        if key == "consumer":
            consumer = req.consumer
            if consumer:
                try:
                    return self.by_value[consumer]
                except KeyError:
                    return _remember(self.by_value, consumer, self.prefix + "c:" + consumer)
        elif key == "route":
            return self.prefix
        elif key != "client_ip":
            header = req.header(self.header)
            if header:
                try:
                    return self.by_value[header]
                except KeyError:
                    if len(header) > LONG_VALUE:  # not remembered either: bounded memory
                        return (
                            self.prefix + "h#" + hashlib.blake2b(header, digest_size=16).hexdigest()
                        )
                    value = self.prefix + "h:" + header.decode("latin-1")
                    return _remember(self.by_value, header, value)
        ip = req.client_ip if trusted is None else real_client_ip(req, trusted)
        try:
            return self.by_ip[ip]
        except KeyError:
            return _remember(self.by_ip, ip, self.ip_prefix + counted_address(ip, self.v6_prefix))

    def window(self, now: float) -> float:
        if self.per is None:
            return self.period
        start, end = self.span
        if not start <= now < end:
            _, start, end = quota_window(self.per, now)
            self.span = (start, end)
        return end - start


def _short(key: str) -> str:
    return key.replace("header:", "h-").replace("_", "-")


def counted_address(ip: str, v6_prefix: int) -> str:
    """What a client address is counted by: an IPv4 address whole, an IPv6 address by its
    network of ``v6_prefix`` bits (one host or subscriber gets a whole /64, so counting
    each address would give a client 2**64 fresh buckets, and fill the store)."""
    if ":" not in ip:
        return ip
    try:
        addr = ipaddress.IPv6Address(ip)
    except ValueError:
        return ip  # not an address (a unix socket's peer): as it is
    mapped = addr.ipv4_mapped
    if mapped is not None:
        return str(mapped)  # a dual-stack socket's IPv4 client
    if v6_prefix >= 128:
        return str(addr)
    return str(
        ipaddress.IPv6Network((int(addr) >> (128 - v6_prefix) << (128 - v6_prefix), v6_prefix))
    )


def _remember(table: dict[_K, str], value: _K, key: str) -> str:
    if len(table) >= KEY_CACHE:
        table.clear()
    table[value] = key
    return key


@mypyc_attr(allow_interpreted_subclasses=True)  # the Redis-backed ones (shared_limits.py)
class RateLimitPolicy:
    """Any set of rate limits and quotas, on any store.

    Compiled, with interpreted subclasses: a subclass sets the fields it changes (``is_async``)
    in ``__init__``, not at class level, where compiled code, reading the base's field, would
    not see them."""

    kind = "rate_limits"  # the config key it comes from: what metrics and logs call it
    # counted for the metrics on refusal (set by the builder; `policies/chain.py`)
    events: EventCounters | None = None

    is_async = False

    def __init__(
        self,
        scope: str,
        specs: Sequence[RateLimit | Quota],
        store: LimitStore,
        trusted: Callable[[str], bool] | None,
        saver: LimitStore | None = None,
    ) -> None:
        # an instance attribute: the chain reads it per request, and Python 3.11 has a
        # fast path for instance attributes, not for class ones read through an instance
        self.is_async = False
        self.limits = [Limit(scope, spec) for spec in specs]
        self.checks = [limit.check for limit in self.limits]
        # the RateLimit fields go on every answer when any limit is advertised
        self.report = any(limit.advertise for limit in self.limits)
        self.state_prefixes = [
            f'"{limit.name}";r='.encode() if limit.advertise else None for limit in self.limits
        ]
        self.policy_line = b""
        self.policy_until = (0.0, 0.0)  # when policy_line must be built again
        self.store = store
        # the store's clock, read once per request (`clock.time` itself: no call through
        # the clock object). Read it as ``clock = self.now; clock()``: ``self.now()`` would
        # look an instance attribute up as a method, which Python 3.11 cannot specialise.
        self.now = store.clock.time
        self.trusted = trusted
        # saves long-window counters now and then; only this route's requests can have
        # changed them, so a route without any has nothing to look at
        self.saver = saver if any(limit.persist for limit in self.limits) else None

    def keys(self, req: Request) -> list[str]:
        """The store key of each limit for this request."""
        trusted = self.trusted
        return [limit.store_key(req, trusted) for limit in self.limits]

    def on_request(self, req: Request) -> Denied | None:
        clock = self.now
        now = clock()
        keys = self.keys(req)
        allowed, outcomes = self.store.take(self.checks, keys, now, self.report)
        saver = self.saver
        if saver is not None and saver.dirty:
            saver.take_and_save(now)
        if outcomes is None:
            return None
        if allowed:
            # added to every answer of this request, whatever produces it
            req.extra_head += self.fields(outcomes, now)
            return None
        return self.denied(outcomes, now)

    def denied(self, outcomes: list[Outcome], now: float) -> Denied:
        """The 429 answer to a request that a limit refused."""
        wait = max(o.retry_after for o in outcomes if not o.allowed)
        seconds = max(1, math.ceil(wait - 1e-6))
        headers = f"Retry-After: {seconds}\r\n".encode() + self.fields(outcomes, now)
        # which kind of limit refused, for the metrics: a quota when one of them did
        limits = self.limits
        refused = [i for i, o in enumerate(outcomes) if not o.allowed]
        kind = "quota" if any(limits[i].per is not None for i in refused) else "rate"
        return Denied(429, f"Too many requests: try again in {seconds} s.", headers, kind)

    def fields(self, outcomes: list[Outcome], now: float) -> bytes:
        """The RateLimit-Policy and RateLimit lines naming the advertised limits."""
        if not self.report:
            return b""
        if not self.policy_until[0] <= now < self.policy_until[1]:
            self._policy_line(now)
        state = []
        prefixes = self.state_prefixes
        for i in range(len(prefixes)):
            prefix = prefixes[i]
            if prefix is not None:
                outcome = outcomes[i]
                left = outcome.remaining
                reset = outcome.retry_after if left == 0 else outcome.reset
                state.append(b"%s%d;t=%d" % (prefix, left, max(0, math.ceil(reset - 1e-6))))
        return b"%sRateLimit: %s\r\n" % (self.policy_line, b", ".join(state))

    def _policy_line(self, now: float) -> None:
        """RateLimit-Policy is constant but for the length of a quota's month."""
        policy = []
        start, end = float("-inf"), float("inf")
        for limit in self.limits:
            if limit.advertise:
                window = limit.window(now)
                policy.append(f'"{limit.name}";q={limit.count};w={max(1, round(window))}')
                if limit.per is not None:
                    start, end = max(start, limit.span[0]), min(end, limit.span[1])
        self.policy_line = ("RateLimit-Policy: " + ", ".join(policy) + "\r\n").encode("latin-1")
        self.policy_until = (start, end)


class OneRateLimitPolicy(RateLimitPolicy):
    """A single rate limit (GCRA) on the in-process store: the common case, taken by
    `MemoryLimitStore.take_rate` and answered from a table of ``RateLimit`` lines."""

    def __init__(
        self,
        scope: str,
        spec: RateLimit,
        store: MemoryLimitStore,
        trusted: Callable[[str], bool] | None,
        saver: LimitStore | None = None,
    ) -> None:
        super().__init__(scope, [spec], store, trusted, saver)
        limit = self.limit = self.limits[0]
        self.check = limit.check
        self.memory = store
        # a bound method: `self.memory.take_rate(...)` would go through mypyc's glue for a
        # class open to interpreted subclasses (a look-up for an override on each call)
        self.take_rate = store.take_rate
        # the store keys of a consumer and of a client address, looked up here rather than
        # through `Limit.store_key` (a call less); None where that does not apply
        self.by_consumer = limit.by_value if limit.key == "consumer" else None
        plain_ip = trusted is None and limit.key in ("consumer", "client_ip")
        self.by_ip = limit.by_ip if plain_ip else None
        # the RateLimit-Policy line of a rate limit never changes: it starts every line
        self._policy_line(self.now())
        self.prefix = b"%sRateLimit: %s" % (self.policy_line, self.state_prefixes[0] or b"")
        # What follows the key's new TAT depends only on how far ahead of now it is, and
        # that takes few values: an idle key is always one interval ahead (to the clock's
        # rounding), a busy one some whole intervals more. So both fields are looked up
        # by that float and formatted only when it is new.
        self.by_ahead: dict[float, bytes] = {}

    def on_request(self, req: Request) -> Denied | None:
        # (subscripts in try blocks rather than .get: a miss happens once per key or value)
        clock = self.now
        now = clock()
        try:
            if self.by_consumer is not None and req.consumer:
                key = self.by_consumer[req.consumer]
            elif self.by_ip is not None:
                key = self.by_ip[req.client_ip]
            else:
                key = self.limit.store_key(req, self.trusted)
        except KeyError:
            key = self.limit.store_key(req, self.trusted)
        tat = self.take_rate(self.check, key, now)
        if self.saver is not None:
            self.saver.take_and_save(now)
        if not tat:
            return self.denied(self.memory.state(self.checks, [key], now), now)
        if self.report:
            # added to every answer of this request, whatever produces it
            try:
                req.extra_head += self.by_ahead[tat - now]
            except KeyError:
                req.extra_head += self._line(now, tat)
        return None

    def _line(self, now: float, tat: float) -> bytes:
        """Both fields after a request that moved the key's TAT to ``tat``: what `take`
        reports and `fields` writes, with the same arithmetic."""
        check = self.check
        left = math.floor((now + check.tau - tat) / check.interval + 1e-9) + 1
        if left > 0:
            reset = math.ceil(tat - now - 1e-6)
        else:
            left = 0
            reset = math.ceil(tat - check.tau - now - 1e-6)
        if reset < 0:
            reset = 0
        line = b"%s%d;t=%d\r\n" % (self.prefix, left, reset)
        by_ahead = self.by_ahead
        if len(by_ahead) >= LINE_CACHE:
            by_ahead.clear()
        by_ahead[tat - now] = line
        return line


def build_policy(
    scope: str,
    specs: Sequence[RateLimit | Quota],
    store: LimitStore,
    trusted: Callable[[str], bool] | None,
    saver: LimitStore | None = None,
) -> RateLimitPolicy:
    """The policy for ``specs``: the single-limit fast path when it applies."""
    if len(specs) == 1 and is_rate_limit(specs[0]) and isinstance(store, MemoryLimitStore):
        return OneRateLimitPolicy(scope, specs[0], store, trusted, saver)
    return RateLimitPolicy(scope, specs, store, trusted, saver)
