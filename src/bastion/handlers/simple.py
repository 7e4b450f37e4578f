"""`redirect:` and `respond:` route actions."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from bastion.http.router import Handler
from bastion.state.challenges import CHALLENGE_PREFIX

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from bastion.config.sites import Redirect, Respond
    from bastion.http.downstream import Downstream
    from bastion.http.request import Request
    from bastion.state.challenges import ChallengeTokens

log = logging.getLogger("bastion.acme")


class RedirectHandler(Handler):
    __slots__ = ("keep_rest", "prefix", "status", "to")

    def __init__(self, config: Redirect, prefix: str | None) -> None:
        self.to = config.to
        self.status = config.status
        # "/old/" → "/api/" also sends "/old/x?y" to "/api/x?y"
        self.prefix = prefix
        self.keep_rest = prefix is not None and config.to.endswith("/")

    def handle(self, client: Downstream, req: Request) -> None:
        location = self.to
        if self.keep_rest and self.prefix is not None:
            # the rest of the canonical path (the route matched on it, already escaped):
            # the raw path may spell the prefix differently ("/%6Fld/") or carry "//"
            # that would turn a "/" target into a protocol-relative URL
            location += req.path[len(self.prefix) :]
            if req.query:
                location += "?" + req.query
        headers = b"Location: " + location.encode("utf-8") + b"\r\n"
        client.respond(req, self.status, b"", b"", headers)


class HttpsRedirectHandler(Handler):
    """A plain-HTTP request for a site with TLS: the same URL over HTTPS.

    301 for GET and HEAD, 308 otherwise (308 keeps the method and body). The path is sent
    as received (raw, before normalization), with its query.
    """

    __slots__ = ("challenges", "lookup_async", "port_suffix")

    def __init__(self, port: int | None, challenges: ChallengeTokens | None = None) -> None:
        self.port_suffix = "" if port is None else f":{port}"
        # ACME HTTP-01 answers, only when some site gets its certificate through ACME
        self.challenges = challenges
        # a store shared between instances (Redis) is read without blocking the loop
        self.lookup_async: Callable[[str], Awaitable[bytes | None]] | None = getattr(
            challenges, "lookup_async", None
        )

    def handle(self, client: Downstream, req: Request) -> None:
        if self.challenges is not None and req.path.startswith(CHALLENGE_PREFIX):
            token = req.path[len(CHALLENGE_PREFIX) :]
            if self.lookup_async is not None:
                task = asyncio.get_running_loop().create_task(self._answer(client, req, token))
                _ANSWERING.add(task)  # (held until done: a task nobody holds may be collected)
                task.add_done_callback(_ANSWERING.discard)
                return
            answer = self.challenges.lookup(token)
            if answer is not None:
                _challenge_answered(client, req, answer)
                return
        self._redirect(client, req)

    async def _answer(self, client: Downstream, req: Request, token: str) -> None:
        assert self.lookup_async is not None
        answer = await self.lookup_async(token)
        if answer is not None:
            _challenge_answered(client, req, answer)
        else:
            self._redirect(client, req)

    def _redirect(self, client: Downstream, req: Request) -> None:
        host = req.host
        if ":" in host:
            host = f"[{host}]"
        path = req.raw_path if req.raw_path.startswith("/") else "/"  # OPTIONS *
        location = f"https://{host}{self.port_suffix}{path}"
        if req.query:
            location += "?" + req.query
        status = 301 if req.method in ("GET", "HEAD") else 308
        headers = b"Location: " + location.encode("latin-1") + b"\r\n"
        client.respond(req, status, b"", b"", headers)


_ANSWERING: set[asyncio.Task[None]] = set()


def _challenge_answered(client: Downstream, req: Request, answer: bytes) -> None:
    # which instance answered the CA is worth knowing when instances share the orders
    log.info("acme: answered the http-01 challenge %s", req.path[len(CHALLENGE_PREFIX) :][:12])
    client.respond(req, 200, answer, b"application/octet-stream")


class RespondHandler(Handler):
    __slots__ = ("body", "content_type", "status")

    def __init__(self, config: Respond) -> None:
        self.status = config.status
        self.body = config.body.encode()
        self.content_type = config.content_type.encode()

    def handle(self, client: Downstream, req: Request) -> None:
        client.respond(req, self.status, self.body, self.content_type)
