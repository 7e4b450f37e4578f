"""Upstream pool settings: endpoints, balancing policy, health, retries, limits.

Kept apart from models.py so that the proxy section stays readable; every model
here is documented in docs/configuration.md like the others.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    WithJsonSchema,
    field_validator,
    model_serializer,
)

from bastion.config.addresses import parse_upstream
from bastion.config.show import show
from bastion.config.types import Duration, Upstream

__all__ = [
    "ActiveHealth",
    "HashKey",
    "PassiveHealth",
    "Retries",
    "Sticky",
    "UpstreamEndpoint",
]

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _parse_share(value: object) -> float:
    """A share of something: ``20%`` or a fraction ``0.2``."""
    if isinstance(value, bool):
        raise ValueError(
            f"expected a percentage like 20% or a fraction like 0.2, got {show(value)}"
        )
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and value.strip().endswith("%"):
        try:
            number = float(value.strip()[:-1]) / 100.0
        except ValueError:
            raise ValueError(
                f"expected a percentage like 20% or a fraction like 0.2, got {show(value)}"
            ) from None
    else:
        raise ValueError(
            f"expected a percentage like 20% or a fraction like 0.2, got {show(value)}"
        )
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"a share must be between 0% and 100%, got {show(value)}")
    return number


Share = Annotated[
    float,
    BeforeValidator(_parse_share),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": 1},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*%\s*$"},
            ],
            "description": "a percentage like 20% or a fraction like 0.2",
        }
    ),
]


def _parse_statuses(value: object) -> frozenset[int]:
    """``[200-399, 404]``, ``"200-299"`` or ``200``: a set of status codes."""
    items = value if isinstance(value, list) else [value]
    codes: set[int] = set()
    for item in items:
        if isinstance(item, bool):
            raise ValueError(f"expected a status code or a range like 200-399, got {show(item)}")
        if isinstance(item, int):
            low = high = item
        elif isinstance(item, str) and re.fullmatch(r"\s*\d{3}\s*(-\s*\d{3}\s*)?", item):
            first, _, last = item.partition("-")
            low, high = int(first), int(last or first)
        else:
            raise ValueError(f"expected a status code or a range like 200-399, got {show(item)}")
        if not 100 <= low <= high <= 599:
            raise ValueError(f"status codes must be 100-599 and ranges low-high, got {show(item)}")
        codes.update(range(low, high + 1))
    return frozenset(codes)


Statuses = Annotated[
    frozenset[int],
    BeforeValidator(_parse_statuses),
    WithJsonSchema(
        {
            "type": "array",
            "items": {
                "anyOf": [{"type": "integer"}, {"type": "string", "pattern": r"^\d{3}-\d{3}$"}]
            },
        }
    ),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class UpstreamEndpoint(_Model):
    """One endpoint of an upstream pool; a plain string is the short form of {url: ...}."""

    url: Upstream = Field(
        description="http://host[:port] or unix:/absolute/path.sock.",
    )
    weight: int = Field(
        default=1, ge=1, le=1000, description="Relative share of requests (round robin, hash)."
    )
    zone: str | None = Field(
        default=None,
        min_length=1,
        description="Zone or region label; endpoints in more than one zone make peak_ewma "
        "the default policy.",
    )
    backup: bool = Field(
        default=False, description="Used only when no primary endpoint is healthy."
    )

    @model_serializer(mode="wrap")
    def _short_form(self, handler: SerializerFunctionWrapHandler) -> Any:
        # dumped back as the plain string when nothing but the url is set
        if self.weight == 1 and self.zone is None and not self.backup:
            return str(self.url)
        return handler(self)


def endpoint_short_form(value: Any) -> Any:
    """A string is {url: string}; parsed here so that its errors point at the list item."""
    if isinstance(value, str):
        return {"url": parse_upstream(value)}
    return value


class HashKey(_Model):
    """What the hash policy hashes."""

    key: str = Field(
        default="client_ip",
        description="client_ip, path, header:NAME or cookie:NAME.",
    )

    @field_validator("key")
    @classmethod
    def _check_key(cls, value: str) -> str:
        if value in ("client_ip", "path"):
            return value
        kind, sep, name = value.partition(":")
        if sep and kind in ("header", "cookie") and _HEADER_NAME.match(name):
            return f"{kind}:{name.lower() if kind == 'header' else name}"
        raise ValueError(f"expected client_ip, path, header:NAME or cookie:NAME, got {show(value)}")


class Sticky(_Model):
    """Cookie-based session affinity."""

    cookie: str = Field(
        default="bastion_route",
        pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
        description="Name of the cookie that names the endpoint (an opaque id).",
    )
    ttl: Duration | None = Field(
        default=3600.0,
        gt=0,
        description="Max-Age of the cookie; null makes it a session cookie.",
    )


class ActiveHealth(_Model):
    """Active health checks, run by every worker against every endpoint."""

    type: Literal["http", "tcp"] = Field(
        default="http", description="http sends a request; tcp only opens a connection."
    )
    path: str = Field(
        default="/",
        pattern=r"^/[^\s]*$",
        description="Request target of an http check.",
    )
    method: Literal["GET", "HEAD", "OPTIONS"] = Field(
        default="GET", description="Method of an http check."
    )
    expect_status: Statuses = Field(
        default=frozenset(range(200, 400)),
        description="Statuses counted as healthy: codes and ranges like 200-399.",
    )
    body: str | None = Field(
        default=None, min_length=1, description="Text the response body must contain."
    )
    interval: Duration = Field(default=5.0, gt=0, description="Time between two checks.")
    timeout: Duration = Field(default=2.0, gt=0, description="Time allowed for one check.")
    rise: int = Field(
        default=2, ge=1, description="Consecutive successes that make an endpoint healthy."
    )
    fall: int = Field(
        default=3, ge=1, description="Consecutive failures that make an endpoint unhealthy."
    )
    host: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9.:\[\]-]+$",
        description="Host header of an http check; the endpoint's host:port by default.",
    )


class PassiveHealth(_Model):
    """Outlier detection from real traffic."""

    failures: int = Field(
        default=5,
        ge=0,
        description="Consecutive connect failures or 5xx responses that eject an endpoint; "
        "0 turns passive ejection off.",
    )
    ejection: Duration = Field(
        default=30.0,
        gt=0,
        description="First ejection time; each further ejection in a row doubles it (at most "
        "10 times as long).",
    )
    max_ejected: Share = Field(
        default=0.5, description="Largest share of a pool's endpoints ejected at once."
    )


class Retries(_Model):
    """Retrying a request on another endpoint."""

    attempts: int = Field(
        default=2,
        ge=1,
        le=10,
        description="Tries of a request on configured statuses, the first one included.",
    )
    on_status: Statuses = Field(
        default=frozenset(),
        description="Upstream statuses that make a request without a body be tried again on "
        "another endpoint (idempotent methods only).",
    )
    budget: Share = Field(
        default=0.2,
        description="Retries allowed as a share of requests over the last 10 seconds (at "
        "least 10 retries per 10 seconds).",
    )
