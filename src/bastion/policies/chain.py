"""Run a route's policies around its handler.

Compiled only for routes that have policies: a route without any calls its handler
directly. Synchronous policies run inline; at the first asynchronous one the rest of
the chain continues in a task, with the request body held (and the client paused)
meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bastion.http.context import Handler
from bastion.http.downstream import Downstream, Pause
from bastion.http.request import Request
from bastion.http.status import REASONS
from bastion.observe.events import EventCounters
from bastion.policies.base import Answer, Denied, Outcome, RequestPolicy
from bastion.policies.fields import FieldEdit

log = logging.getLogger("bastion.policies")
_BUFFER = Pause.BUFFER  # looked up once, not per request


class PolicyHandler:
    """``checks`` are the bound ``on_request`` of the synchronous policies before the first
    asynchronous one (at ``policies[first_async]``); ``drops`` the client fields that the
    policies never forward (the same on every request: one shared frozenset)."""

    __slots__ = ("checks", "drops", "first_async", "head_edit", "inner", "inner_handle",
                 "on_head", "policies", "waits")  # fmt: skip

    def __init__(
        self,
        inner: Handler,
        policies: tuple[RequestPolicy, ...],
        on_head: Callable[[Request, bytes, int], tuple[bytes, int]] | None,
        head_edit: FieldEdit | None = None,
    ) -> None:
        self.inner = inner
        self.policies = policies
        self.on_head = on_head
        self.head_edit = head_edit
        first_async = next((i for i, p in enumerate(policies) if p.is_async), len(policies))
        self.first_async = first_async
        self.waits = first_async < len(policies)  # an asynchronous policy: a task per request
        self.inner_handle = inner.handle
        self.checks = tuple(p.on_request for p in policies[:first_async])
        drops = frozenset().union(*(getattr(p, "upstream_drops", ()) for p in policies))
        self.drops = drops or None

    def handle(self, client: Downstream, req: Request) -> None:
        if self.on_head is not None:
            req.on_head = self.on_head
            req.head_edit = self.head_edit
        if self.drops is not None:
            req.upstream_drop = self.drops
        for check in self.checks:
            outcome: Outcome = check(req)  # type: ignore[assignment]
            if outcome is not None:
                answer(client, req, outcome, self.policies[self.checks.index(check)])
                return
        if self.waits:
            _Pending(self, client, req, self.first_async).start()
            return
        self.inner_handle(client, req)


def answer(client: Downstream, req: Request, outcome: Denied | Answer, policy: object) -> None:
    """Send what `policy` answered instead of the route; a refusal is recorded on the
    request for the observers (which policy, and why)."""
    if isinstance(outcome, Denied):
        req.refused_by = getattr(policy, "kind", None) or type(policy).__name__
        req.refusal = outcome.detail or REASONS.get(outcome.status, "")
        events: EventCounters | None = getattr(policy, "events", None)
        if events is not None:  # auth and rate limits: counted for the metrics
            if req.refused_by == "auth":
                scheme = outcome.scheme or getattr(policy, "auth_scheme", "") or "other"
                events.auth_failure(req.route_name, scheme, outcome.status, outcome.reason)
            elif outcome.status == 429:
                events.rate_limit_refusal(req.route_name, outcome.reason)
        client.problem(req, outcome.status, outcome.detail, headers=outcome.headers)
    else:
        client.respond(req, outcome.status, outcome.body, outcome.content_type, outcome.headers)


class _Pending:
    """The rest of a chain, waiting on an asynchronous policy."""

    def __init__(self, chain: PolicyHandler, client: Downstream, req: Request, index: int) -> None:
        self.chain = chain
        self.client = client
        self.req = req
        self.index = index
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        req = self.req
        if req.has_body and req.body_buffer is None and not req.body_done:
            req.body_buffer = []  # keep what arrives while the policy waits
        self.client.set_producer(self)  # told `client_gone` if the client leaves
        self.task = asyncio.get_running_loop().create_task(self._run())

    # a Producer: nothing to pause (no answer yet), cancelled if the client leaves
    def pause_producing(self) -> None:
        pass

    def resume_producing(self) -> None:
        pass

    def client_gone(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def _run(self) -> None:
        client, req = self.client, self.req
        try:
            for policy in self.chain.policies[self.index :]:
                if policy.is_async:
                    # a policy that reads the body (validation) needs the connection
                    if getattr(policy, "reads_body", False):
                        outcome = await policy.on_request(req, client)  # type: ignore[call-arg,misc]
                    else:
                        outcome = await policy.on_request(req)  # type: ignore[misc]
                else:
                    outcome = policy.on_request(req)
                if outcome is not None:
                    self._finish()
                    answer(client, req, outcome, policy)
                    return
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("request %s failed in a policy", req.request_id)
            self._finish()
            if not client.resp_started:
                client.problem(req, 500)
            return
        self._finish()
        if not client.open:
            return
        try:
            self.chain.inner.handle(client, req)
        except Exception:
            log.exception("request %s failed in its handler", req.request_id)
            if not client.resp_started:
                client.problem(req, 500)

    def _finish(self) -> None:
        self.task = None
        if self.client.producer is self:
            self.client.set_producer(None)
        self.client.resume_reading(_BUFFER)
