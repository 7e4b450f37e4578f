"""The connection to Redis of one worker, behind a circuit breaker.

Imported only when ``state.redis`` is configured: redis-py costs memory that a gateway
without Redis does not pay.

The client is made on first use, on the running loop, by the process that uses it: the
supervisor forks its workers after the plan may have been compiled, and a connection
shared across a fork would interleave two processes' replies. A new process (or a new
loop, in tests) makes a client of its own; the old one is dropped, not closed (its socket
belongs to the parent).

No request waits longer than ``state.timeout`` (connecting included). After
``breaker.failures`` consecutive errors or timeouts the breaker opens: requests are told
at once that the store is unavailable, without touching Redis, for ``breaker.open_for``;
then one request probes it (half-open) and its success closes the breaker. Each opening
and closing is logged once, with the server named without its credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from bastion.config.state_values import is_cluster, is_sentinel, redis_target
from bastion.state.limits import StoreUnavailable
from bastion.state.redis_pipeline import Pipelined, encode, pipelined_target

if TYPE_CHECKING:
    from bastion.config.state_models import State

_send = Pipelined._send

__all__ = ["UNKNOWN_SCRIPT", "Breaker", "RedisConnection"]

log = logging.getLogger("bastion.state")

_T = TypeVar("_T")

UNKNOWN_SCRIPT = object()
"""What `RedisConnection.script_reply` says when the server does not know the script."""


class _Process:
    """This process's id, kept up to date across forks without a system call per read."""

    pid = os.getpid()

    @classmethod
    def forked(cls) -> None:
        cls.pid = os.getpid()


_process = _Process
os.register_at_fork(after_in_child=_Process.forked)


class Breaker:
    """Closed (ask Redis), open (do not) or half-open (one probe under way)."""

    def __init__(
        self,
        failures: int,
        open_for: float,
        name: str,
        on_change: Callable[[bool], None] | None = None,
        quiet: bool = False,
    ) -> None:
        self.threshold = failures
        self.open_for = open_for
        self.name = name  # the server, without credentials
        self.on_change = on_change  # told True when it opens, False when it closes
        self.quiet = quiet  # the transitions are logged by `on_change` (not about limits)
        self.failures = 0
        self.open = False
        self.until = 0.0  # while open: when a probe may go (monotonic seconds)
        self.probing = False

    def allow(self, now: float) -> bool:
        """Whether this request may ask Redis (the probe, when half-open)."""
        if not self.open:
            return True
        if now >= self.until and not self.probing:
            self.probing = True
            return True
        return False

    def retry_after(self, now: float) -> float:
        return max(0.0, self.until - now) if self.open else 0.0

    def succeeded(self) -> None:
        self.failures = 0
        if self.open:
            self.open = self.probing = False
            if not self.quiet:
                log.warning("limit store %s answers again: limits are shared again", self.name)
            if self.on_change is not None:
                self.on_change(False)

    def failed(self, now: float, error: BaseException) -> None:
        self.failures += 1
        if self.open:
            # the probe failed: wait again (already logged when it opened)
            self.probing = False
            self.until = now + self.open_for
        elif self.failures >= self.threshold:
            self.open = True
            self.until = now + self.open_for
            if not self.quiet:
                self._log_opened(error)
            if self.on_change is not None:
                self.on_change(True)

    def _log_opened(self, error: BaseException) -> None:
        log.warning(
            "limit store %s unavailable after %d failures (%s): limits apply their "
            "on_store_down until it answers again (tried every %gs)",
            self.name,
            self.failures,
            _describe(error),
            self.open_for,
        )


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timeout"
    text = str(error) or type(error).__name__
    return text if len(text) < 200 else text[:200] + "…"


class RedisConnection:
    """One worker's Redis client, made lazily, and the breaker in front of it."""

    def __init__(
        self,
        settings: State,
        on_change: Callable[[bool], None] | None = None,
        quiet: bool = False,
    ) -> None:
        assert settings.redis is not None
        self.settings = settings
        self.timeout = settings.timeout
        self.target = redis_target(settings.redis)
        self.breaker = Breaker(
            settings.breaker.failures, settings.breaker.open_for, self.target, on_change, quiet
        )
        self.client: Any = None
        self.owner: tuple[int, asyncio.AbstractEventLoop] | None = None  # (pid, loop)
        self.scripts: dict[str, Any] = {}  # Lua text -> the client's registered script
        self.warming: asyncio.Task[None] | None = None
        # a single server (redis://, unix://): scripts go down one pipelined connection
        self.direct = pipelined_target(settings.redis) if isinstance(settings.redis, str) else None
        self.pipelined: Pipelined | None = None
        self.digests: dict[str, bytes] = {}  # Lua text -> its SHA1, for EVALSHA

    def _client(self, loop: asyncio.AbstractEventLoop | None = None) -> Any:
        owner = (_process.pid, loop or asyncio.get_running_loop())
        if self.client is None or self.owner != owner:
            self.client = connect(self.settings)
            self.owner = owner
            self.scripts = {}
            self.pipelined = (
                Pipelined(self.direct, self.timeout) if self.direct is not None else None
            )
        return self.client

    async def run_script(self, lua: str, keys: Sequence[str], args: Sequence[str]) -> Any:
        """The reply of ``lua`` run on ``keys`` and ``args`` (EVALSHA, EVAL when the server
        does not know it yet), within the timeout and through the breaker."""
        # Python 3.11 makes a getpid system call in each get_running_loop: the loop this
        # process's client was made on, when it is running, is the running one (one loop
        # runs per thread, and the workers' limit stores are used on their loop's thread)
        owner = self.owner
        if owner is not None and owner[0] == _process.pid and owner[1].is_running():
            loop = owner[1]
        else:
            loop = asyncio.get_running_loop()
            self._client(loop)
        pipelined = self.pipelined
        if pipelined is None:
            script = self.script(lua)

            async def through_redis_py(client: Any) -> Any:
                return await script(keys=keys, args=args, client=client)

            return await self.call(through_redis_py)
        # the pipelined connection bounds each command's wait itself: no timer per call
        digest = self.digest(lua)
        breaker = self.breaker
        now = time.monotonic()
        if not breaker.allow(now):
            raise StoreUnavailable(breaker.retry_after(now))
        try:
            try:
                reply = await pipelined.execute(
                    encode(b"EVALSHA", digest, str(len(keys)), *keys, *args), loop
                )
            except ResponseError as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
                command = encode(b"EVAL", lua, str(len(keys)), *keys, *args)
                reply = await pipelined.execute(command, loop)
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._failed(exc) from exc
        except BaseException:
            breaker.probing = False  # (see `call`)
            raise
        breaker.succeeded()
        return reply

    # --- the same, without a coroutine: for the rate limits' checks (`begin` in
    # `policies/shared_limits.py`), which wait on the reply's future directly
    def script_soon(
        self, lua: str, keys: Sequence[str], args: Sequence[str]
    ) -> asyncio.Future[Any] | None:
        """`run_script` started without a coroutine: the EVALSHA's reply future on the
        pipelined connection, to be read by `script_reply`; None when that cannot be
        (redis-py's servers, not connected yet, another loop or process): `run_script`
        then, which connects. `StoreUnavailable` at once when the breaker is open."""
        return self.send_soon(encode(b"EVALSHA", self.digest(lua), str(len(keys)), *keys, *args))

    def digest(self, lua: str) -> bytes:
        """The SHA1 of ``lua`` (hex), the name EVALSHA gives it."""
        digest = self.digests.get(lua)
        if digest is None:
            digest = self.digests[lua] = hashlib.sha1(lua.encode()).hexdigest().encode()
        return digest

    def send_soon(self, command: bytes) -> asyncio.Future[Any] | None:
        """`script_soon` of a command already encoded (an EVALSHA that a caller made once
        and sends again and again: the single-limit checks of `policies/shared_limits.py`).
        None and `StoreUnavailable` as `script_soon`."""
        owner = self.owner
        pipelined = self.pipelined
        if pipelined is None or owner is None or owner[0] != _process.pid:
            return None
        protocol = pipelined.protocol  # (`Pipelined.ready` inline: a call less)
        if protocol is None or protocol.lost is not None:
            return None
        loop = owner[1]
        if not loop.is_running():
            return None
        breaker = self.breaker
        if breaker.open:  # (closed: no clock to read, no call)
            now = time.monotonic()
            if not breaker.allow(now):
                raise StoreUnavailable(breaker.retry_after(now))
        return _send(protocol, command, loop)  # (`Pipelined.send` without its checks)

    def script_reply(self, future: asyncio.Future[Any]) -> Any:
        """The reply of a `script_soon` (or `script_again`) future, told to the breaker;
        `StoreUnavailable` when it failed or timed out; `UNKNOWN_SCRIPT` when the server
        does not know the script (then `script_again`). A cancelled future (the client
        left) raises CancelledError, and a probe that ends so lets the next one go."""
        try:
            reply = future.result()
            if isinstance(reply, ResponseError):
                if str(reply).startswith("NOSCRIPT"):
                    return UNKNOWN_SCRIPT
                raise reply
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._failed(exc) from exc
        except BaseException:
            self.breaker.probing = False  # (see `call`)
            raise
        breaker = self.breaker
        if breaker.failures or breaker.open:  # (nothing to tell it otherwise)
            breaker.succeeded()
        return reply

    def script_again(
        self, lua: str, keys: Sequence[str], args: Sequence[str], loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[Any]:
        """After `UNKNOWN_SCRIPT`: the script sent whole (EVAL); read by `script_reply`."""
        pipelined = self.pipelined
        if pipelined is None or not pipelined.ready:
            lost = RedisConnectionError("connection to Redis lost")
            raise self._failed(lost) from lost
        return pipelined.send(encode(b"EVAL", lua, str(len(keys)), *keys, *args), loop)

    def script(self, lua: str) -> Any:
        """``lua`` registered on this worker's client (EVALSHA, EVAL on NOSCRIPT)."""
        client = self._client()
        script = self.scripts.get(lua)
        if script is None:
            script = self.scripts[lua] = client.register_script(lua)
        return script

    def warm(self, *luas: str) -> None:
        """Connect and load the scripts ``luas`` now, in the background, when a loop is
        running (a worker compiling its plan): the first requests then need no handshake
        and no EVAL. A failure here only means that the first request will try again."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not on a loop: the first call connects
        if self.client is not None and self.owner == (_process.pid, loop):
            return  # this worker's client is made (by a route before, or a request)
        for lua in luas:
            self.script(lua)
        task = loop.create_task(self._warm(luas))
        self.warming = task  # (a reference: a task nobody holds may be collected)

    async def _warm(self, luas: Sequence[str]) -> None:
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(max(1.0, self.timeout)):
                client = self._client()
                for lua in luas:
                    if self.pipelined is not None:
                        loop = asyncio.get_running_loop()
                        await self.pipelined.execute(encode(b"SCRIPT", b"LOAD", lua), loop)
                    else:
                        await client.script_load(lua)

    async def call(self, work: Callable[[Any], Awaitable[_T]]) -> _T:
        """``work(client)`` within the timeout, through the breaker; `StoreUnavailable`
        when the breaker is open or the call fails."""
        breaker = self.breaker
        now = time.monotonic()
        if not breaker.allow(now):
            raise StoreUnavailable(breaker.retry_after(now))
        try:
            async with asyncio.timeout(self.timeout):
                result = await work(self._client())
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._failed(exc) from exc
        except BaseException:
            # cancelled (the client left) or a bug: no verdict on Redis, but a probe that
            # ends here must let the next request probe
            breaker.probing = False
            raise
        breaker.succeeded()
        return result

    def _failed(self, error: BaseException) -> StoreUnavailable:
        """Tell the breaker; what the request is told."""
        if isinstance(error, TimeoutError) and self.pipelined is not None:
            self.pipelined.abandon()  # the replies owed on it may never come
        now = time.monotonic()
        self.breaker.failed(now, error)
        return StoreUnavailable(self.breaker.retry_after(now) or self.timeout)


def connect(settings: State) -> Any:
    """A redis-py asyncio client for ``settings.redis``: no retries of its own (the
    breaker decides), every wait bounded by the timeout."""
    redis = settings.redis
    common: dict[str, Any] = {
        "socket_timeout": settings.timeout,
        "socket_connect_timeout": settings.timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
        # no CLIENT SETINFO on each new connection: less to wait for at connect
        "driver_info": None,
    }
    if is_sentinel(redis):
        from redis.asyncio.sentinel import Sentinel

        nodes = [host_port(node) for node in redis.sentinel]
        sentinel = Sentinel(nodes, sentinel_kwargs=dict(common), **common)
        return sentinel.master_for(
            redis.service, username=redis.username, password=redis.password, db=redis.db
        )
    if is_cluster(redis):
        from redis.asyncio.cluster import ClusterNode
        from redis.asyncio.cluster import RedisCluster as Cluster

        del common["health_check_interval"]
        return Cluster(
            startup_nodes=[ClusterNode(*host_port(node)) for node in redis.cluster],
            username=redis.username,
            password=redis.password,
            ssl=redis.tls,
            **common,
        )
    assert redis is not None
    return aioredis.Redis.from_url(redis, **common)


def host_port(node: str) -> tuple[str, int]:
    parts = urlsplit("//" + node)
    return parts.hostname or "", parts.port or 6379
