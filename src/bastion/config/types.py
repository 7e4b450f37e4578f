"""Pydantic field types for the config models.

Each type wraps a pure parser (``units``, ``addresses``, ``matching``) so that the model stores
the parsed value (seconds, bytes, dataclasses), serialises back to the text form, and shows the
text form in the JSON schema.
"""

from __future__ import annotations

import ipaddress
import os
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
)

from bastion.config.addresses import Address, UpstreamAddress, parse_address, parse_upstream
from bastion.config.matching import (
    RoutePath,
    parse_host_pattern,
    parse_method,
    parse_route_path,
)
from bastion.config.show import show
from bastion.config.units import parse_duration, parse_size

__all__ = [
    "BASE_DIR_KEY",
    "Duration",
    "HeaderValue",
    "HostPattern",
    "IndexName",
    "ListenAddress",
    "Method",
    "Network",
    "RelativePath",
    "RoutePathType",
    "Size",
    "Upstream",
    "WorkerCount",
    "base_dir",
    "one_or_many",
    "section",
    "string_or_list_schema",
]

BASE_DIR_KEY = "base_dir"
"""Key in the pydantic validation context holding the directory relative paths resolve from."""


def base_dir(info: ValidationInfo) -> Path:
    """The directory relative paths resolve against: the config file's, else the cwd."""
    context = info.context if isinstance(info.context, dict) else {}
    directory = context.get(BASE_DIR_KEY)
    return Path(directory) if directory is not None else Path.cwd()


def section(description: str) -> Any:
    """The field of a nested section that may be left out of the file: its default is
    ``{}``, validated by the enclosing model's validator exactly as the section written
    empty would be.

    The models are built lazily (``defer_build``): a worker builds only the root's
    validator, with every section inlined. A default made by calling the section's model
    (``Limits()``) would make pydantic build that model's own validator and serializer
    too, memory a worker does not otherwise need."""
    return Field(default_factory=dict, validate_default=True, description=description)


def one_or_many(value: Any) -> Any:
    """Let a single string stand for a one-item list (``http: :8080``, ``index: index.html``)."""
    return [value] if isinstance(value, str) else value


def string_or_list_schema(item: dict[str, Any]) -> WithJsonSchema:
    """JSON schema for a field that takes one ``item`` or a list of them."""
    return WithJsonSchema({"anyOf": [item, {"type": "array", "items": item}]})


def _parse_network(value: object) -> IPv4Network | IPv6Network:
    if isinstance(value, IPv4Network | IPv6Network):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected an IP address or CIDR like 10.0.0.0/8, got {show(value)}")
    try:
        # strict=False: "10.1.2.3/8" means 10.0.0.0/8 rather than an error.
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError(
            f"expected an IP address or CIDR like 10.0.0.0/8 or ::1, got {show(value)}"
        ) from None


def _parse_workers(value: object) -> object:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return os.cpu_count() or 1
    return value


def _check_header_value(value: str) -> str:
    # The value ends up in a response header: a CR or LF would let it inject headers.
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
        raise ValueError("must not contain control characters such as line breaks")
    return value


def _check_file_name(value: str) -> str:
    if not value or "/" in value or "\\" in value or value in (".", ".."):
        raise ValueError(f"an index entry must be a plain file name, got {show(value)}")
    return value


def _resolve_path(value: object, info: ValidationInfo) -> object:
    if not isinstance(value, str) or not value.strip():
        return value
    path = Path(value.strip()).expanduser()
    if not path.is_absolute():
        path = base_dir(info) / path
    return str(path.resolve())


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?(ms|s|m|h|d|w|y)?)+\s*$"},
            ],
            "description": "seconds, or a duration like 250ms, 5s, 2m, 1h30m, 1d",
        }
    ),
]
"""Seconds (float). Accepts a number of seconds or ``250ms``, ``5s``, ``2m``, ``1h30m``, ``1d``."""

Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {
                    "type": "string",
                    "pattern": r"^\s*\d+(\.\d+)?\s*(B|[kKmMgG]|[KMG]iB|[KMG]B)?\s*$",
                },
            ],
            "description": "bytes, or a size like 16KiB, 10MiB, 1GiB, 16KB (SI), 16k (=KiB)",
        }
    ),
]
"""Bytes (int). Accepts an integer or ``16KiB``, ``10MiB``, ``16KB`` (=16000), ``16k`` (=16384)."""

ListenAddress = Annotated[
    Address,
    PlainValidator(parse_address),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "examples": ["127.0.0.1:8080", "[::1]:8080", ":8080"]}),
]

Upstream = Annotated[
    UpstreamAddress,
    PlainValidator(parse_upstream),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "examples": ["http://127.0.0.1:8000", "unix:/run/app.sock"]}),
]

RoutePathType = Annotated[
    RoutePath,
    PlainValidator(parse_route_path),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "examples": ["/api/", "= /health", "~ ^/v[0-9]+/"]}),
]

HostPattern = Annotated[str, BeforeValidator(parse_host_pattern)]
Method = Annotated[str, BeforeValidator(parse_method)]

Network = Annotated[
    IPv4Network | IPv6Network,
    BeforeValidator(_parse_network),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "examples": ["10.0.0.0/8", "127.0.0.1", "::1"]}),
]

WorkerCount = Annotated[
    int,
    BeforeValidator(_parse_workers),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 1}, {"const": "auto"}]}),
]

HeaderValue = Annotated[str, AfterValidator(_check_header_value)]
"""A string sent in a response header: no control characters (no header injection)."""

IndexName = Annotated[str, AfterValidator(_check_file_name)]
"""A plain file name (no directory part) looked up inside a served directory."""

RelativePath = Annotated[str, BeforeValidator(_resolve_path)]
"""A file path; relative paths resolve against the config file's directory, stored absolute."""
