"""The cache's copy of a response the proxy exchange streams to a client."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bastion.cache.entries import build_entry, field_map
from bastion.cache.key import parse_vary, variant_key
from bastion.cache.policy import decide

if TYPE_CHECKING:
    from bastion.cache.handler import CachingHandler
    from bastion.http.request import Request
    from bastion.state.cache import Entry

_AUTHORIZATION = b"authorization"


class Recorder:
    """Fed by the proxy exchange with the backend's response; stores it when the rules
    allow and it fits. The leader of a coalesced miss releases its waiters at the end."""

    __slots__ = (
        "chunks",
        "decision",
        "fields",
        "handler",
        "headers",
        "key",
        "now",
        "over",
        "own",
        "primary",
        "req",
        "size",
        "status",
        "status_line",
        "stored",
        "target",
        "url",
    )

    def __init__(
        self,
        handler: CachingHandler,
        key: str | None,
        primary: str,
        own: str | None,
        url: str,
        req: Request,
        now: float,
    ) -> None:
        self.handler = handler
        self.key = key  # set for the leader of waiters
        self.primary = primary  # the key shared by everybody
        self.own = own  # the request's consumer's key (authenticated routes)
        self.target = primary  # where the answer is stored
        self.url = url
        self.req = req
        self.now = now
        self.decision: Any = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.status = 0
        self.status_line = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.fields: dict[str, str] = {}
        self.stored: Entry | None = None
        self.over = False

    def on_head(self, status: int, status_line: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        handler = self.handler
        fields = field_map(headers)
        consumers = handler.consumers
        # RFC 9111 §3.5 where the gateway does not know who asks; where it does (the
        # route's auth checked the request), the answer is kept for that consumer alone
        authorized = consumers is None and any(n == _AUTHORIZATION for n, _, _ in self.req.headers)
        clock = handler.now  # (a local: see CachingHandler.now)
        decision = decide(self.req.method, status, fields, handler.rules, authorized, clock())
        if decision.store and consumers is not None and (consumers.always or not decision.shared):
            if self.own is None:
                return  # a request without an identity gets no entry of its own
            self.target = self.own
        if decision.store:
            self.decision = decision
            self.status = status
            self.status_line = status_line
            self.headers = list(headers)
            self.fields = fields

    def on_body(self, data: bytes) -> None:
        if self.decision is None:
            return
        self.size += len(data)
        if self.size > self.handler.store.max_object_size:
            self.decision = None  # too large: streamed through, not kept
            self.chunks = []
            return
        self.chunks.append(data)

    def on_end(self) -> None:
        if self.over:
            return
        self.over = True
        decision = self.decision
        handler = self.handler
        if decision is not None:
            clock = handler.now
            now = clock()
            fields = self.fields
            vary = parse_vary(fields.get("vary", ""))
            key = variant_key(self.target, vary, self.req.headers)
            entry = build_entry(
                key,
                self.url,
                self.status_line,
                self.status,
                self.headers,
                fields,
                b"".join(self.chunks),
                decision,
                now,
            )
            self.chunks = []
            handler.stored(self.target, entry)
            self.stored = entry
        if self.key is not None:
            handler.release(self.key)

    def on_abort(self) -> None:
        if self.over:
            return
        self.over = True
        self.chunks = []
        if self.key is not None:
            self.handler.release(self.key)
