"""The configuration as typed, frozen pydantic models.

Every field carries a description: it is the reference documentation (``bastion schema`` and
docs/configuration.md). Values are stored parsed: durations in seconds, sizes in bytes,
addresses and route paths as dataclasses, relative paths made absolute.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

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

from bastion.config.addresses import Address
from bastion.config.balancing import (
    ActiveHealth,
    HashKey,
    PassiveHealth,
    Retries,
    Sticky,
    UpstreamEndpoint,
    endpoint_short_form,
)
from bastion.config.rules import config_rules, route_rules, site_rules, validate_with_rules
from bastion.config.show import redact, show
from bastion.config.types import (
    Duration,
    HeaderValue,
    HostPattern,
    IndexName,
    ListenAddress,
    Method,
    Network,
    RelativePath,
    RoutePathType,
    Size,
    WorkerCount,
    base_dir,
    one_or_many,
    string_or_list_schema,
)

__all__ = [
    "LETSENCRYPT_DIRECTORY",
    "AccessLog",
    "Acme",
    "ActiveHealth",
    "Config",
    "HashKey",
    "Hsts",
    "Limits",
    "Listen",
    "PassiveHealth",
    "Proxy",
    "ProxyTimeouts",
    "Redirect",
    "Respond",
    "Retries",
    "Route",
    "ServerTimeouts",
    "Site",
    "Static",
    "Sticky",
    "TlsFiles",
    "UpstreamEndpoint",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listen(_Model):
    """Where bastion accepts connections."""

    http: Annotated[
        list[ListenAddress],
        BeforeValidator(one_or_many),
        string_or_list_schema({"type": "string"}),
    ] = Field(
        default_factory=lambda: [Address("127.0.0.1", 8080)],
        min_length=1,
        description="Plain-HTTP listen address, or a list of them: host:port, [ipv6]:port, "
        "or :port for every interface.",
    )
    https: Annotated[
        list[ListenAddress],
        BeforeValidator(one_or_many),
        string_or_list_schema({"type": "string"}),
    ] = Field(
        default_factory=list,
        description="HTTPS listen address, or a list of them (same forms as http); none by "
        "default. With one, sites get TLS unless they say tls: off.",
    )


class ProxyTimeouts(_Model):
    """Time limits for talking to an upstream."""

    connect: Duration = Field(default=5.0, gt=0, description="Time allowed to open a connection.")
    read: Duration = Field(
        default=60.0, gt=0, description="Longest gap allowed between two reads from the upstream."
    )
    send: Duration = Field(
        default=60.0, gt=0, description="Longest time a write to the upstream may stay blocked."
    )
    total: Duration = Field(
        default=0.0,
        ge=0,
        description="Longest time for a whole exchange, retries included, until the response "
        "head arrives; 0 for no limit.",
    )


class Proxy(_Model):
    """Forward the request to an upstream server."""

    upstreams: list[Annotated[UpstreamEndpoint, BeforeValidator(endpoint_short_form)]] = Field(
        min_length=1,
        description="Upstream endpoints: http://host[:port] (port 80 by default), "
        "unix:/absolute/path.sock, or {url, weight, zone, backup}.",
    )
    balance: (
        Literal["round_robin", "least_requests", "random_two", "peak_ewma", "hash", "sticky"]
        | None
    ) = Field(
        default=None,
        description="Load-balancing policy; round_robin, or peak_ewma when the endpoints "
        "have more than one zone.",
    )
    hash: HashKey = Field(
        default_factory=lambda: HashKey(), description="Key of the hash policy."
    )
    sticky: Sticky = Field(
        default_factory=lambda: Sticky(), description="Cookie of the sticky policy."
    )
    health: ActiveHealth | None = Field(
        default=None, description="Active health checks; none by default."
    )
    passive: PassiveHealth = Field(
        default_factory=lambda: PassiveHealth(),
        description="Ejection of endpoints that fail real requests.",
    )
    retries: Retries = Field(
        default_factory=lambda: Retries(), description="Retries on another endpoint."
    )
    max_connections: int = Field(
        default=0,
        ge=0,
        description="Requests in flight per endpoint (each holds one connection); 0 for no "
        "limit.",
    )
    max_pending: int = Field(
        default=0,
        ge=0,
        description="Requests allowed to wait for a free connection per endpoint when "
        "max_connections is reached; beyond that, 503.",
    )

    @field_validator("max_pending")
    @classmethod
    def _pending_needs_a_limit(cls, value: int, info: ValidationInfo) -> int:
        if value and not info.data.get("max_connections"):
            raise ValueError(
                "max_pending needs max_connections: requests wait for a connection only "
                "when the number of connections is limited"
            )
        return value

    slow_start: Duration = Field(
        default=0.0,
        ge=0,
        description="Time over which an endpoint that comes back ramps up to its full weight.",
    )
    resolve_ttl: Duration = Field(
        default=30.0,
        gt=0,
        description="How long the addresses of an upstream host name are used before it is "
        "resolved again.",
    )
    timeouts: ProxyTimeouts = Field(
        default_factory=lambda: ProxyTimeouts(), description="Upstream time limits."
    )
    preserve_host: bool = Field(
        default=True,
        description="Send the client's Host header upstream; false sends the upstream's "
        "host:port instead.",
    )
    websocket_idle_timeout: Duration | None = Field(
        default=None,
        gt=0,
        description="Close an upgraded (WebSocket) tunnel idle for this long; null never does.",
    )
    max_idle_connections: int = Field(
        default=64, ge=0, description="Idle keep-alive connections kept per upstream endpoint."
    )
    idle_timeout: Duration = Field(
        default=4.0,
        gt=0,
        description="How long an idle pooled upstream connection is kept; shorter than the "
        "5s keep-alive of common app servers so that they never close it first.",
    )


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
        description="Remove the matched prefix from the path sent upstream (prefix routes "
        "with proxy only).",
    )
    proxy: Proxy | None = Field(default=None, description="Forward to upstream servers.")
    redirect: Redirect | None = Field(default=None, description="Answer with a redirect.")
    static: Static | None = Field(default=None, description="Serve files from a directory.")
    respond: Respond | None = Field(default=None, description="Answer with a fixed response.")

    @field_validator("methods")
    @classmethod
    def _dedupe_methods(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else list(dict.fromkeys(value))

    @model_validator(mode="wrap")
    @classmethod
    def _rules(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return validate_with_rules(cls.__name__, data, handler, route_rules)


class TlsFiles(_Model):
    """A certificate and key read from files."""

    cert: RelativePath = Field(
        description="PEM file with the certificate, followed by its intermediates."
    )
    key: RelativePath = Field(description="PEM file with the certificate's private key.")

    @field_validator("cert", "key")
    @classmethod
    def _exists(cls, value: str) -> str:
        if not Path(value).is_file():
            raise ValueError(f"file {redact(value)} does not exist")
        return value

    @model_validator(mode="after")
    def _loads(self) -> TlsFiles:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.cert, self.key)
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
            raise ValueError(
                f"cannot load the certificate {redact(self.cert)} with the key "
                f"{redact(self.key)}: {reason}"
            ) from None
        return self


class Hsts(_Model):
    """Strict-Transport-Security sent over HTTPS."""

    max_age: Duration = Field(
        default=365 * 86400.0, gt=0, description="How long browsers remember to use HTTPS only."
    )
    include_subdomains: bool = Field(
        default=False, description="Apply to every subdomain of the site's hosts as well."
    )
    preload: bool = Field(
        default=False,
        description="Ask for inclusion in browsers' preload lists (needs max_age >= 1y and "
        "include_subdomains).",
    )


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


class Limits(_Model):
    """Request size and connection limits."""

    max_header_bytes: Size = Field(
        default=16 * 1024,
        gt=0,
        description="Largest request head (request line and headers); "
        "beyond it the client gets 431.",
    )
    max_uri_bytes: Size = Field(
        default=8 * 1024, gt=0, description="Longest request target; beyond it the client gets 414."
    )
    max_body_bytes: Size = Field(
        default=10 * 1024 * 1024,
        ge=0,
        description="Largest request body; beyond it the client gets 413. 0 means unlimited.",
    )
    max_connections: int = Field(
        default=10000, ge=1, description="Simultaneous client connections per worker."
    )


class ServerTimeouts(_Model):
    """Time limits for clients."""

    header: Duration = Field(
        default=10.0,
        gt=0,
        description="Time allowed to receive a request's head (slowloris defence).",
    )
    body: Duration = Field(
        default=60.0, gt=0, description="Longest gap allowed between two reads of a request body."
    )
    keepalive: Duration = Field(
        default=75.0,
        gt=0,
        description="How long an idle client keep-alive connection is kept open.",
    )


def _off_from_yaml(value: Any) -> Any:
    # YAML 1.1 reads a bare `off` as false.
    return "off" if value is False else value


class AccessLog(_Model):
    """One line per request."""

    format: Annotated[Literal["json", "combined", "off"], BeforeValidator(_off_from_yaml)] = Field(
        default="json",
        description="'json' (one object per line), 'combined' (Apache style) or 'off'.",
    )
    path: str = Field(
        default="stdout",
        min_length=1,
        description="'stdout', 'stderr' or a file path (relative paths resolve against the "
        "config file's directory).",
    )

    @field_validator("path")
    @classmethod
    def _resolve_path(cls, value: str, info: ValidationInfo) -> str:
        if value in ("stdout", "stderr"):
            return value
        path = Path(value).expanduser()
        return str((path if path.is_absolute() else base_dir(info) / path).resolve())


LETSENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"


class Acme(_Model):
    """Where certificates for public names (tls: auto) come from: an RFC 8555 CA."""

    email: str | None = Field(
        default=None,
        description="Contact address given to the CA (expiry and policy mail); optional.",
    )
    directory: str = Field(
        default=LETSENCRYPT_DIRECTORY,
        description="The CA's ACME directory URL. Let's Encrypt production by default; "
        "staging is https://acme-staging-v02.api.letsencrypt.org/directory.",
    )
    trusted_roots: RelativePath | None = Field(
        default=None,
        description="PEM bundle of CA certificates trusted when connecting to the ACME "
        "server (for a private CA such as Pebble); null uses the system's roots.",
    )

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        local, at, domain = value.partition("@")
        if not at or not local or "." not in domain or any(c in value for c in " ,<>\r\n"):
            raise ValueError(f"expected an email address like ops@example.com, got {show(value)}")
        return value

    @field_validator("directory")
    @classmethod
    def _directory(cls, value: str) -> str:
        value = value.strip()
        parsed = urlsplit(value)
        if parsed.scheme not in ("https", "http") or not parsed.netloc:
            raise ValueError(
                "expected the CA's directory URL like "
                f"{LETSENCRYPT_DIRECTORY}, got {show(value)}"
            )
        return value

    @field_validator("trusted_roots")
    @classmethod
    def _roots_exist(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(f"file {redact(value)} does not exist")
        return value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


class Config(_Model):
    """A whole bastion configuration file."""

    listen: Listen = Field(default_factory=lambda: Listen(), description="Listen addresses.")
    sites: list[Site] = Field(
        min_length=1,
        description="Sites, chosen by the request's host: an exact name first, then the "
        "longest matching '*.suffix', then '*'.",
    )
    limits: Limits = Field(default_factory=lambda: Limits(), description="Request size limits.")
    timeouts: ServerTimeouts = Field(
        default_factory=lambda: ServerTimeouts(), description="Client time limits."
    )
    access_log: AccessLog = Field(default_factory=lambda: AccessLog(), description="Access log.")
    trusted_proxies: list[Network] = Field(
        default_factory=list,
        description="Addresses or CIDRs of proxies in front of bastion whose "
        "X-Forwarded-For is believed.",
    )
    workers: WorkerCount = Field(
        default=1, ge=1, description="Worker processes; 'auto' means one per CPU."
    )
    shutdown_timeout: Duration = Field(
        default=30.0, description="On shutdown, how long in-flight requests may take to finish."
    )
    pid_file: RelativePath | None = Field(
        default=None, description="Write the process id to this file; null writes none."
    )
    watch: bool = Field(default=False, description="Reload when the config file changes.")
    data_dir: RelativePath | None = Field(
        default=None,
        description="Where the local CA and certificates are kept; null means "
        "$BASTION_DATA_DIR, else /var/lib/bastion for root, else ~/.local/share/bastion.",
    )
    acme: Acme = Field(
        default_factory=lambda: Acme(),
        description="ACME settings for certificates of public names (tls: auto).",
    )
    log_level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)] = (
        Field(default="info", description="Lowest level of the server's own log messages.")
    )

    @model_validator(mode="wrap")
    @classmethod
    def _rules(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return validate_with_rules(cls.__name__, data, handler, config_rules)
