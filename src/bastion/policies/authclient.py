"""A small asyncio HTTP/1.1 client for the auth policies' side requests (JWKS documents,
forward-auth checks).

It is deliberately separate from the proxy's upstream pools: these requests are GETs with
small answers, made by a policy and not by a route, and they keep a few idle connections of
their own so that a forward-auth check costs no TCP handshake on a busy route.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from bastion.keymaterial.tls_client import client_context
from bastion.tls.client import describe_tls_error

__all__ = ["Answer", "AuthClient", "AuthClientError", "loggable_url"]

_MAX_HEAD = 32 * 1024


def loggable_url(url: str) -> str:
    """The URL without user info or query string, which may hold a credential."""
    parts = urlsplit(url)
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class AuthClientError(Exception):
    """The service could not be reached or answered something that is not HTTP."""


@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]  # (lowercase name, value)
    body: bytes

    def header(self, lname: bytes) -> bytes | None:
        for name, value in self.headers:
            if name == lname:
                return value
        return None


class AuthClient:
    """GET requests to one base URL, with up to ``max_idle`` kept-alive connections."""

    def __init__(
        self,
        url: str,
        max_body: int = 1 << 20,
        max_idle: int = 8,
        ca: str | None = None,
        setting: str = "auth",
    ) -> None:
        """``ca``: a PEM bundle trusted instead of the system's store (https only);
        ``setting``: the config key of these options, named in TLS error messages."""
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default_port = 443 if self.https else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if self.port == default_port else f"{host}:{self.port}"
        self.max_body = max_body
        self.max_idle = max_idle
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._ssl: ssl.SSLContext | None = client_context(True, ca) if self.https else None
        self.setting = setting

    async def get(self, headers: list[tuple[str, bytes]], timeout: float) -> Answer:
        """One GET of the URL; raises AuthClientError or TimeoutError."""
        head = [f"GET {self.target} HTTP/1.1\r\nHost: {self.host_header}\r\n".encode()]
        for name, value in headers:
            head.append(name.encode() + b": " + value + b"\r\n")
        head.append(b"\r\n")
        request = b"".join(head)
        async with asyncio.timeout(timeout):
            # a kept-alive connection may have been closed by the server meanwhile: then
            # the request is tried on a fresh connection
            while self._idle:
                reader, writer = self._idle.pop()
                try:
                    return await self._exchange(reader, writer, request)
                except (AuthClientError, OSError):
                    writer.close()
                except BaseException:  # timeout or cancellation: the answer is lost
                    writer.close()
                    raise
            try:
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, ssl=self._ssl, limit=_MAX_HEAD
                )
            except ssl.SSLError as exc:
                raise AuthClientError(describe_tls_error(exc, self.setting, "server")) from None
            except OSError as exc:
                raise AuthClientError(exc.strerror or str(exc)) from None
            try:
                return await self._exchange(reader, writer, request)
            except OSError as exc:
                writer.close()
                raise AuthClientError(exc.strerror or str(exc)) from None
            except BaseException:
                writer.close()
                raise

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
    ) -> Answer:
        writer.write(request)
        await writer.drain()
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            raise AuthClientError("no valid HTTP answer") from None
        lines = raw[:-4].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            writer.close()
            raise AuthClientError("no valid HTTP answer")
        status = int(parts[1])
        headers: list[tuple[bytes, bytes]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                writer.close()
                raise AuthClientError("malformed header in the answer")
            headers.append((name.strip().lower(), value.strip()))
        answer = Answer(status, headers, b"")
        keep = parts[0] == b"HTTP/1.1" and (answer.header(b"connection") or b"").lower() != b"close"
        try:
            answer.body, delimited = await self._body(reader, answer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            writer.close()
            raise AuthClientError("answer body cut short or malformed") from None
        keep = keep and delimited
        if keep and len(self._idle) < self.max_idle:
            self._idle.append((reader, writer))
        else:
            writer.close()
        return answer

    async def _body(self, reader: asyncio.StreamReader, answer: Answer) -> tuple[bytes, bool]:
        """The body, and whether its end was known without the connection closing."""
        if answer.status in (204, 304) or 100 <= answer.status < 200:
            return b"", True
        te = answer.header(b"transfer-encoding")
        if te is not None and b"chunked" in te.lower():
            chunks: list[bytes] = []
            size_total = 0
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass
                    return b"".join(chunks), True
                size_total += size
                if size_total > self.max_body:
                    raise ValueError("too large")
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
        length = answer.header(b"content-length")
        if length is not None:
            n = int(length)
            if n > self.max_body:
                raise ValueError("too large")
            return await reader.readexactly(n), True
        data = await reader.read(self.max_body + 1)
        rest = data
        while rest and len(data) <= self.max_body:
            rest = await reader.read(self.max_body + 1 - len(data))
            data += rest
        if len(data) > self.max_body:
            raise ValueError("too large")
        return data, False

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()
