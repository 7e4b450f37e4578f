"""The access log: one line per request, JSON or Apache "combined", buffered.

Lines are collected in memory and written at most every 200 ms or every 64 KiB,
so a busy worker makes a few write calls a second instead of one per request.
SIGUSR1 reopens the file (for logrotate).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.http1.request import Request

_FLUSH_BYTES = 64 * 1024
_FLUSH_SECONDS = 0.2


class AccessLog:
    def __init__(self, loop: asyncio.AbstractEventLoop, fmt: str, path: str) -> None:
        self.loop = loop
        self.format = fmt
        self.path = path
        self.fd = -1
        self.own_fd = False
        self.buffer: list[bytes] = []
        self.size = 0
        self.handle: asyncio.TimerHandle | None = None
        self._second = -1
        self._iso = ""
        self._clf = ""
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

    def _stamps(self) -> tuple[str, str]:
        now = int(time.time())
        if now != self._second:
            self._second = now
            t = time.gmtime(now)
            self._iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", t)
            self._clf = time.strftime("%d/%b/%Y:%H:%M:%S +0000", t)
        return self._iso, self._clf

    def write(self, req: Request, now: float) -> None:
        iso, clf = self._stamps()
        duration = now - req.start if req.start else 0.0
        target = req.target.decode("latin-1") if req.target else "-"
        user_agent, referer = _agent_and_referer(req)
        if self.format == "json":
            # Built as text rather than through json.dumps: this runs once per
            # request, and only the free-form fields need escaping.
            upstream_ms = f"{req.upstream_time * 1000:.3f}" if req.upstream_time >= 0 else "null"
            # method and host were validated by the parser (token and host
            # characters only): they need no escaping
            line = (
                f'{{"time":"{iso}","request_id":{_js(req.request_id)},'
                f'"client_ip":"{req.client_ip}","method":"{req.method}",'
                f'"host":"{req.host}","target":{_js(target)},'
                f'"protocol":"HTTP/{req.version}","status":{req.status},'
                f'"bytes_in":{req.body_bytes},"bytes_out":{req.bytes_out},'
                f'"duration_ms":{duration * 1000:.3f},"route":{_js(req.route_name)},'
                f'"consumer":{_js_or_null(req.consumer or None)},'
                f'"upstream":{_js(req.upstream)},"upstream_ms":{upstream_ms},'
                f'"user_agent":{_js_or_null(user_agent)},"referer":{_js_or_null(referer)}}}\n'
            )
        else:
            upstream_ms = f"{req.upstream_time:.3f}" if req.upstream_time >= 0 else "-"
            line = (
                f'{req.client_ip} - {_q(req.consumer) or "-"} [{clf}] '
                f'"{req.method} {_q(target)} HTTP/{req.version}" '
                f"{req.status} {req.bytes_out} "
                f'"{_q(referer or "-")}" "{_q(user_agent or "-")}" '
                f"rid={req.request_id} route={_q(req.route_name) or '-'} "
                f"upstream={req.upstream or '-'} rt={duration:.3f} urt={upstream_ms}\n"
            )
        data = line.encode("utf-8", "replace")
        self.buffer.append(data)
        self.size += len(data)
        if self.size >= _FLUSH_BYTES:
            self.flush()
        elif self.handle is None:
            self.handle = self.loop.call_later(_FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        if not self.buffer:
            return
        data = b"".join(self.buffer)
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


def _agent_and_referer(req: Request) -> tuple[str | None, str | None]:
    agent = referer = None
    for lname, _, value in req.headers:
        if lname == b"user-agent":
            agent = value.decode("latin-1")
        elif lname == b"referer":
            referer = value.decode("latin-1")
    return agent, referer


def _js(value: str) -> str:
    """A JSON string literal; plain printable ASCII skips the encoder."""
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return '"' + value + '"'
    return json.dumps(value)


def _js_or_null(value: str | None) -> str:
    return "null" if value is None else _js(value)


def _q(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
