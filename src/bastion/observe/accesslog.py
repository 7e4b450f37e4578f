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
import sys
import time
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bastion.http1.request import Request

_FLUSH_CHARS = 64 * 1024  # characters; lines are ASCII in the common case, so ~bytes
_FLUSH_SECONDS = 0.2
_MEMO_MAX = 4096  # entries per memo table; a full table is cleared (bounded memory)

# The JSON string literal of a str, quotes included: the C function json.dumps
# itself uses for strings (ensure_ascii), so the escaping is exactly json.dumps's.
_json_str = encode_basestring_ascii

_DASH_JSON = '"-"'
_NO_AGENT_JSON = 'null,"referer":null}\n'
_AGENT_REFERER = frozenset((b"user-agent", b"referer"))


def _ms(seconds: float) -> str:
    return "%.3f" % (seconds * 1000)


def _s(seconds: float) -> str:
    return "%.3f" % seconds


def _memo_put(memo: dict[Any, Any], key: Any, value: Any) -> Any:
    """Store a built piece; a full table is emptied first (bounded memory)."""
    if len(memo) >= _MEMO_MAX:
        memo.clear()
    memo[key] = value
    return value


# (method, host, version, status, route, consumer, upstream) -> the three pieces of
# a JSON line that only depend on those: every value escaped, built once
def _json_parts(key: tuple[str, str, str, int, str, str, str]) -> tuple[str, str, str]:
    method, host, version, status, route, consumer, upstream = key
    return (
        f'","method":{_json_str(method)},"host":{_json_str(host)},"target":',
        f',"protocol":{_json_str("HTTP/" + version)},"status":{status},"bytes_in":',
        f',"route":{_json_str(route)},"consumer":{_json_str(consumer) if consumer else "null"},'
        f'"upstream":{_json_str(upstream)},"upstream_ms":',
    )


def _clf_parts(key: tuple[str, str, str, int, str, str, str]) -> tuple[str, str, str]:
    method, _host, version, status, route, consumer, upstream = key
    return (
        f" - {_q(consumer) or '-'} [",
        f' HTTP/{version}" {status} ',
        f" route={_q(route) or '-'} upstream={upstream or '-'} rt=",
    )


class AccessLog:
    def __init__(self, loop: asyncio.AbstractEventLoop, fmt: str, path: str) -> None:
        self.loop = loop
        self.format = fmt
        self.json = fmt == "json"
        self.path = path
        self.fd = -1
        self.own_fd = False
        self.buffer: list[str] = []
        self.size = 0
        self.handle: asyncio.TimerHandle | None = None
        # The line's start up to the request id (JSON) or the time stamp (combined):
        # it changes once a second. `_stamp_until` is when, in loop time.
        self._stamp = ""
        self._stamp_until = float("-inf")
        # Memo tables: pieces of a line built from values that repeat from request
        # to request, each with the constant text that follows it in the line.
        # Building a piece costs several times a dict probe, and the fewer pieces a
        # line is joined from, the cheaper the join. Keys are the exact values, so
        # the text is always what building it would give.
        self._parts: dict[tuple[str, str, str, int, str, str, str], tuple[str, str, str]] = {}
        self._build_parts = _json_parts if self.json else _clf_parts
        self._bytes_in: dict[int, str] = {}
        self._bytes_out: dict[int, str] = {}
        # uvloop's clock ticks in whole milliseconds, so durations (differences of
        # two readings) take few distinct float values: formatting one (~0.3 us)
        # costs far more than finding it again
        self._duration: dict[float, str] = {}
        self._upstream: dict[float, str] = {}
        if self.json:
            self._in_suffix = ',"bytes_out":'
            self._out_suffix = ',"duration_ms":'
            self._up_suffix = ',"user_agent":'
            self._no_upstream = 'null,"user_agent":'
            self._format_seconds = _ms
        else:
            self._in_suffix = ""  # combined has no bytes_in
            self._out_suffix = ' "'
            self._up_suffix = "\n"
            self._no_upstream = "-\n"
            self._format_seconds = _s
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

        Its expiry is kept in loop time (`now`, which `write` is given anyway), so
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
    def _miss_parts(
        self, key: tuple[str, str, str, int, str, str, str]
    ) -> tuple[str, str, str]:
        return _memo_put(self._parts, key, self._build_parts(key))

    def _miss_int(self, memo: dict[int, str], value: int, suffix: str) -> str:
        return _memo_put(memo, value, f"{value}{suffix}")

    def _miss_seconds(self, memo: dict[float, str], seconds: float, suffix: str) -> str:
        return _memo_put(memo, seconds, self._format_seconds(seconds) + suffix)

    def write(self, req: Request, now: float) -> None:
        if now >= self._stamp_until:
            self._new_stamp(now)
        key = (
            req.method,
            req.host,
            req.version,
            req.status,
            req.route_name,
            req.consumer,
            req.upstream,
        )
        try:
            first, second, third = self._parts[key]
        except KeyError:
            first, second, third = self._miss_parts(key)
        start = req.start
        seconds = now - start if start else 0.0
        try:
            duration = self._duration[seconds]
        except KeyError:
            duration = self._miss_seconds(self._duration, seconds, "")
        seconds = req.upstream_time
        if seconds < 0:
            upstream = self._no_upstream
        else:
            try:
                upstream = self._upstream[seconds]
            except KeyError:
                upstream = self._miss_seconds(self._upstream, seconds, self._up_suffix)
        count = req.bytes_out
        try:
            bytes_out = self._bytes_out[count]
        except KeyError:
            bytes_out = self._miss_int(self._bytes_out, count, self._out_suffix)
        target = req.target
        # one pass over the header fields for both; the set probe is cheap
        # (bytes cache their hash) and most fields are neither
        agent = referer = None
        for field in req.headers:
            if field[0] in _AGENT_REFERER:
                if field[0] == b"user-agent":
                    agent = field[2]
                else:
                    referer = field[2]
        if self.json:
            rid = req.request_id
            if req.xrid is not None:
                # possibly the client's own (from a trusted proxy); otherwise the
                # gateway's hex id, which needs no escaping
                rid = _json_str(rid)[1:-1]
            count = req.body_bytes
            try:
                bytes_in = self._bytes_in[count]
            except KeyError:
                bytes_in = self._miss_int(self._bytes_in, count, self._in_suffix)
            if agent is None and referer is None:
                tail = _NO_AGENT_JSON
            else:
                tail = (
                    f"{'null' if agent is None else _json_str(agent.decode('latin-1'))}"
                    f',"referer":'
                    f"{'null' if referer is None else _json_str(referer.decode('latin-1'))}"
                    "}\n"
                )
            # Client-controlled text (target, User-Agent, Referer) always goes
            # through the escaper; the memo pieces escape every value they hold;
            # client_ip is a socket address.
            line = (
                f"{self._stamp}{rid}\",\"client_ip\":\"{req.client_ip}{first}"
                f"{_json_str(target.decode('latin-1')) if target else _DASH_JSON}"
                f"{second}{bytes_in}{bytes_out}{duration}{third}{upstream}{tail}"
            )
        else:
            line = (
                f"{req.client_ip}{first}{self._stamp}{req.method} "
                f"{_q(target.decode('latin-1')) if target else '-'}{second}{bytes_out}"
                f"{_q(referer.decode('latin-1')) if referer else '-'}\" \""
                f"{_q(agent.decode('latin-1')) if agent else '-'}\" rid={req.request_id}"
                f"{third}{duration} urt={upstream}"
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


def _q(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
