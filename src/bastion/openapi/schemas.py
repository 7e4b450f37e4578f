"""Schemas of a document compiled once into validators (jsonschema-rs), and the errors they
find turned into problem+json entries.

jsonschema-rs is used rather than fastjsonschema: it implements draft 2020-12 (the dialect of
OpenAPI 3.1) as well as draft 4 (close to OpenAPI 3.0's), resolves ``$ref`` across the whole
document through a registry, and reports each error with its instance path; validation runs
in Rust. OpenAPI 3.0's ``nullable`` is rewritten into a JSON Schema type list first.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import jsonschema_rs

__all__ = ["SchemaSet", "pointer", "resolve"]

_DOC_URI = "urn:bastion:openapi"
_MAX_MESSAGE = 200


def pointer(path: list[str | int] | tuple[str | int, ...]) -> str:
    """A JSON Pointer as a URI fragment (RFC 6901): ``#/items/0/price``; the root is ``#``."""
    return "#" + "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _nullable_to_types(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` as JSON Schema: null added to type (and enum)."""
    if isinstance(node, list):
        return [_nullable_to_types(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _nullable_to_types(value) for key, value in node.items()}
    if out.get("nullable") is True:
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    return out


def resolve(doc: dict[str, Any], node: Any, depth: int = 0) -> Any:
    """Follow a local ``$ref`` (``#/components/...``) to what it names."""
    while isinstance(node, dict) and isinstance(node.get("$ref"), str) and depth < 32:
        ref: str = node["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"only local references are supported, not {ref!r}")
        target: Any = doc
        for token in ref[2:].split("/"):
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and token in target:
                target = target[token]
            elif isinstance(target, list) and token.isdigit() and int(token) < len(target):
                target = target[int(token)]
            else:
                raise ValueError(f"reference {ref!r} names nothing in the document")
        node = target
        depth += 1
    return node


class SchemaSet:
    """Validators for schemas of one document, sharing one registry for ``$ref``."""

    def __init__(self, doc: dict[str, Any]) -> None:
        version = str(doc.get("openapi", "3.1"))
        self.legacy = version.startswith("3.0")
        self.doc = _nullable_to_types(doc) if self.legacy else doc
        self.draft = jsonschema_rs.Draft4 if self.legacy else jsonschema_rs.Draft202012
        self.cls = (
            jsonschema_rs.Draft4Validator if self.legacy else jsonschema_rs.Draft202012Validator
        )
        self.registry = jsonschema_rs.Registry([(_DOC_URI, self.doc)], draft=self.draft)

    def compile(self, location: list[str]) -> Any:
        """A validator for the schema found at `location` (keys from the document root)."""
        # a URI fragment: pointer tokens percent-encoded ({id} in a path template)
        ref = "#/" + "/".join(quote(_escape(k), safe="~!$&'()*+,;=:@") for k in location)
        try:
            return self.cls(
                {"$ref": _DOC_URI + ref},
                registry=self.registry,
                validate_formats=True,
                ignore_unknown_formats=True,
            )
        except (ValueError, jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError) as exc:
            raise ValueError(f"the schema at {ref} is not valid: {exc}") from None


def compile_plain(schema: Any) -> Any:
    """A validator for a standalone JSON Schema (its ``$schema`` picks the draft; 2020-12
    when it has none)."""
    try:
        if isinstance(schema, dict) and "$schema" in schema:
            return jsonschema_rs.validator_for(
                schema, validate_formats=True, ignore_unknown_formats=True
            )
        return jsonschema_rs.Draft202012Validator(
            schema, validate_formats=True, ignore_unknown_formats=True
        )
    except (ValueError, jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError) as exc:
        raise ValueError(f"the JSON Schema is not valid: {exc}") from None


def body_errors(validator: Any, value: Any, limit: int) -> list[dict[str, str]]:
    """Each way `value` fails `validator`, as ``{"detail", "pointer"}``, at most `limit`."""
    if validator.is_valid(value):  # the common case, without building error objects
        return []
    errors: list[dict[str, str]] = []
    for error in validator.iter_errors(value):
        errors.append({"detail": _short(error.message), "pointer": pointer(error.instance_path)})
        if len(errors) >= limit:
            break
    return errors


def _short(message: str) -> str:
    # a message quotes the offending value: a client's megabyte string is not echoed back
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 1] + "…"
