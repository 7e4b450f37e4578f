"""A document's operations compiled into a lookup table and per-operation checks.

Matching follows OpenAPI: a path without templates wins over a templated one; among templated
paths, the one with more literal segments wins. Parameters arrive as strings and are converted
to the type their schema names (``"5"`` → 5 for an integer) before validation, as a server
framework would.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, unquote

from bastion.openapi.schemas import SchemaSet, resolve

__all__ = ["METHODS", "Body", "Operation", "OperationTable", "Parameter"]

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_TEMPLATE = re.compile(r"\{([^{}/]+)\}")
_INT = re.compile(r"-?[0-9]+")
# header parameters OpenAPI says to ignore: the gateway and the protocol own them
_IGNORED_HEADERS = {"accept", "content-type", "authorization"}


class Parameter:
    __slots__ = (
        "explode",
        "item_kind",
        "kind",
        "lname",
        "location",
        "name",
        "required",
        "validator",
    )

    def __init__(self, spec: dict[str, Any], schema: Any, validator: Any) -> None:
        self.name: str = spec["name"]
        self.lname = self.name.lower()
        self.location: str = spec["in"]
        self.required = bool(spec.get("required", self.location == "path"))
        style = spec.get("style", "form" if self.location in ("query", "cookie") else "simple")
        self.explode = bool(spec.get("explode", style == "form"))
        self.kind = _kind(schema)
        self.item_kind = _kind(schema.get("items")) if isinstance(schema, dict) else None
        self.validator = validator

    def convert(self, values: list[str]) -> Any:
        """The raw string(s) as the value the schema describes (best effort)."""
        if self.kind == "array":
            items = values
            if len(values) == 1 and not (self.explode and self.location == "query"):
                items = values[0].split(",") if values[0] else []
            return [_scalar(v, self.item_kind) for v in items]
        return _scalar(values[-1], self.kind)


def _kind(schema: Any) -> str | None:
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if len(kinds) == 1 else None
    return kind if isinstance(kind, str) else None


def _scalar(value: str, kind: str | None) -> Any:
    if kind == "integer" and _INT.fullmatch(value):
        return int(value)
    if kind == "number":
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if number.is_integer() and _INT.fullmatch(value) else number
    if kind == "boolean" and value in ("true", "false"):
        return value == "true"
    if kind == "null" and value == "":
        return None
    return value


class Body:
    __slots__ = ("json_validators", "media_types", "required")

    def __init__(self) -> None:
        self.required = False
        # media type (lowercase, no parameters) → validator or None (accepted, not checked)
        self.media_types: dict[str, Any] = {}
        self.json_validators = False

    def find(self, content_type: str) -> tuple[bool, Any]:
        """(accepted, validator) for a request's Content-Type."""
        media = content_type.partition(";")[0].strip().lower()
        if media in self.media_types:
            return True, self.media_types[media]
        major = media.partition("/")[0]
        for candidate in (major + "/*", "*/*"):
            if candidate in self.media_types:
                return True, self.media_types[candidate]
        return False, None


class Operation:
    __slots__ = ("body", "key", "parameters")

    def __init__(self, key: str, parameters: list[Parameter], body: Body | None) -> None:
        self.key = key  # "POST /items/{id}", for the operational log
        self.parameters = parameters
        self.body = body


class _PathItem:
    __slots__ = ("allow", "operations")

    def __init__(self, operations: dict[str, Operation]) -> None:
        self.operations = operations
        self.allow = ", ".join(sorted(operations))


def _is_json(media: str) -> bool:
    return media == "application/json" or media.endswith("+json") or media == "*/*"


class OperationTable:
    """Path → operations; built once per plan."""

    def __init__(self, doc: dict[str, Any], schemas: SchemaSet) -> None:
        self.exact: dict[str, _PathItem] = {}
        # (segment count, literal segments, regex, param names, item), best candidates first
        templated: list[tuple[int, int, re.Pattern[str], list[str], _PathItem]] = []
        for template, raw_item in (doc.get("paths") or {}).items():
            item = resolve(doc, raw_item)
            if not isinstance(template, str) or not template.startswith("/"):
                raise ValueError(f"paths: {template!r} does not start with /")
            if not isinstance(item, dict):
                continue
            ops = {
                method.upper(): _operation(doc, schemas, template, method, item)
                for method in METHODS
                if isinstance(item.get(method), dict)
            }
            if "GET" in ops and "HEAD" not in ops:
                ops["HEAD"] = ops["GET"]
            path_item = _PathItem(ops)
            names = _TEMPLATE.findall(template)
            if not names:
                self.exact[template] = path_item
                continue
            segments = template.split("/")
            literal = sum(1 for s in segments if "{" not in s)
            pattern = "".join(
                re.escape(part) if i % 2 == 0 else "([^/]+)"
                for i, part in enumerate(_TEMPLATE.split(template))
            )
            templated.append(
                (len(segments), literal, re.compile(pattern + r"\Z"), names, path_item)
            )
        templated.sort(key=lambda t: -t[1])
        self.by_depth: dict[int, list[tuple[re.Pattern[str], list[str], _PathItem]]] = {}
        for depth, _, regex, names, item in templated:
            self.by_depth.setdefault(depth, []).append((regex, names, item))

    def find(self, path: str) -> tuple[_PathItem | None, dict[str, str]]:
        item = self.exact.get(path)
        if item is not None:
            return item, {}
        for regex, names, candidate in self.by_depth.get(path.count("/") + 1, ()):
            match = regex.match(path)
            if match is not None:
                return candidate, {
                    n: unquote(v, errors="replace")
                    for n, v in zip(names, match.groups(), strict=True)
                }
        return None, {}


def _operation(
    doc: dict[str, Any], schemas: SchemaSet, template: str, method: str, item: dict[str, Any]
) -> Operation:
    op = item[method]
    where = ["paths", template]
    merged: dict[tuple[str, str], tuple[dict[str, Any], list[str]]] = {}
    for base, entries in (
        (where, item.get("parameters")),
        ([*where, method], op.get("parameters")),
    ):
        for index, raw in enumerate(entries or []):
            spec = resolve(doc, raw)
            if not isinstance(spec, dict) or "name" not in spec or "in" not in spec:
                raise ValueError(f"{'/'.join(base)}: parameter {index} lacks name or in")
            location = [*base, "parameters", str(index)]
            if isinstance(raw, dict) and "$ref" in raw:
                location = raw["$ref"][2:].replace("~1", "/").replace("~0", "~").split("/")
            merged[
                (spec["name"].lower() if spec["in"] == "header" else spec["name"], spec["in"])
            ] = (
                spec,
                location,
            )
    parameters = []
    for spec, location in merged.values():
        if spec["in"] == "header" and spec["name"].lower() in _IGNORED_HEADERS:
            continue
        if spec["in"] not in ("path", "query", "header", "cookie"):
            continue
        schema = resolve(doc, spec.get("schema"))
        if "schema" in spec and _kind(schema) != "object":
            validator = schemas.compile([*location, "schema"])
        else:
            validator = None  # content-encoded or object parameters: presence only
        parameters.append(Parameter(spec, schema if isinstance(schema, dict) else {}, validator))
    body = None
    raw_body = op.get("requestBody")
    if raw_body is not None:
        spec = resolve(doc, raw_body)
        location = [*where, method, "requestBody"]
        if isinstance(raw_body, dict) and "$ref" in raw_body:
            location = raw_body["$ref"][2:].replace("~1", "/").replace("~0", "~").split("/")
        body = Body()
        body.required = bool(spec.get("required", False))
        for media, content in (spec.get("content") or {}).items():
            key = media.partition(";")[0].strip().lower()
            validator = None
            if _is_json(key) and isinstance(content, dict) and "schema" in content:
                validator = schemas.compile([*location, "content", media, "schema"])
                body.json_validators = True
            body.media_types[key] = validator
    return Operation(f"{method.upper()} {template}", parameters, body)


def query_values(query: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        values.setdefault(name, []).append(value)
    return values


def cookie_values(header: bytes | None) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    if header:
        for part in header.decode("latin-1").split(";"):
            name, eq, value = part.strip().partition("=")
            if eq:
                values.setdefault(name, []).append(value)
    return values
