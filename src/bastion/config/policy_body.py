"""Route settings for request bodies: validation against OpenAPI / JSON Schema, body limits,
and response compression."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bastion.config.types import Duration, Size, base_dir

__all__ = ["COMPRESSIBLE_TYPES", "Compress", "CompressSetting", "Validation"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


def _source(value: str, info: ValidationInfo) -> str:
    """A URL is kept as is; a file path is made absolute and must exist."""
    if value.startswith(("http://", "https://")):
        if not urlsplit(value).hostname:
            raise ValueError(f"{value!r} is not a valid URL")
        return value
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base_dir(info) / path
    if not path.is_file():
        raise ValueError(f"file {value} does not exist")
    return str(path)


class Validation(_Model):
    """Check requests against an OpenAPI description or a JSON Schema before forwarding."""

    openapi: str | None = Field(
        default=None,
        description="OpenAPI 3.0 or 3.1 document (JSON or YAML): a file, or an http(s) URL "
        "such as the backend's own /openapi.json, fetched at load and on reload.",
    )
    json_schema: str | dict[str, Any] | None = Field(
        default=None,
        description="JSON Schema for the request body (a file, or the schema inline): "
        "requests whose body does not match get 400.",
    )
    unknown_operation: Literal[404, 405, "pass"] = Field(
        default=404,
        description="Answer to a request the OpenAPI document does not describe: 404; 405 "
        "(with Allow) when the path exists with other methods, else 404; or pass to "
        "forward it unchecked.",
    )
    base_path: str | None = Field(
        default=None,
        description="Path prefix in front of the document's paths. Default: the route's "
        "prefix when strip_prefix is on, else none.",
    )
    max_body: Size = Field(
        default=1024 * 1024,
        gt=0,
        description="Largest body read for validation (the route's max_body when smaller); "
        "beyond it the client gets 413.",
    )
    fetch_timeout: Duration = Field(
        default=5.0, gt=0, description="Time allowed to fetch an OpenAPI document from a URL."
    )

    @field_validator("openapi")
    @classmethod
    def _openapi_source(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _source(value, info)

    @field_validator("json_schema")
    @classmethod
    def _schema_source(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            if value.startswith(("http://", "https://")):
                raise ValueError("a JSON Schema is a file or inline, not a URL")
            return _source(value, info)
        return value

    @field_validator("base_path")
    @classmethod
    def _base(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("/"):
            raise ValueError("base_path starts with /")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_source(self) -> Validation:
        if (self.openapi is None) == (self.json_schema is None):
            raise ValueError("give exactly one of openapi and json_schema")
        return self


COMPRESSIBLE_TYPES = (
    "text/*",
    "application/json",
    "application/*+json",
    "application/javascript",
    "application/xml",
    "application/*+xml",
    "application/wasm",
    "application/x-ndjson",
    "image/svg+xml",
)


class Compress(_Model):
    """Compress answers for clients that accept it."""

    enabled: bool = Field(
        default=True, description="false turns compression off (on a route: the site's too)."
    )
    algorithms: list[Literal["zstd", "br", "gzip"]] = Field(
        default=["zstd", "br", "gzip"],
        min_length=1,
        description="Encodings offered, in the gateway's order of preference among those "
        "the client accepts with the same q-value.",
    )
    types: list[str] = Field(
        default=list(COMPRESSIBLE_TYPES),
        min_length=1,
        description="Media types compressed: exact (application/json), a whole type "
        "(text/*) or a suffix (application/*+json). text/event-stream is never compressed.",
    )
    min_size: Size = Field(
        default=1024,
        description="Answers with a smaller Content-Length are sent as they are (answers "
        "of unknown length are compressed).",
    )
    gzip_level: int = Field(default=5, ge=1, le=9, description="gzip level, 1 (fast) to 9.")
    br_quality: int = Field(default=4, ge=0, le=11, description="Brotli quality, 0 to 11.")
    zstd_level: int = Field(default=3, ge=1, le=19, description="zstd level, 1 to 19.")

    @field_validator("types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            kind = item.strip().lower()
            major, slash, minor = kind.partition("/")
            if not slash or not major or not minor or major == "*":
                raise ValueError(f"{item!r} is not a media type such as text/html or text/*")
            if "*" in minor and minor != "*" and not minor.startswith("*+"):
                raise ValueError(f"{item!r}: a wildcard is a whole subtype or *+suffix")
            out.append(kind)
        return out

    @field_validator("algorithms")
    @classmethod
    def _dedupe(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


def compress_value(value: Any) -> Any:
    """``compress: true`` stands for the defaults, ``false`` for ``{enabled: false}`` (on a
    route it turns the site's compression off)."""
    if value is True:
        return {}
    if value is False:
        return {"enabled": False}
    return value


CompressSetting = Annotated[Compress | None, BeforeValidator(compress_value)]
