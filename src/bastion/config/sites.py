"""Config models of what is served: a site (host names, TLS mode, site-wide policies), its
routes, and the actions a route takes besides ``proxy`` (``upstream``) and ``s3``
(``origins``): redirect, static files, a fixed response.

Cross-field rules that span a route or a site (``rules``) run after the fields validate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from bastion.config.cache_models import RouteCache
from bastion.config.origins import S3
from bastion.config.policy_auth import Auth
from bastion.config.policy_body import CompressSetting, Validation
from bastion.config.policy_traffic import (
    Cors,
    Headers,
    IpRules,
    Quota,
    RateLimit,
    SecurityHeaders,
    security_headers_value,
)
from bastion.config.rules import route_rules, site_rules, validate_with_rules
from bastion.config.show import redact, show
from bastion.config.tls_models import Hsts, TlsFiles
from bastion.config.types import (
    HeaderValue,
    HostPattern,
    IndexName,
    Method,
    RoutePathType,
    Size,
    base_dir,
    one_or_many,
    string_or_list_schema,
)
from bastion.config.upstream import Proxy

__all__ = ["Redirect", "Respond", "Route", "Site", "Static"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class Redirect(_Model):
    """Answer with a redirect."""

    to: HeaderValue = Field(
        min_length=1,
        description="Target URL or path. On a prefix route, a target ending in '/' gets the "
        "rest of the path after the prefix appended; the query string is kept.",
    )
    status: Literal[301, 302, 303, 307, 308] = Field(
        default=302, description="Redirect status code."
    )


class Static(_Model):
    """Serve files from a directory."""

    root: Path = Field(
        description="Directory to serve; relative paths resolve against the config file's "
        "directory. It must exist."
    )
    index: Annotated[
        list[IndexName], BeforeValidator(one_or_many), string_or_list_schema({"type": "string"})
    ] = Field(
        default_factory=lambda: ["index.html"],
        description="File names tried, in order, when a directory is requested.",
    )
    cache_control: HeaderValue | None = Field(
        default=None, description="Cache-Control header value for served files; null sends none."
    )

    @field_validator("root", mode="before")
    @classmethod
    def _resolve_root(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, str | Path):
            return value  # pydantic reports the wrong type
        if not str(value).strip():
            raise ValueError("must not be empty")
        path = Path(str(value).strip()).expanduser()
        resolved = (path if path.is_absolute() else base_dir(info) / path).resolve()
        if not resolved.exists():
            raise ValueError(f"static root {redact(str(value))} does not exist")
        if not resolved.is_dir():
            raise ValueError(f"static root {redact(str(value))} is not a directory")
        return resolved


class Respond(_Model):
    """Answer directly with a fixed response."""

    status: int = Field(default=200, ge=200, le=599, description="Status code (200-599).")
    body: str = Field(default="", description="Response body.")
    content_type: HeaderValue = Field(
        default="text/plain; charset=utf-8", description="Content-Type of the body."
    )


class Route(_Model):
    """A path (and optionally methods) within a site, and the one action taken for it."""

    path: RoutePathType = Field(
        description="'/api/' matches by prefix, '= /health' exactly, '~ ^/v[0-9]+/' by "
        "regular expression."
    )
    methods: list[Method] | None = Field(
        default=None,
        min_length=1,
        description="Allowed methods; others get 405. Omit to allow every method.",
    )
    strip_prefix: bool = Field(
        default=False,
        description="Remove the matched prefix from the path sent upstream or used as the "
        "object key (prefix routes with proxy or s3 only).",
    )
    path_normalisation: Literal["forward", "reject", "redirect"] = Field(
        default="forward",
        description="A request whose path is not in canonical form ('//', '.', '..', "
        "needless escapes): 'forward' its canonical form, 'reject' it (400) or 'redirect' "
        "it (308) to the canonical form.",
    )
    encoded_slashes: Literal["reject", "keep"] = Field(
        default="reject",
        description="A path with %2F or %5C: 'reject' it (400), or 'keep' it encoded as "
        "part of its segment (only for backends that do not decode it to a separator).",
    )
    path_parameters: Literal["reject", "keep"] = Field(
        default="reject",
        description="A path with ';' or '%3B' (a path parameter, '/a;v=1/b'): 'reject' it "
        "(400), or 'keep' it as part of its segment (only for backends that take ';' as "
        "data; Java servlet containers cut ';params' off before matching).",
    )
    proxy: Proxy | None = Field(default=None, description="Forward to upstream servers.")
    redirect: Redirect | None = Field(default=None, description="Answer with a redirect.")
    static: Static | None = Field(default=None, description="Serve files from a directory.")
    respond: Respond | None = Field(default=None, description="Answer with a fixed response.")
    s3: S3 | None = Field(default=None, description="Serve objects from an S3-compatible bucket.")
    cache: RouteCache | None = Field(
        default=None, description="Cache responses of this proxy route (see docs/caching.md)."
    )
    # traffic policies (docs/policies.md)
    ip_rules: IpRules | None = Field(
        default=None,
        description="Client networks allowed or denied; replaces the site's ip_rules.",
    )
    cors: Cors | None = Field(
        default=None, description="CORS for browsers on other origins; replaces the site's cors."
    )
    rate_limits: list[RateLimit] = Field(
        default_factory=list, description="Rate limits; a request must pass every one."
    )
    quotas: list[Quota] = Field(
        default_factory=list, description="Per-day or per-month request quotas."
    )
    headers: Headers | None = Field(
        default=None,
        description="Header rules and secret injection, applied after the site's headers.",
    )
    security_headers: Annotated[
        SecurityHeaders | None, BeforeValidator(security_headers_value)
    ] = Field(
        default=None,
        description="Browser security fields preset (true for the defaults); replaces the "
        "site's security_headers.",
    )
    # authentication (docs/policies.md)
    auth: Auth | None = Field(
        default=None,
        description="Who may use the route: api_keys, jwt, basic or forward (one of them).",
    )
    # body policies (docs/policies.md)
    max_body: Size | None = Field(
        default=None,
        gt=0,
        description="Largest request body on this route (413 beyond); can only be lower "
        "than limits.max_body_bytes, which still applies.",
    )
    validation: Validation | None = Field(
        default=None,
        description="Check requests against an OpenAPI document or a JSON Schema.",
    )
    compress: CompressSetting = Field(
        default=None,
        description="Compress answers (true for the defaults, false for none); replaces the "
        "site's compress.",
    )

    @field_validator("methods")
    @classmethod
    def _dedupe_methods(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else list(dict.fromkeys(value))

    @model_validator(mode="wrap")
    @classmethod
    def _rules(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return validate_with_rules(cls.__name__, data, handler, route_rules)


_TLS_HINT = "expected off, internal, auto or {cert: FILE, key: FILE}"


class Site(_Model):
    """A set of host names and the routes served for them."""

    hosts: Annotated[list[HostPattern], BeforeValidator(one_or_many)] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        description="Host names served by this site: an exact name or IP, '*.example.test' "
        "for any name ending in '.example.test', or '*' for any host.",
    )
    routes: list[Route] = Field(
        min_length=1,
        description="Routes; exact paths win, then the longest prefix, then "
        "regular expressions in file order.",
    )
    tls: Literal["off", "internal", "auto"] | TlsFiles | None = Field(
        default=None,
        description="'internal' (local CA), {cert: FILE, key: FILE}, 'auto' (ACME for public "
        "names, the local CA for local ones) or 'off'. Default: 'auto' when an https "
        "listener exists, else 'off'.",
    )
    hsts: bool | Hsts = Field(
        default=False,
        description="Send Strict-Transport-Security over HTTPS; true means max-age one year.",
    )
    # traffic policies: defaults for the site's routes (docs/policies.md)
    ip_rules: IpRules | None = Field(
        default=None, description="Client networks allowed or denied on every route."
    )
    cors: Cors | None = Field(default=None, description="CORS for every route.")
    headers: Headers | None = Field(
        default=None, description="Header rules applied on every route, before the route's."
    )
    security_headers: Annotated[
        SecurityHeaders | None, BeforeValidator(security_headers_value)
    ] = Field(
        default=None, description="Browser security fields preset for every route."
    )
    compress: CompressSetting = Field(
        default=None, description="Compress answers on every route (true for the defaults)."
    )

    @field_validator("tls", mode="wrap")
    @classmethod
    def _tls(cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        # one clear message instead of one per member of the union
        if value is None:
            return None
        if value is False:
            return "off"  # YAML 1.1 reads a bare `off` as false
        if isinstance(value, str):
            mode = value.strip().lower()
            if mode not in ("off", "internal", "auto"):
                raise ValueError(f"{_TLS_HINT}, got {show(value)}")
            return mode
        if isinstance(value, dict | TlsFiles):
            return TlsFiles.model_validate(value, context=info.context)
        raise ValueError(f"{_TLS_HINT}, got {show(value)}")

    @model_validator(mode="wrap")
    @classmethod
    def _rules(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return validate_with_rules(cls.__name__, data, handler, site_rules)
