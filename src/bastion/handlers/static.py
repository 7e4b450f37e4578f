"""The `static:` route action: files under a root directory.

Chosen behaviour (nginx `root` semantics): the whole request path is looked up
under the root; dot-files and anything that resolves outside the root (through
symlinks included) answer 404; directories serve their index file, and a
directory asked for without its trailing slash is redirected to it. GET and HEAD
only; ETag / Last-Modified with conditional requests, single byte ranges.
Files are read in 64 KiB chunks while the client keeps up, so a large download
holds one chunk in memory at a time.
"""

from __future__ import annotations

import mimetypes
import os
import stat
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import unquote

from bastion.http.dates import imf_fixdate, parse_http_date
from bastion.http.request import BODY_LENGTH, BODY_NONE
from bastion.http.router import Handler
from bastion.http.status import status_line

if TYPE_CHECKING:
    from bastion.config.sites import Static
    from bastion.http.downstream import Downstream
    from bastion.http.request import Request

CHUNK = 64 * 1024
_TEXT = ("text/", "application/javascript", "application/json", "image/svg+xml")


class StaticHandler(Handler):
    __slots__ = ("cache_control", "index", "root")

    def __init__(self, config: Static) -> None:
        self.root = os.path.realpath(config.root)
        self.index = list(config.index)
        self.cache_control = (
            b"Cache-Control: " + config.cache_control.encode() + b"\r\n"
            if config.cache_control
            else b""
        )

    def handle(self, client: Downstream, req: Request) -> None:
        if req.method not in ("GET", "HEAD"):
            client.problem(req, 405, headers=b"Allow: GET, HEAD\r\n")
            return
        # the canonical path is escaped; its dot segments are resolved and it holds no
        # escaped control character nor a %2F / %5C that hides a dot or empty segment,
        # so the decoded path cannot climb (the realpath check below holds anyway)
        path = unquote(req.path) if "%" in req.path else req.path
        if "/." in path or "\x00" in path:
            client.problem(req, 404)
            return
        full = os.path.realpath(os.path.join(self.root, path.lstrip("/")))
        if full != self.root and not full.startswith(self.root + os.sep):
            client.problem(req, 404)
            return
        try:
            st = os.stat(full)
            if stat.S_ISDIR(st.st_mode):
                if not path.endswith("/"):
                    # from the normalized path: the raw one may start with "//" (a
                    # protocol-relative URL: an open redirect to another host)
                    location = req.path + "/"
                    if req.query:
                        location += "?" + req.query
                    client.respond(req, 301, b"", b"", b"Location: " + location.encode() + b"\r\n")
                    return
                for name in self.index:
                    candidate = os.path.join(full, name)
                    try:
                        st = os.stat(candidate)
                    except OSError:
                        continue
                    if stat.S_ISREG(st.st_mode):
                        full = candidate
                        break
                else:
                    client.problem(req, 404)
                    return
            elif path.endswith("/"):
                client.problem(req, 404)  # a file asked for as a directory: "/a.txt/"
                return
            if not stat.S_ISREG(st.st_mode):
                client.problem(req, 404)
                return
            self._serve(client, req, full, st)
        except FileNotFoundError:
            client.problem(req, 404)
        except PermissionError:
            client.problem(req, 403, "The file cannot be read.")

    def _serve(self, client: Downstream, req: Request, full: str, st: os.stat_result) -> None:
        size = st.st_size
        etag = b'"%x-%x"' % (st.st_mtime_ns, size)
        modified = imf_fixdate(st.st_mtime).encode()
        validators = b"ETag: " + etag + b"\r\nLast-Modified: " + modified + b"\r\n"
        if _not_modified(req, etag, st.st_mtime):
            client.write_head(
                req,
                status_line(304) + client.date_header + validators + self.cache_control,
                BODY_NONE,
            )
            req.status = 304
            client.end_response()
            return
        ctype = mimetypes.guess_type(full)[0] or "application/octet-stream"
        if ctype.startswith(_TEXT):
            ctype += "; charset=utf-8"
        start, end, status = 0, size - 1, 200
        extra = b"Accept-Ranges: bytes\r\n"
        range_header = req.header(b"range")
        if range_header is not None and size > 0:
            parsed = _parse_range(range_header, size)
            if parsed is None:
                client.respond(req, 416, b"", b"", b"Content-Range: bytes */%d\r\n" % size)
                return
            if parsed is not _IGNORE:
                start, end = parsed
                status = 206
                extra += b"Content-Range: bytes %d-%d/%d\r\n" % (start, end, size)
        length = end - start + 1 if size else 0
        head = b"".join(
            (
                status_line(status),
                client.date_header,
                b"Content-Type: ",
                ctype.encode(),
                b"\r\n",
                b"Content-Length: %d\r\n" % length,
                validators,
                self.cache_control,
                extra,
            )
        )
        req.status = status
        if req.method == "HEAD" or length == 0:
            client.write_head(req, head, BODY_NONE)
            client.end_response()
            return
        client.write_head(req, head, BODY_LENGTH)
        handle = open(full, "rb")  # noqa: SIM115 - closed by the streamer
        handle.seek(start)
        _FileStreamer(client, handle, length).pump()


class _FileStreamer:
    """Copies a file to the client, pausing while the client's buffer is full."""

    __slots__ = ("client", "handle", "paused", "remaining")

    def __init__(self, client: Downstream, handle: BinaryIO, remaining: int) -> None:
        self.client = client
        self.handle = handle
        self.remaining = remaining
        self.paused = False
        client.set_producer(self)

    def pump(self) -> None:
        client = self.client
        while self.remaining > 0 and not self.paused:
            if not client.open:
                self.handle.close()
                return
            data = self.handle.read(min(CHUNK, self.remaining))
            if not data:
                break  # the file shrank under us
            self.remaining -= len(data)
            client.write_body(data)
            if client.write_paused:
                self.paused = True
        if self.paused and self.remaining > 0:
            return
        self.handle.close()
        if self.remaining > 0:
            client.abort()  # promised more bytes than the file now has
        else:
            client.end_response()

    def pause_producing(self) -> None:
        self.paused = True

    def client_gone(self) -> None:
        self.remaining = 0
        self.handle.close()

    def resume_producing(self) -> None:
        if self.paused:
            self.paused = False
            self.client.loop.call_soon(self.pump)


def _not_modified(req: Request, etag: bytes, mtime: float) -> bool:
    inm = req.header(b"if-none-match")
    if inm is not None:
        tags = [t.strip().removeprefix(b"W/") for t in inm.split(b",")]
        return b"*" in tags or etag in tags
    ims = req.header(b"if-modified-since")
    if ims is not None:
        since = parse_http_date(ims.decode("latin-1"))
        return since is not None and int(mtime) <= since
    return False


_IGNORE = (-1, -1)


def _parse_range(value: bytes, size: int) -> tuple[int, int] | None:
    """One "bytes=a-b" range (RFC 9110 §14.1.2); None when unsatisfiable, _IGNORE
    for what we answer with the whole file (several ranges, other units: allowed
    by the RFC)."""
    unit, _, spec = value.partition(b"=")
    if unit.strip().lower() != b"bytes" or b"," in spec:
        return _IGNORE
    first, _, last = spec.strip().partition(b"-")
    try:
        if not first:
            suffix = int(last)
            if suffix <= 0:
                return None
            return (max(0, size - suffix), size - 1)
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return _IGNORE
    if start >= size or end < start:
        return None
    return (start, min(end, size - 1))
