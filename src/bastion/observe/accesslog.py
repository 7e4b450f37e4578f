"""The access log: one line per request, JSON or Apache "combined", buffered.

Lines are collected in memory and written at most every 200 ms or every 64 KiB,
so a busy worker makes a few write calls a second instead of one per request.
SIGUSR1 reopens the file (for logrotate).

`write` runs once per request, so it is written for the interpreter: one function
with the common case inline, values that repeat looked up instead of formatted,
and the text encoded once per batch rather than once per line.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import Callable, Collection
from json.encoder import encode_basestring_ascii
from types import FunctionType
from typing import TYPE_CHECKING, Final, TypeVar
from urllib.parse import unquote_plus

from bastion.http.context import request_clock
from bastion.proxy.forwarded import client_address

if TYPE_CHECKING:
    from bastion.http.request import Request

_FLUSH_CHARS: Final = 64 * 1024  # characters; lines are ASCII in the common case, so ~bytes
_FLUSH_SECONDS: Final = 0.2
_MEMO_MAX: Final = 4096  # entries per memo table; a full table is cleared (bounded memory)
_AGENTS_MAX_BYTES: Final = 1024 * 1024  # client-chosen keys: the agents table is bounded by size

# The JSON string literal of a str, quotes included: the C function json.dumps
# itself uses for strings (ensure_ascii), so the escaping is exactly json.dumps's.
_json_str: Final = encode_basestring_ascii

_K = TypeVar("_K")
_V = TypeVar("_V")

_NULL: Final = "null"
_AGENT_REFERER: Final = frozenset((b"user-agent", b"referer"))


def _memo_put(memo: dict[_K, _V], key: _K, value: _V) -> _V:
    """Store a built piece; a full table is emptied first (bounded memory)."""
    if len(memo) >= _MEMO_MAX:
        memo.clear()
    memo[key] = value
    return value


# The builders of the memo tables' pieces, each followed by the constant text that
# comes after it in the line. Keys are the exact values, so a piece is always what
# building it would give; every value is escaped (quoted, for combined).

# method, host, route, consumer, upstream, cache outcome, refusing policy, its reason
_Parts = tuple[str, str, str, str, str, str, str, str]
_Counts = tuple[str, int, int, int]  # version, status, bytes in, bytes out


def _json_or_null(value: str) -> str:
    """An absent value (empty) is null in the JSON format, never an empty string."""
    return _json_str(value) if value else "null"


def _json_parts(key: _Parts) -> tuple[str, str]:
    method, host, route, consumer, upstream, cache, refused_by, refusal = key
    return (
        f'","method":{_json_or_null(method)},"host":{_json_or_null(host)},"target":',
        f',"route":{_json_or_null(route)},"consumer":{_json_or_null(consumer)},'
        f'"upstream":{_json_or_null(upstream)},"cache":{_json_or_null(cache)},'
        f'"refused_by":{_json_or_null(refused_by)},'
        f'"refusal":{_json_or_null(refusal) if refused_by else "null"},"upstream_ms":',
    )


def _clf_parts(key: _Parts) -> tuple[str, str]:
    _method, _host, route, consumer, upstream = key[:5]
    return (
        f" - {_q(consumer) or '-'} [",
        # the route in quotes: its pattern may hold spaces ("= /health", "~ ^/v[0-9]+/")
        f' route={chr(34) + _q(route) + chr(34) if route else "-"} upstream={upstream or "-"} rt=',
    )


def _json_counts(key: _Counts) -> str:
    version, status, bytes_in, bytes_out = key
    return (
        f',"protocol":{_json_str("HTTP/" + version)},"status":{status},'
        f'"bytes_in":{bytes_in},"bytes_out":{bytes_out},"duration_ms":'
    )


def _clf_counts(key: _Counts) -> str:
    version, status, _bytes_in, bytes_out = key
    return f' HTTP/{version}" {status} {bytes_out} "'


# "000" to "999": the decimals of `_fixed3`
_THOUSANDTHS: Final = tuple(f"{n:03d}" for n in range(1000))


def _fixed3(value: float) -> str:
    """`value` with three decimals, as `f"{value:.3f}"` writes it, but for values whose
    fourth decimal is a 5 and nothing after it in decimal (1.0005): this rounds them up,
    the f-string rounds the binary value, just above or below, so the two may differ by one
    in the last digit there. Formatting a float costs some 2.5k instructions compiled, an
    int a few hundred: a line has two such figures."""
    if value < 0:
        return "-" + _fixed3(-value)
    n = int(value * 1000 + 0.5)
    return f"{n // 1000}.{_THOUSANDTHS[n % 1000]}"


# Interpreted, the other way round: `f"{value:.3f}"` is one step of the interpreter and
# `_fixed3` a call of several (0.9 us against 0.6 us), so a pure build formats the floats.
# (Not from `__file__`: mypyc before 1.x set it only after running a module's body.)
_COMPILED: Final = not isinstance(_fixed3, FunctionType)


def _json_times(duration: float, upstream: float) -> tuple[str, str]:
    if _COMPILED:
        if upstream < 0:
            return _fixed3(duration * 1000), 'null,"user_agent":'
        return _fixed3(duration * 1000), _fixed3(upstream * 1000) + ',"user_agent":'
    if upstream < 0:
        return f"{duration * 1000:.3f}", 'null,"user_agent":'
    return f"{duration * 1000:.3f}", f'{upstream * 1000:.3f},"user_agent":'


def _clf_times(duration: float, upstream: float) -> tuple[str, str]:
    if _COMPILED:
        if upstream < 0:
            return _fixed3(duration), "-\n"
        return _fixed3(duration), _fixed3(upstream) + "\n"
    if upstream < 0:
        return f"{duration:.3f}", "-\n"
    return f"{duration:.3f}", f"{upstream:.3f}\n"


def _json_agent(key: tuple[bytes | None, bytes | None]) -> str:
    agent, referer = key
    return (
        f"{'null' if agent is None else _json_str(agent.decode('latin-1'))}"
        f',"referer":'
        f"{'null' if referer is None else _json_str(referer.decode('latin-1'))}"
        "}\n"
    )


def _clf_agent(key: tuple[bytes | None, bytes | None]) -> str:
    agent, referer = key
    return (
        f'{_q(referer.decode("latin-1")) if referer else "-"}" "'
        f'{_q(agent.decode("latin-1")) if agent else "-"}" rid='
    )


class AccessLog:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fmt: str,
        path: str,
        secret_params: Collection[str] = (),
        trusted: Callable[[str], bool] | None = None,
    ) -> None:
        self.loop = loop
        # names of parameters whose value is a credential (the API key names): their
        # values are masked in every logged target, whatever answered the request (a
        # request refused before its route's API key check still carries the key), in
        # whatever spelling or place the client used (see `redact_query`)
        self.secret_params = frozenset(_fold(name) for name in secret_params)
        # `trusted_proxies`: `client_ip` is the client's address behind them, as the
        # policies saw it (None when there are none: the socket peer)
        self.trusted = trusted
        self.format = fmt
        self.json = fmt == "json"
        self.path = path
        self.fd = -1
        self.own_fd = False
        self.buffer: list[str] = []
        self.size = 0
        self.handle: asyncio.TimerHandle | None = None
        # The line's start up to the request id (JSON) or the time stamp (combined):
        # it changes once a second. `_stamp_until` is when, in request-clock time.
        self._stamp = ""
        self._stamp_until = float("-inf")
        # Memo tables of line pieces made of values that repeat from request to
        # request. Building a piece (escaping, int and float formatting) costs
        # several times a dict probe, and the fewer pieces a line is joined from,
        # the cheaper the join.
        json = self.json
        # (method, host, route, consumer, upstream): few values
        self._parts: dict[_Parts, tuple[str, str]] = {}
        self._build_parts = _json_parts if json else _clf_parts
        # (version, status, bytes in, bytes out): answers of one resource tend
        # to have one size
        self._counts: dict[_Counts, str] = {}
        self._build_counts = _json_counts if json else _clf_counts
        # (duration, upstream time) are formatted per line, by a direct call (compiled,
        # a call through an attribute costs a thousand instructions more): the request
        # clock (`http.context.request_clock`) has sub-millisecond resolution, so they
        # hardly ever repeat and a memo table would only miss
        # (User-Agent, Referer): a client sends the same ones again and again;
        # bounded by their length too, as a client chooses it
        self._agents: dict[tuple[bytes | None, bytes | None], str] = {}
        self._agents_size = 0
        self._build_agent = _json_agent if json else _clf_agent
        self._no_agent = self._build_agent((None, None))
        self.open()

    def open(self) -> None:
        if self.path == "stdout":
            self.fd, self.own_fd = sys.stdout.fileno(), False
        elif self.path == "stderr":
            self.fd, self.own_fd = sys.stderr.fileno(), False
        else:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            self.own_fd = True

    def reopen(self) -> None:
        self.flush()
        if self.own_fd:
            os.close(self.fd)
        self.open()

    def _new_stamp(self, now: float) -> None:
        """The wall-clock second, formatted once per second.

        Its expiry is kept in the request clock's time (`now`, which `write` is given anyway), so
        a line costs a float comparison instead of a clock read; the wall clock is
        read again at each new second, so a clock step shows within a second."""
        wall = time.time()
        second = int(wall)
        t = time.gmtime(second)
        if self.json:
            self._stamp = time.strftime('{"time":"%Y-%m-%dT%H:%M:%SZ","request_id":"', t)
        else:
            self._stamp = time.strftime('%d/%b/%Y:%H:%M:%S +0000] "', t)
        self._stamp_until = now + (second + 1 - wall)

    # The misses of the memo tables: rare, so kept out of `write`.
    def _miss_parts(self, key: _Parts) -> tuple[str, str]:
        return _memo_put(self._parts, key, self._build_parts(key))

    def _miss_counts(self, key: _Counts) -> str:
        return _memo_put(self._counts, key, self._build_counts(key))

    def _miss_agent(self, key: tuple[bytes | None, bytes | None]) -> str:
        agent, referer = key
        size = len(agent or b"") + len(referer or b"")
        self._agents_size += size
        if self._agents_size > _AGENTS_MAX_BYTES:
            self._agents.clear()
            self._agents_size = size
        if referer is not None and self.secret_params and (0x3F in referer or 0x3B in referer):
            # a page of the API itself, opened with its key in the query
            text = self._build_agent((agent, redact_query(referer, self.secret_params)))
        else:
            text = self._build_agent(key)
        self._agents[key] = text
        return text

    def write(self, req: Request) -> None:
        """Log a finished request (a request observer: `http.context.Observer`)."""
        now = req.ended or request_clock()
        if now >= self._stamp_until:
            self._new_stamp(now)
        key = (
            req.method,
            req.host,
            req.route_name,
            req.consumer,
            req.upstream,
            req.cache,
            req.refused_by,
            req.refusal,
        )
        try:
            first, third = self._parts[key]
        except KeyError:
            first, third = self._miss_parts(key)
        counts = (req.version, req.status, req.body_bytes, req.bytes_out)
        try:
            sizes = self._counts[counts]
        except KeyError:
            sizes = self._miss_counts(counts)
        start = req.start
        elapsed = now - start if start else 0.0
        if self.json:
            duration, upstream = _json_times(elapsed, req.upstream_time)
        else:
            duration, upstream = _clf_times(elapsed, req.upstream_time)
        # one pass over the header fields for both; the set probe is cheap
        # (bytes cache their hash) and most fields are neither
        agent = referer = None
        for field in req.headers:
            if field[0] in _AGENT_REFERER:
                if field[0] == b"user-agent":
                    agent = field[2]
                else:
                    referer = field[2]
        if agent is None and referer is None:
            tail = self._no_agent
        else:
            agents = (agent, referer)
            try:
                tail = self._agents[agents]
            except KeyError:
                tail = self._miss_agent(agents)
        target = req.target
        # "?" and ";" by their byte values: `b"?" in target` first fails as a number
        if self.secret_params and (0x3F in target or 0x3B in target):
            target = redact_query(target, self.secret_params)
        trusted = self.trusted
        ip = req.client_ip if trusted is None else client_address(req, trusted)
        if self.json:
            rid = req.request_id
            if req.xrid is not None:
                # possibly the client's own (from a trusted proxy); otherwise the
                # gateway's hex id, which needs no escaping
                rid = _json_str(rid)[1:-1]
            # the target is escaped on every line (it varies too much to memo);
            # the client address is a parsed address or a socket's: no escaping needed
            # the trace id: hex digits checked by the proxy (proxy/tracing.py)
            trace = req.trace_id
            if trace:
                quote = '"'
            else:
                quote, trace = "", _NULL
            line = (
                f'{self._stamp}{rid}","trace_id":{quote}{trace}{quote},"client_ip":"{ip}{first}'
                f"{_json_str(target.decode('latin-1')) if target else _NULL}"
                f"{sizes}{duration}{third}{upstream}{tail}"
            )
        else:
            line = (
                f"{ip}{first}{self._stamp}{req.method} "
                f"{_q(target.decode('latin-1')) if target else '-'}{sizes}"
                f"{tail}{req.request_id}{third}{duration} urt={upstream}"
            )
        self.buffer.append(line)
        size = self.size + len(line)
        self.size = size
        if size >= _FLUSH_CHARS:
            self.flush()
        elif self.handle is None:
            self.handle = self.loop.call_later(_FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        if not self.buffer:
            return
        # lone surrogates (only possible in configured names) become "?"
        data = "".join(self.buffer).encode("utf-8", "replace")
        self.buffer.clear()
        self.size = 0
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.fd, view)
            except BlockingIOError:
                continue
            except OSError:
                return  # a log that cannot be written must not take requests down
            view = view[written:]

    def close(self) -> None:
        self.flush()
        if self.own_fd:
            os.close(self.fd)
            self.own_fd = False


# A parameter of the target: after "?" or "&" in the query, or after ";" (a path parameter,
# or a query separator to some servers). Every place a server might read a key from.
_PARAM: Final = re.compile(rb"([?&;])([^?&;=]*)=([^?&;]*)")


def _fold(name: str) -> str:
    """A parameter name as it is compared: case-insensitively, and "-" as "_" (CGI and WSGI
    backends read X-API-Key as X_API_KEY)."""
    return name.lower().replace("-", "_")


def redact_query(target: bytes, names: frozenset[str]) -> bytes:
    """``target`` with the value of every parameter named in ``names`` (folded by `_fold`)
    replaced by ``REDACTED``, in the query (``?a=1&b=2``) and as ``;name=value`` parameters.
    Names are compared decoded, as the API key check decodes them, so ``k%65y=`` is masked
    like ``key=``, and case-insensitively, so a key sent as ``?API_KEY=`` (which the route
    does not accept, but the client still sent) is masked like ``?api_key=``."""

    def mask(match: re.Match[bytes]) -> bytes:
        name = match.group(2)
        if _fold(unquote_plus(name.decode("latin-1"))) in names:
            return match.group(1) + name + b"=REDACTED"
        return match.group(0)

    return _PARAM.sub(mask, target)


def _q(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
