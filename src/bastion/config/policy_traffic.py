"""Config models of the traffic policies: IP rules, CORS, rate limits and quotas, header rules
and secret injection, security headers.

The route keys live in ``models.Route`` (and the site-wide defaults in ``models.Site``); the
runtime objects are built from these models by ``bastion.policies.build``.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from bastion.config.defaults import HSTS_MAX_AGE
from bastion.config.show import show
from bastion.config.types import Duration, HeaderValue, Method, Network, one_or_many, section
from bastion.config.units import parse_rate

__all__ = [
    "Cors",
    "HeaderRules",
    "Headers",
    "IpRules",
    "Quota",
    "RateLimit",
    "RequestHeaderRules",
    "SecurityHeaders",
    "StsHeader",
    "parse_rate",
    "placeholder_names",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


# ------------------------------------------------------------------ IP rules
class IpRules(_Model):
    """Allow and deny lists of client networks; the most specific matching entry wins."""

    allow: Annotated[list[Network], BeforeValidator(one_or_many)] = Field(
        default_factory=list,
        description="Addresses or CIDRs (IPv4 and IPv6) allowed; when the list is not empty, "
        "a client matching no entry of either list is refused with 403.",
    )
    deny: Annotated[list[Network], BeforeValidator(one_or_many)] = Field(
        default_factory=list,
        description="Addresses or CIDRs refused with 403, unless a more specific allow entry "
        "matches (deny wins between entries of the same prefix length).",
    )

    @model_validator(mode="after")
    def _some(self) -> IpRules:
        if not self.allow and not self.deny:
            raise ValueError("give at least one network in allow or deny")
        return self


# ---------------------------------------------------------------------- CORS
_ORIGIN = re.compile(r"(https?)://(\*\.)?([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _origin(value: str) -> str:
    text = value.strip()
    if text == "*":
        return text
    match = _ORIGIN.fullmatch(text)
    if match is None or text.endswith("."):
        raise ValueError(
            "expected '*' or an origin like https://app.example.com or "
            f"https://*.example.com (scheme, host, optional port, no path), got {show(value)}"
        )
    return text.lower()


def _header_name(value: str) -> str:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise ValueError(f"expected a header field name like X-Request-Id, got {show(value)}")
    return value


HeaderName = Annotated[str, BeforeValidator(_header_name)]


class Cors(_Model):
    """Cross-origin resource sharing: preflights answered at the gateway, CORS response fields
    on the route's answers."""

    origins: Annotated[list[str], BeforeValidator(one_or_many)] = Field(
        min_length=1,
        description="Allowed origins: exact (https://app.example.com), a wildcard subdomain "
        "(https://*.example.com: any name below example.com, not example.com itself) or '*' "
        "for any origin.",
    )
    methods: Annotated[list[Method], BeforeValidator(one_or_many)] = Field(
        default_factory=lambda: ["GET", "HEAD", "POST"],
        min_length=1,
        description="Methods a cross-origin request may use (Access-Control-Allow-Methods).",
    )
    headers: Annotated[list[str], BeforeValidator(one_or_many)] = Field(
        default_factory=list,
        description="Request header fields a cross-origin request may send beyond the "
        "CORS-safelisted ones (Access-Control-Allow-Headers); ['*'] allows any.",
    )
    expose_headers: Annotated[list[HeaderName], BeforeValidator(one_or_many)] = Field(
        default_factory=list,
        description="Response header fields scripts may read (Access-Control-Expose-Headers).",
    )
    credentials: bool = Field(
        default=False,
        description="Allow cookies and HTTP authentication (Access-Control-Allow-Credentials); "
        "needs explicit origins, not '*'.",
    )
    max_age: Duration = Field(
        default=600.0,
        ge=0,
        description="How long browsers may cache a preflight answer (Access-Control-Max-Age).",
    )

    @field_validator("origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        parsed = [_origin(v) if isinstance(v, str) else _origin(show(v)) for v in value]
        if "*" in parsed and len(parsed) > 1:
            raise ValueError("'*' allows every origin: list it alone")
        return list(dict.fromkeys(parsed))

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: list[str]) -> list[str]:
        if value == ["*"]:
            return value
        return [_header_name(v) for v in value]

    @model_validator(mode="after")
    def _credentials(self) -> Cors:
        if self.credentials and self.origins == ["*"]:
            raise ValueError(
                "credentials: true needs the allowed origins listed: browsers refuse "
                "credentials with Access-Control-Allow-Origin: *"
            )
        return self


# --------------------------------------------------------------- rate limits
_KEY_HINT = "expected client_ip, consumer, route or header:NAME"


def _limit_key(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{_KEY_HINT}, got {show(value)}")
    text = value.strip()
    if text in ("client_ip", "consumer", "route"):
        return text
    kind, colon, name = text.partition(":")
    if kind == "header" and colon and _TOKEN.fullmatch(name.strip()):
        return "header:" + name.strip().lower()
    raise ValueError(f"{_KEY_HINT}, got {show(value)}")


LimitKey = Annotated[str, BeforeValidator(_limit_key)]
_NAME = re.compile(r"[a-z*][a-z0-9_.*-]*")


def _policy_name(value: str | None) -> str | None:
    if value is not None and not _NAME.fullmatch(value):
        raise ValueError(
            f"expected a name of lowercase letters, digits, '_', '-', '.' (it is a "
            f"structured-field key of RateLimit-Policy), got {show(value)}"
        )
    return value


Ipv6Prefix = Annotated[
    int,
    Field(
        ge=8,
        le=128,
        description="IPv6 clients are counted by their network of this many bits (a host "
        "or subscriber is given a whole /64); 128 counts each address.",
    ),
]


StoreDown = Literal["local", "allow", "deny"]
"""What a limit does while the shared store (Redis) cannot be asked."""


class RateLimit(_Model):
    """One rate limit: a GCRA bucket per key value (exact within one process, or across
    all of them with state.redis)."""

    rate: str = Field(
        description="Sustained rate: COUNT/PERIOD, PERIOD one of s, m, h, day or a "
        "duration (10/s, 100/m, 10000/day, 50/10s)."
    )
    burst: int | None = Field(
        default=None,
        ge=1,
        description="Requests allowed at once on an idle bucket; null means the rate's "
        "COUNT (10/s → 10).",
    )
    key: LimitKey = Field(
        default="client_ip",
        description="What is counted separately: client_ip (the real client address), "
        "consumer (the authenticated consumer; the client address when none), route (one "
        "bucket for everyone) or header:NAME (that header's value; the client address when "
        "the header is absent).",
    )
    ipv6_prefix: Ipv6Prefix = 64
    name: str | None = Field(
        default=None,
        description="Name of the limit in the RateLimit-Policy and RateLimit response fields; "
        "null derives one from the key and rate.",
    )
    advertise: bool = Field(
        default=True,
        description="Name this limit in the RateLimit-Policy and RateLimit fields of the "
        "route's answers; false keeps it out of them (Retry-After still counts it).",
    )
    on_store_down: StoreDown = Field(
        default="local",
        description="While state.redis is unreachable: local (each worker counts on its own "
        "with its share of the limit: divided by state.instances times workers), allow (no limit) "
        "or deny (503). Without state.redis it does not apply.",
    )

    @field_validator("rate")
    @classmethod
    def _rate(cls, value: str) -> str:
        parse_rate(value)
        return value.strip()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return _policy_name(value)


class Quota(_Model):
    """A quota: at most LIMIT requests per key per calendar day or month (UTC)."""

    limit: int = Field(ge=1, description="Requests allowed per period.")
    per: Literal["day", "month"] = Field(
        description="The period: a calendar day or month in UTC; the counter starts again at "
        "its beginning."
    )
    key: LimitKey = Field(
        default="consumer",
        description="What is counted separately: consumer (the client address when no "
        "consumer is authenticated), client_ip, route or header:NAME.",
    )
    ipv6_prefix: Ipv6Prefix = 64
    name: str | None = Field(
        default=None,
        description="Name of the quota in the RateLimit-Policy and RateLimit response fields; "
        "null derives one.",
    )
    advertise: bool = Field(
        default=True,
        description="Name this quota in the RateLimit-Policy and RateLimit fields of the "
        "route's answers; false keeps it out of them.",
    )
    on_store_down: StoreDown = Field(
        default="local",
        description="While state.redis is unreachable: local (each worker counts on its own "
        "with its share of the quota), allow (no quota) or deny (503). Without state.redis it "
        "does not apply.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return _policy_name(value)


# ------------------------------------------------------------ header rules
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_PLACEHOLDERS = ("client_ip", "consumer", "request_id", "host", "method", "path")
_ENV = re.compile(r"env\.([A-Za-z_][A-Za-z0-9_]*)")
# Fields the gateway computes itself: a rule setting them would break the framing or routing.
_RESERVED = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te",
     "trailer", "host", "proxy-connection"}
)  # fmt: skip


def placeholder_names(value: str) -> list[str]:
    """The placeholders of a header value template, checked ('{{' and '}}' are literal)."""
    names = []
    for match in _PLACEHOLDER.finditer(value.replace("{{", "").replace("}}", "")):
        name = match.group(1).strip()
        env = _ENV.fullmatch(name)
        if env is not None:
            if env.group(1) not in os.environ:
                raise ValueError(f"environment variable {env.group(1)} is not set")
        elif name not in _PLACEHOLDERS:
            raise ValueError(
                f"unknown placeholder {{{name}}}: use one of "
                + ", ".join("{" + p + "}" for p in _PLACEHOLDERS)
                + " or {env.NAME} (write {{ and }} for literal braces)"
            )
        names.append(name)
    return names


def _rule_name(value: object) -> str:
    name = _header_name(value)  # type: ignore[arg-type]
    if name.lower() in _RESERVED:
        raise ValueError(f"{name} is managed by the gateway and cannot be changed by a rule")
    return name


RuleName = Annotated[str, BeforeValidator(_rule_name)]


def _templates(value: dict[str, Any]) -> dict[str, Any]:
    for item in value.values():
        for text in item if isinstance(item, list) else [item]:
            if isinstance(text, str):
                placeholder_names(text)
    return value


class HeaderRules(_Model):
    """Edits of the header fields of answers: remove, then set, then add."""

    set: dict[RuleName, HeaderValue] = Field(
        default_factory=dict,
        description="Fields set to a value, replacing any the answer had; values may use "
        "{client_ip}, {consumer}, {request_id}, {host}, {method}, {path}, {env.NAME}.",
    )
    add: dict[RuleName, Annotated[list[HeaderValue], BeforeValidator(one_or_many)]] = Field(
        default_factory=dict,
        description="Fields added (a value or a list of values), keeping any already there; "
        "same placeholders as set.",
    )
    remove: Annotated[list[RuleName], BeforeValidator(one_or_many)] = Field(
        default_factory=list,
        description="Fields removed; a name ending in '*' removes every field starting "
        "with the rest (X-Debug-*).",
    )

    @field_validator("set", "add")
    @classmethod
    def _placeholders(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _templates(value)


class RequestHeaderRules(HeaderRules):
    """Edits of the request forwarded upstream: remove, then set, then add, then inject."""

    inject: dict[RuleName, SecretStr] = Field(
        default_factory=dict,
        description="Credentials added to the forwarded request (write them as "
        "${ENV_VAR} or ${file:path}); the client's own value of the field is dropped, and "
        "the value never appears in logs, errors or printed configs.",
    )

    @field_validator("inject")
    @classmethod
    def _inject(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for secret in value.values():
            text = secret.get_secret_value()
            if not text or any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in text):
                raise ValueError(
                    "an injected value must be non-empty without control characters "
                    "(the value is hidden)"
                )
        return value


class Headers(_Model):
    """Header rules for the request forwarded upstream and for the route's answers."""

    request: RequestHeaderRules = section("Rules for the request sent upstream (proxy routes).")
    response: HeaderRules = section(
        "Rules for every answer of the route (proxied, static, errors)."
    )


# --------------------------------------------------------- security headers
DEFAULT_STRIP = (
    "Server",
    "X-Powered-By",
    "X-AspNet-Version",
    "X-AspNetMvc-Version",
    "X-Runtime",
    "X-Debug-Token",
    "X-Debug-Token-Link",
    "X-Generator",
)


class StsHeader(_Model):
    """Strict-Transport-Security of the security_headers preset."""

    max_age: Duration = Field(
        default=HSTS_MAX_AGE, gt=0, description="How long browsers remember to use HTTPS only."
    )
    include_subdomains: bool = Field(
        default=False, description="Apply to every subdomain of the site's hosts as well."
    )
    preload: bool = Field(default=False, description="Ask for inclusion in preload lists.")


class SecurityHeaders(_Model):
    """A preset of browser security fields added to answers, and backend fields stripped."""

    hsts: bool | StsHeader = Field(
        default=True,
        description="Strict-Transport-Security on sites served over HTTPS (true: one year); "
        "never sent over plain HTTP, and left to the site's hsts key when that is set.",
    )
    content_type_options: bool = Field(default=True, description="X-Content-Type-Options: nosniff.")
    referrer_policy: HeaderValue | None = Field(
        default="strict-origin-when-cross-origin",
        description="Referrer-Policy value; null sends none.",
    )
    frame_options: Literal["DENY", "SAMEORIGIN"] | None = Field(
        default="DENY", description="X-Frame-Options value; null sends none."
    )
    csp: HeaderValue | None = Field(
        default=None,
        description="Content-Security-Policy value (for example default-src 'self'); "
        "null sends none.",
    )
    csp_report_only: bool = Field(
        default=False,
        description="Send the csp as Content-Security-Policy-Report-Only (trying a policy "
        "without enforcing it).",
    )
    strip: Annotated[list[HeaderName], BeforeValidator(one_or_many)] = Field(
        default_factory=lambda: list(DEFAULT_STRIP),
        description="Backend fields removed from answers (version banners and debug "
        "fields); a name ending in '*' removes every field starting with the rest.",
    )
    keep_backend_values: bool = Field(
        default=False,
        description="Keep a security field the backend already sent instead of replacing it "
        "with the preset's value.",
    )


def security_headers_value(value: Any) -> Any:
    """``security_headers: true`` is the preset with its defaults; ``false`` sends and strips
    nothing (on a route: switches the site's preset off there)."""
    if value is True:
        return SecurityHeaders()
    if value is False:
        return SECURITY_HEADERS_OFF
    return value


SECURITY_HEADERS_OFF = SecurityHeaders(
    hsts=False,
    content_type_options=False,
    referrer_policy=None,
    frame_options=None,
    csp=None,
    strip=[],
)
