"""Request validation (OpenAPI document or plain JSON Schema) and per-route body limits.

Everything is compiled when the plan is built: the operation table, one validator per
parameter and per JSON body. A request costs a path lookup, the checks of its operation's
parameters, and, only when its operation has a JSON body schema, reading the body (at most
the route's limit) and one validation. The body is then replayed to the route's handler.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bastion.config.errors import ConfigError, ConfigIssue
from bastion.http.status import REASONS
from bastion.openapi.operations import (
    Operation,
    OperationTable,
    cookie_values,
    query_values,
)
from bastion.openapi.schemas import SchemaSet, body_errors, compile_plain
from bastion.openapi.source import SpecUnavailable, load_document, shown
from bastion.policies.base import Answer, Denied, Outcome, read_body

if TYPE_CHECKING:
    from bastion.config.policy_body import Validation
    from bastion.config.sites import Route
    from bastion.http.downstream import Downstream
    from bastion.http.request import Request
    from bastion.plan.context import BuildContext, RouteSpec

__all__ = ["BodyPolicy", "build_body_policy"]

log = logging.getLogger("bastion.policies")

_MAX_ERRORS = 20
_RETRY_INTERVAL = 5  # seconds between two fetches of a document that is not available
_TOO_LARGE = "The request body is larger than this route accepts ({} bytes)."
_PROBLEM = b"application/problem+json"


def _is_json(content_type: bytes | None) -> bool:
    if content_type is None:
        return False
    media = content_type.partition(b";")[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


def _param_error(location: str, name: str, detail: str) -> dict[str, str]:
    return {"detail": detail, "in": location, "parameter": name}


class BodyPolicy:
    """Request phase: body limit, then (when configured) validation of the request."""

    kind = "body"  # the config key it comes from: what metrics and logs call it

    is_async = True
    reads_body = True

    def __init__(
        self,
        max_body: int,
        read_limit: int,
        table: OperationTable | None = None,
        plain: Any = None,
        unknown: int | str = 404,
        base_path: str = "",
        unavailable: Callable[[], OperationTable] | None = None,
    ) -> None:
        self.max_body = max_body  # 0: no route limit (the server's still applies)
        self.read_limit = read_limit
        self.table = table
        self.plain = plain
        self.unknown = unknown
        self.base_path = base_path
        # while the document could not be had: how to try again (in a thread), and when
        self.unavailable = unavailable
        self.retry: asyncio.Future[OperationTable] | None = None
        self.next_try = 0.0

    async def on_request(self, req: Request, client: Downstream | None = None) -> Outcome:
        assert client is not None  # the chain passes it to a policy that reads_body
        max_body = self.max_body
        if max_body and req.content_length is not None and req.content_length > max_body:
            return Denied(413, _TOO_LARGE.format(max_body))
        if self.unavailable is not None:
            self._try_again()
            return Denied(
                503,
                "The API description of this route is not available yet.",
                b"Retry-After: %d\r\n" % _RETRY_INTERVAL,
            )
        if self.table is not None:
            return await self._operation(req, client)
        if self.plain is not None:
            return await self._plain(req, client)
        if max_body and req.chunked:
            # no length announced: read it (at most max_body) to enforce the limit
            outcome = await read_body(client, req, max_body)
            if isinstance(outcome, Denied) or len(outcome) > max_body:
                return Denied(413, _TOO_LARGE.format(max_body))
        return None

    def _try_again(self) -> None:
        """Fetch the document again in a thread, at most once per interval: the backend
        that serves it may have started since. Requests meanwhile get 503."""
        loop = asyncio.get_running_loop()
        if self.retry is not None or loop.time() < self.next_try or self.unavailable is None:
            return
        self.next_try = loop.time() + _RETRY_INTERVAL
        self.retry = loop.run_in_executor(None, self.unavailable)
        self.retry.add_done_callback(self._tried)

    def _tried(self, future: asyncio.Future[OperationTable]) -> None:
        self.retry = None
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            log.info("the OpenAPI document is still not available: %s", error)
            return
        self.table = future.result()
        self.unavailable = None
        log.info("the OpenAPI document is available: requests are validated")

    # ------------------------------------------------------------------ JSON Schema
    async def _plain(self, req: Request, client: Downstream) -> Outcome:
        if not req.has_body:
            if req.method in ("POST", "PUT", "PATCH"):
                return self._invalid(req, [{"detail": "A JSON body is required.", "pointer": "#"}])
            return None
        if not _is_json(req.header(b"content-type")):
            return Denied(415, "The request body must be JSON (Content-Type application/json).")
        return await self._check_body(req, client, self.plain)

    async def _check_body(self, req: Request, client: Downstream, validator: Any) -> Outcome:
        body = await read_body(client, req, self.read_limit)
        # (a body that had fully arrived before the read is returned whole: measure it too)
        if isinstance(body, Denied) or len(body) > self.read_limit:
            return Denied(413, _TOO_LARGE.format(self.read_limit))
        try:
            value = json.loads(body)
        except (ValueError, RecursionError) as exc:
            if isinstance(exc, json.JSONDecodeError):
                reason = exc.msg
            elif isinstance(exc, RecursionError):
                reason = "nested too deeply"
            else:
                reason = "not UTF-8 text"
            return self._invalid(
                req, [{"detail": f"The body is not valid JSON: {reason}.", "pointer": "#"}]
            )
        errors = body_errors(validator, value, _MAX_ERRORS)
        return self._invalid(req, errors) if errors else None

    # ------------------------------------------------------------------ OpenAPI
    async def _operation(self, req: Request, client: Downstream) -> Outcome:
        assert self.table is not None
        path = req.path  # canonical: what the backend receives
        base = self.base_path
        if base:
            if path != base and not path.startswith(base + "/"):
                return self._unknown(None)
            path = path[len(base) :] or "/"
        item, path_values = self.table.find(path)
        if item is None:
            return self._unknown(None)
        operation = item.operations.get(req.method)
        if operation is None:
            return self._unknown(item.allow)
        errors = self._parameter_errors(req, operation, path_values)
        body = operation.body
        if body is None or not req.has_body:
            if body is not None and body.required:
                errors.append({"detail": "A request body is required.", "pointer": "#"})
            return self._invalid(req, errors) if errors else None
        content_type = req.header(b"content-type")
        if content_type is None:
            return Denied(415, "The request body has no Content-Type.")
        accepted, validator = body.find(content_type.decode("latin-1"))
        if not accepted:
            return Denied(415, "The request body's Content-Type is not one this operation accepts.")
        if errors:
            return self._invalid(req, errors)
        if validator is None:
            return None  # a media type the document describes without a JSON schema
        return await self._check_body(req, client, validator)

    def _parameter_errors(
        self, req: Request, operation: Operation, path_values: dict[str, str]
    ) -> list[dict[str, str]]:
        errors: list[dict[str, str]] = []
        query: dict[str, list[str]] | None = None
        cookies: dict[str, list[str]] | None = None
        for param in operation.parameters:
            location = param.location
            values: list[str] | None
            if location == "path":
                value = path_values.get(param.name)
                values = None if value is None else [value]
            elif location == "query":
                if query is None:
                    query = query_values(req.query)
                values = query.get(param.name)
            elif location == "header":
                raw = req.header(param.lname.encode("latin-1"))
                values = None if raw is None else [raw.decode("latin-1")]
            else:
                if cookies is None:
                    cookies = cookie_values(req.header(b"cookie"))
                values = cookies.get(param.name)
            if values is None:
                if param.required:
                    detail = f"The {location} parameter {param.name!r} is required."
                    errors.append(_param_error(location, param.name, detail))
                continue
            if param.validator is None:
                continue
            value = param.convert(values)
            if param.validator.is_valid(value):
                continue
            for error in param.validator.iter_errors(value):
                detail = error.message if len(error.message) <= 200 else error.message[:199] + "…"
                errors.append(_param_error(location, param.name, detail))
        return errors[:_MAX_ERRORS]

    def _unknown(self, allow: str | None) -> Outcome:
        if self.unknown == "pass":
            return None
        if self.unknown == 405 and allow is not None:
            return Denied(
                405,
                "The API does not describe this method on this path.",
                b"Allow: " + allow.encode() + b"\r\n",
            )
        return Denied(404, "The API does not describe this path and method.")

    @staticmethod
    def _invalid(req: Request, errors: list[dict[str, str]]) -> Answer:
        count = len(errors)
        doc: dict[str, object] = {
            "type": "about:blank",
            "title": REASONS.get(400, "Bad Request"),
            "status": 400,
            "detail": f"The request does not match the API description ({count} "
            f"error{'s' if count != 1 else ''}).",
            "errors": errors,
        }
        if req.request_id:
            doc["request_id"] = req.request_id
        body = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
        return Answer(400, body=body, content_type=_PROBLEM)


def build_body_policy(spec: RouteSpec, ctx: BuildContext) -> BodyPolicy | None:
    """The route's body policy, or None when it has neither max_body nor validation.

    Raises ValueError when a local document or schema is not valid (a config error)."""
    route = spec.route
    try:
        return _build(route, ctx)
    except ValueError as exc:
        assert route.validation is not None
        key = "openapi" if route.validation.openapi is not None else "json_schema"
        loc = (*spec.loc, "validation", key)
        raise ConfigError([ConfigIssue.at(ctx.source, loc, str(exc))]) from None


def _build(route: Route, ctx: BuildContext) -> BodyPolicy | None:
    settings = route.validation
    max_body = route.max_body or 0
    if settings is None:
        return BodyPolicy(max_body, max_body) if max_body else None
    read_limit = min(settings.max_body, max_body) if max_body else settings.max_body
    if settings.json_schema is not None:
        return BodyPolicy(max_body, read_limit, plain=_plain_schema(settings))
    assert settings.openapi is not None
    base = settings.base_path
    if base is None:
        base = route.path.value.rstrip("/") if route.strip_prefix else ""
    source, timeout, data_dir = settings.openapi, settings.fetch_timeout, ctx.data_dir
    checking = ctx.checking
    remote = source.startswith(("http://", "https://"))
    if checking == "offline" and remote:
        ctx.warnings.append(
            f"route {route.path.text}: the OpenAPI document {shown(source)} was not fetched "
            "(offline)"
        )
        return BodyPolicy(max_body, read_limit)

    def load() -> OperationTable:
        doc = load_document(source, data_dir, timeout, keep_copy=checking is None)
        return OperationTable(doc, SchemaSet(doc))

    table: OperationTable | None = None
    unavailable: Callable[[], OperationTable] | None = None
    try:
        table = load()
    except SpecUnavailable as exc:
        if checking is not None:
            # a check says now what the running gateway would answer with 503
            raise ValueError(
                f"{exc}; the gateway would answer this route's requests with 503 until it "
                "can be fetched (bastion check --offline skips the fetch)"
            ) from None
        # the backend may start after the gateway: its route answers 503 and tries again
        # now and then, rather than the whole configuration being refused
        log.error(
            "route %s: %s; its requests get 503 until it can be fetched", route.path.text, exc
        )
        unavailable = load
    return BodyPolicy(
        max_body,
        read_limit,
        table=table,
        unknown=settings.unknown_operation,
        base_path=base,
        unavailable=unavailable,
    )


def _plain_schema(settings: Validation) -> Any:
    schema = settings.json_schema
    if isinstance(schema, str):
        try:
            with open(schema, "rb") as handle:
                schema = json.load(handle)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read the JSON Schema {settings.json_schema}: {exc}") from None
    return compile_plain(schema)
