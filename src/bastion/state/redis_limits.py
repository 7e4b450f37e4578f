"""Rate limits and quotas counted in Redis: exact across every instance and worker.

One script call per request checks and consumes all the limits of its route atomically
(`LUA`, EVALSHA with EVAL when the server does not know it yet): every limit gives one
unit, or none does. The arithmetic is `MemoryLimitStore`'s (module doc of
`bastion.state.limits`): GCRA with the TAT kept as a float (``%.17g``, exact), quotas as a
count per calendar day or month (UTC). Time is Redis's ``TIME``, read in the script: the
instances' clocks never matter. Redis ≥ 5 replicates a script's effects, not the script,
so reading ``TIME`` in a script that writes is allowed (Debian's 7.0 here).

Keys: ``<key_prefix>{<tag>}<limit key>``, the tag a digest of the route (every limit key
starts with the route's scope, up to its first ``|``). Keys of one call must share a hash
slot on a Redis Cluster, and a request's limits may count different things (client
address, consumer), so the route is what they share: all of a route's counters live on
one cluster node (a very busy route is one node's load), in exchange for one round trip
per request. A GCRA key expires when its TAT has passed (an idle bucket is a full one);
a quota key expires at the end of its period.

Refusals are remembered here until they would pass (their ``retry_after``): a flood of
refused requests from one client costs no round trip.

A single rate limit has a script of its own (`LUA_ONE`, the same arithmetic on the same
keys, so instances running either script count together): its reply to an admitted
request is the ``RateLimit`` field's value, which the policy adds as it is
(`policies/shared_limits.py`, `OneSharedRateLimitPolicy`).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bastion.clock import SYSTEM_CLOCK, Clock
from bastion.state.limits import Check, MemoryLimitStore, Outcome
from bastion.state.redis_client import UNKNOWN_SCRIPT, RedisConnection
from bastion.state.redis_pipeline import encode

if TYPE_CHECKING:
    from bastion.config.state_models import State

__all__ = ["LUA", "LUA_CALENDAR", "LUA_ONE", "RedisLimitStore"]

REFUSED_CACHE = 10_000
"""Refusals remembered (by the keys of the request); the table starts again when full."""

KEY_CACHE = 10_000
"""Limit keys whose Redis key is remembered; the table starts again when full."""

LUA_CALENDAR = """
-- the UTC calendar day or month holding `now` (seconds): its start and end
local function window(per, now)
  local day = math.floor(now / 86400)
  if per == 'day' then return day * 86400, day * 86400 + 86400 end
  -- the civil date of `day` (days since 1970-01-01), by 400-year eras from 0000-03-01
  local z = day + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
                          - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  local lengths = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}
  local length = lengths[m]
  if m == 2 and ((y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0) then length = 29 end
  local start = (day - (d - 1)) * 86400
  return start, start + length * 86400
end
"""

LUA = (
    LUA_CALENDAR
    + """
-- KEYS[i]: the counter of check i; ARGV[4i-3 .. 4i]: 'r', interval, tau, ahead (GCRA)
-- or 'q', count, 'day' | 'month', '' (quota). Returns {allowed, then per check: allowed,
-- remaining, reset, retry_after} (times as strings: Redis would truncate numbers).
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = #KEYS
local seen, new = {}, {}
local refused = false
for i = 1, n do
  local v = redis.call('GET', KEYS[i])
  seen[i] = v and tonumber(v) or nil
  if not refused then
    if ARGV[4 * i - 3] == 'r' then
      local interval, ahead = tonumber(ARGV[4 * i - 2]), tonumber(ARGV[4 * i])
      local tat = seen[i]
      if tat and tat > now then
        tat = tat + interval
        if tat - now > ahead then refused = true end
      else
        tat = now + interval  -- idle: a whole bucket always admits one
      end
      new[i] = tat
    else
      local used = seen[i] or 0
      if used >= tonumber(ARGV[4 * i - 2]) then refused = true end
      new[i] = used + 1
    end
  end
end
local out = {refused and 0 or 1}
local function put(ok, left, reset, wait)
  out[#out + 1] = ok and 1 or 0
  out[#out + 1] = left
  out[#out + 1] = string.format('%.6f', reset)
  out[#out + 1] = string.format('%.6f', wait)
end
for i = 1, n do
  if ARGV[4 * i - 3] == 'r' then
    local interval, tau, ahead = tonumber(ARGV[4 * i - 2]), tonumber(ARGV[4 * i - 1]),
                                 tonumber(ARGV[4 * i])
    if refused then
      local tat = math.max(seen[i] or now, now)
      if tat > now and tat + interval - now > ahead then
        put(false, 0, tat - now, tat - tau - now)
      else
        put(true, math.floor((now + tau - tat) / interval + 1e-9) + 1, tat - now, 0)
      end
    else
      local tat = new[i]
      redis.call('SET', KEYS[i], string.format('%.17g', tat),
                 'PX', math.ceil((tat - now) * 1000) + 1)
      local left = math.floor((now + tau - tat) / interval + 1e-9) + 1
      if left > 0 then
        put(true, left, tat - now, 0)
      else
        put(false, 0, tat - now, tat - tau - now)
      end
    end
  else
    local count = tonumber(ARGV[4 * i - 2])
    local start, finish = window(ARGV[4 * i - 1], now)
    local used = seen[i] or 0
    if not refused then
      used = new[i]
      redis.call('SET', KEYS[i], used, 'PXAT', string.format('%d', finish * 1000))
    end
    local left = math.max(0, count - used)
    put(left > 0, left, finish - now, left > 0 and 0 or finish - now)
  end
end
return out
"""
)


LUA_ONE = """
-- `LUA` for a single rate limit (GCRA), its arithmetic unchanged, with its reply made for
-- the one thing a request needs when it is admitted: KEYS[1] the counter, ARGV interval,
-- tau, ahead (`LUA`'s for 'r'). Admitted: the string '<remaining>;t=<seconds>\\r\\n',
-- the RateLimit field's value as `RateLimitPolicy.fields` writes it from `LUA`'s reply
-- (the reset written '%.6f', read back, less 1e-6, rounded up, at least 0: the same
-- double arithmetic as Python's). Refused: `LUA`'s reply, {0, allowed, remaining, reset,
-- retry_after}.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval, tau, ahead = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local v = redis.call('GET', KEYS[1])
local seen = v and tonumber(v) or nil
local tat = seen
if tat and tat > now then
  tat = tat + interval
  if tat - now > ahead then
    -- refused: nothing written; what `LUA` says of a refused check
    local was = math.max(seen, now)
    if was + interval - now > ahead then
      return {0, 0, 0, string.format('%.6f', was - now), string.format('%.6f', was - tau - now)}
    end
    local left = math.floor((now + tau - was) / interval + 1e-9) + 1
    return {0, 1, left, string.format('%.6f', was - now), string.format('%.6f', 0)}
  end
else
  tat = now + interval  -- idle: a whole bucket always admits one
end
redis.call('SET', KEYS[1], string.format('%.17g', tat), 'PX', math.ceil((tat - now) * 1000) + 1)
local left = math.floor((now + tau - tat) / interval + 1e-9) + 1
local reset = tat - now
if left <= 0 then
  left = 0
  reset = tat - tau - now
end
local seconds = math.ceil(tonumber(string.format('%.6f', reset)) - 1e-6)
if seconds < 0 then seconds = 0 end
return string.format('%d;t=%d\\r\\n', left, seconds)
"""


class RedisLimitStore:
    """The `LimitStore` of ``state.redis``: ``take`` is a coroutine (one script call), or
    ``take_soon`` and ``taken`` around the reply's future."""

    is_async = True
    dirty = False  # nothing to save: Redis keeps the counters

    def __init__(self, settings: State, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self.prefix = settings.key_prefix
        self.connection = RedisConnection(settings)
        # counters of the limits with on_store_down: local, while Redis is unavailable
        self.local = MemoryLimitStore(clock=clock)
        self.redis_keys: dict[str, str] = {}
        # a refused request's checks and keys -> (until when, the outcomes, when they held)
        self.refused: dict[tuple[object, ...], tuple[float, list[Outcome], float]] = {}
        # the script's arguments of a route's checks (fixed when the plan is compiled)
        self.arguments: dict[int, tuple[Sequence[Check], list[str]]] = {}

    def warm(self) -> None:
        """Connect and load the script in the background (see `RedisConnection.warm`)."""
        self.connection.warm(LUA, LUA_ONE)

    def take_and_save(self, now: float) -> None:
        """Nothing to save."""

    def close(self) -> None:
        """Nothing to save (the connection ends with the process)."""

    def redis_key(self, key: str) -> str:
        """``key`` in Redis: the prefix, the route's hash tag, the key."""
        try:
            return self.redis_keys[key]
        except KeyError:
            pass
        route = key.split("|", 1)[0]
        tag = hashlib.blake2b(route.encode(), digest_size=8).hexdigest()
        if len(self.redis_keys) >= KEY_CACHE:
            self.redis_keys.clear()
        value = self.redis_keys[key] = f"{self.prefix}{{{tag}}}{key}"
        return value

    async def take(
        self, checks: Sequence[Check], keys: Sequence[str], now: float, report: bool = False
    ) -> tuple[bool, list[Outcome] | None]:
        """`LimitStore.take`, in Redis; raises `StoreUnavailable` when Redis cannot answer
        within the timeout or the breaker is open."""
        remembered = self.remembered(checks, keys, now)
        if remembered is not None:
            return remembered
        redis_keys = [self.redis_key(key) for key in keys]
        reply = await self.connection.run_script(LUA, redis_keys, self.script_args(checks))
        return self.outcomes(reply, checks, keys, now, report)

    # `take` in two halves without a coroutine (the usual case: connected, pipelined)
    def take_soon(
        self, checks: Sequence[Check], keys: Sequence[str], now: float, report: bool = False
    ) -> tuple[bool, list[Outcome] | None] | asyncio.Future[Any] | None:
        """`take` started: its answer at once (a refusal remembered), or the reply's
        future, to be given to `taken`; None when it must be awaited (`take`: connecting,
        or a server reached through redis-py). `StoreUnavailable` as `take`."""
        if self.refused:  # (none remembered: no call)
            remembered = self.remembered(checks, keys, now)
            if remembered is not None:
                return remembered
        redis_keys = [self.redis_key(key) for key in keys]
        return self.connection.script_soon(LUA, redis_keys, self.script_args(checks))

    def taken(
        self,
        future: asyncio.Future[Any],
        checks: Sequence[Check],
        keys: Sequence[str],
        now: float,
        report: bool = False,
    ) -> tuple[bool, list[Outcome] | None] | asyncio.Future[Any]:
        """What `take` returns, from the future of `take_soon` (or of a previous `taken`:
        when the server did not know the script, it is sent whole and that reply's future
        is returned, for `taken` again). `StoreUnavailable` as `take`."""
        connection = self.connection
        reply = connection.script_reply(future)
        if reply is UNKNOWN_SCRIPT:
            redis_keys = [self.redis_key(key) for key in keys]
            args = self.script_args(checks)
            return connection.script_again(LUA, redis_keys, args, future.get_loop())
        return self.outcomes(reply, checks, keys, now, report)

    # the single rate limit's script (`LUA_ONE`), for `OneSharedRateLimitPolicy`
    def one_command(self, check: Check, key: str) -> bytes:
        """The EVALSHA of `LUA_ONE` for ``check`` on ``key``, encoded: the same bytes on
        every request counted by that key, so its policy makes them once per key."""
        digest = self.connection.digest(LUA_ONE)
        return encode(b"EVALSHA", digest, b"1", self.redis_key(key), *one_arguments(check))

    def one_again(
        self, check: Check, key: str, loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[Any]:
        """After `UNKNOWN_SCRIPT` for a `one_command`: `LUA_ONE` sent whole (EVAL)."""
        keys = [self.redis_key(key)]
        return self.connection.script_again(LUA_ONE, keys, one_arguments(check), loop)

    def remembered(
        self, checks: Sequence[Check], keys: Sequence[str], now: float
    ) -> tuple[bool, list[Outcome]] | None:
        """A refusal of these checks and keys that still holds (it costs no round trip)."""
        if not self.refused:
            return None
        # the checks by identity too: a reload makes new ones (a quota raised by the new
        # config must not stay refused until the end of its period)
        known = (id(checks), *keys)
        remembered = self.refused.get(known)
        if remembered is not None:
            until, outcomes, then = remembered
            if now < until:
                return False, _aged(outcomes, now - then)
            del self.refused[known]
        return None

    def script_args(self, checks: Sequence[Check]) -> list[str]:
        """`LUA`'s ARGV for a route's checks, made once per route."""
        made = self.arguments.get(id(checks))
        if made is None or made[0] is not checks:
            made = (checks, script_arguments(checks))
            if len(self.arguments) >= KEY_CACHE:
                self.arguments.clear()
            self.arguments[id(checks)] = made
        return made[1]

    def outcomes(
        self, reply: Any, checks: Sequence[Check], keys: Sequence[str], now: float, report: bool
    ) -> tuple[bool, list[Outcome] | None]:
        """`take`'s answer from the script's reply; a refusal is remembered."""
        allowed = reply[0] == 1
        if allowed and not report:
            return True, None  # (nothing to tell: the per-limit part is not even read)
        outcomes = [
            Outcome(reply[i] == 1, int(reply[i + 1]), float(reply[i + 2]), float(reply[i + 3]))
            for i in range(1, len(reply), 4)
        ]
        if not allowed:
            wait = max(o.retry_after for o in outcomes if not o.allowed)
            if len(self.refused) >= REFUSED_CACHE:
                self.refused.clear()
            self.refused[(id(checks), *keys)] = (now + wait, outcomes, now)
            return False, outcomes
        return True, outcomes if report else None


def script_arguments(checks: Sequence[Check]) -> list[str]:
    """`LUA`'s ARGV for ``checks``: four per check."""
    args: list[str] = []
    for check in checks:
        if check.per is None:
            args += ("r", repr(check.interval), repr(check.tau), repr(check.ahead))
        else:
            args += ("q", str(check.count), check.per, "")
    return args


def one_arguments(check: Check) -> list[str]:
    """`LUA_ONE`'s ARGV for a rate limit: `script_arguments`' last three for it."""
    return [repr(check.interval), repr(check.tau), repr(check.ahead)]


def _aged(outcomes: list[Outcome], elapsed: float) -> list[Outcome]:
    """Remembered outcomes as they stand ``elapsed`` seconds later."""
    return [
        Outcome(
            o.allowed, o.remaining, max(0.0, o.reset - elapsed), max(0.0, o.retry_after - elapsed)
        )
        for o in outcomes
    ]
