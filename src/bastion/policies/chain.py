"""Run a route's policies around its handler.

Compiled only for routes that have policies: a route without any calls its handler
directly. Synchronous policies run inline. From the first asynchronous one on, the rest
of the chain is a `_Rest`: each asynchronous policy starts its check and gives a future
(`Later`); a done-callback on it applies the outcome and goes on with the next policy or
the handler. A policy with ``begin`` (the Redis rate limit) gives the store's own reply
future: no task and no coroutine frames per request, which was a third of what counting
in Redis cost. A policy with only a coroutine (validation that reads the body, forward
auth, JWKS) runs it as a task, through the same steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Final

from bastion.http.downstream import Downstream, Pause
from bastion.http.request import Request
from bastion.http.router import Handler
from bastion.http.status import REASONS
from bastion.observe.events import EventCounters
from bastion.policies.base import Answer, Denied, Later, Outcome, RequestPolicy
from bastion.policies.fields import FieldEdit

log = logging.getLogger("bastion.policies")
_BUFFER: Final = Pause.BUFFER  # looked up once, not per request

# how the chain calls a policy after the first asynchronous one (`_Rest.run`)
_CALL: Final = 0  # on_request(req) or begin(req): an outcome, or a Later (begin only)
_TASK: Final = 1  # on_request(req) is a coroutine: run as a task
_TASK_BODY: Final = 2  # on_request(req, client) is a coroutine that reads the body
_Step = tuple[RequestPolicy, int, Callable[..., Any]]


def _step(policy: RequestPolicy) -> _Step:
    if not policy.is_async:
        return (policy, _CALL, policy.on_request)
    begin = getattr(policy, "begin", None)
    if begin is not None:
        return (policy, _CALL, begin)
    # a policy that reads the body (validation) needs the connection
    return (policy, _TASK_BODY if getattr(policy, "reads_body", False) else _TASK,
            policy.on_request)  # fmt: skip


class PolicyHandler(Handler):
    """``checks`` are the bound ``on_request`` of the synchronous policies before the first
    asynchronous one (at ``policies[first_async]``), ``rest`` how to call that one and
    those after it; ``drops`` the client fields that the policies never forward (the
    same on every request: one shared frozenset)."""

    __slots__ = ("checks", "drops", "first_async", "head_edit", "inner", "inner_handle",
                 "on_head", "policies", "rest", "waits")  # fmt: skip

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
        self.waits = first_async < len(policies)  # an asynchronous policy: a `_Rest` each
        self.inner_handle = inner.handle
        self.checks = tuple(p.on_request for p in policies[:first_async])
        self.rest = tuple(_step(p) for p in policies[first_async:])
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
            _Rest(self, client, req).run()
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


def _result(task: asyncio.Future[Any]) -> Outcome:
    """The ``then`` of a policy's coroutine run as a task: what it returned."""
    return task.result()


_RESULT: Final = _result  # (compiled, a C static: the function as a value, read per task)


class _Rest:
    """The rest of a chain, from its first asynchronous policy.

    While it waits it holds the request (a `Producer` of the client, its body buffered)
    only when something could arrive or go wrong meanwhile that it must hear of: see
    `_wait`."""

    __slots__ = ("chain", "client", "future", "gone", "held", "index", "policy", "req",
                 "then")  # fmt: skip

    def __init__(self, chain: PolicyHandler, client: Downstream, req: Request) -> None:
        self.chain = chain
        self.client = client
        self.req = req
        self.index = 0  # the next step of ``chain.rest``
        self.future: asyncio.Future[Any] | None = None  # what it waits on
        self.then: Callable[[asyncio.Future[Any]], Outcome | Later] | None = None
        self.policy: RequestPolicy | None = None  # whose check it waits on
        self.held = False  # the client's producer, body buffered
        self.gone = False  # the client left: results are ignored

    def run(self) -> None:
        """Go on from ``index``: until a policy waits or answers, then the handler."""
        req = self.req
        steps = self.chain.rest
        index = self.index
        policy: RequestPolicy | None = None
        try:
            while index < len(steps):
                policy, how, call = steps[index]
                index += 1
                if how == _CALL:
                    outcome = call(req)
                    if type(outcome) is tuple:
                        self.index = index
                        self._wait(policy, outcome)
                        return
                else:
                    work = call(req, self.client) if how == _TASK_BODY else call(req)
                    self.index = index
                    self._wait(policy, (self.client.loop.create_task(work), _RESULT))
                    return
                if outcome is not None:
                    self._answer(policy, outcome)
                    return
        except Exception:
            log.exception("request %s failed in a policy", req.request_id)
            self._failed()
            return
        self._handler()

    def _wait(self, policy: RequestPolicy, later: Later) -> None:
        future, then = later
        self.future = future
        self.then = then
        self.policy = policy
        if not self.held:
            req = self.req
            # Held: the client's producer (told `client_gone` when it leaves or the
            # connection gives the request up: a broken or late body), the body buffered
            # as it arrives, and reading resumed at the end (paused when that buffer is
            # full). A request without a body (nor Upgrade bytes to come) waiting on a
            # `begin` future needs none of it: nothing is buffered for it, so reading is
            # never paused for it (Pause.BUFFER is only for a body or an upgrade); the
            # connection gives such a request up only when the client is gone, which
            # `client.open` tells when the answer is ready; and the future ends on its
            # own within the policy's timeout (the Redis watchdog), so there is nothing
            # to cancel. A task (a policy's coroutine) is held always: it may wait long
            # (an HTTP call) and is cancelled when the client leaves.
            if req.has_body or req.upgrade is not None or isinstance(future, asyncio.Task):
                if req.has_body and req.body_buffer is None and not req.body_done:
                    req.body_buffer = []  # keep what arrives while the policy waits
                self.held = True
                self.client.set_producer(self)
        future.add_done_callback(self._resumed)

    def _resumed(self, future: asyncio.Future[Any]) -> None:
        then = self.then
        assert then is not None
        self.future = self.then = None
        if self.gone:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                then(future)  # (so that it releases what it holds)
            return
        try:
            outcome = then(future)
            if type(outcome) is tuple:
                assert self.policy is not None
                self._wait(self.policy, outcome)
                return
        except asyncio.CancelledError:
            self._done()  # cancelled by someone else (the loop closing): nothing to answer
            return
        except Exception:
            log.exception("request %s failed in a policy", self.req.request_id)
            self._failed()
            return
        if outcome is not None:
            self._answer(self.policy, outcome)  # type: ignore[arg-type]
            return
        self.run()

    # a Producer: nothing to pause (no answer yet), cancelled if the client leaves
    def pause_producing(self) -> None:
        pass

    def resume_producing(self) -> None:
        pass

    def client_gone(self) -> None:
        self.gone = True
        future = self.future
        if future is not None:
            future.cancel()  # its `then` still runs, on the cancelled future

    def _done(self) -> None:
        if self.held:
            self.held = False
            client = self.client
            if client.producer is self:
                client.set_producer(None)
            client.resume_reading(_BUFFER)

    def _answer(self, policy: RequestPolicy | None, outcome: Denied | Answer) -> None:
        self._done()
        if self.client.open:  # (unheld, nobody told it that the client left)
            answer(self.client, self.req, outcome, policy)

    def _failed(self) -> None:
        self._done()
        client = self.client
        if client.open and not client.resp_started:
            client.problem(self.req, 500)

    def _handler(self) -> None:
        self._done()
        client, req = self.client, self.req
        if not client.open:
            return
        try:
            self.chain.inner_handle(client, req)
        except Exception:
            log.exception("request %s failed in its handler", req.request_id)
            if not client.resp_started:
                client.problem(req, 500)
