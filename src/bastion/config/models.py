"""The configuration as typed, frozen pydantic models: the root ``Config`` and the
server-wide settings it holds directly (listeners, limits, client timeouts, HTTP/2, access
log).

Every field carries a description: it is the reference documentation (``bastion schema`` and
docs/configuration.md). Values are stored parsed: durations in seconds, sizes in bytes,
addresses and route paths as dataclasses, relative paths made absolute.

The models ``Config`` composes live in modules by topic: ``sites`` (sites, routes, route
actions), ``upstream`` (the proxy action), ``origins`` (S3), ``balancing``, ``cache_models``,
``tls_models`` (certificate files, HSTS, ACME), ``policy_auth``, ``policy_body``,
``policy_traffic`` and ``state_models`` (Redis).
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

from bastion.config.addresses import Address
from bastion.config.admin_models import Admin, admin_rules
from bastion.config.alert_models import Alerts
from bastion.config.cache_models import Cache
from bastion.config.observe_models import Metrics, Stats, Tracing
from bastion.config.rules import config_rules, validate_with_rules
from bastion.config.sites import Site
from bastion.config.state_models import State
from bastion.config.tls_models import Acme, TlsPolicy
from bastion.config.types import (
    Duration,
    ListenAddress,
    Network,
    RelativePath,
    Size,
    WorkerCount,
    base_dir,
    one_or_many,
    section,
    string_or_list_schema,
)

__all__ = ["AccessLog", "Config", "Http2", "Limits", "Listen", "ServerTimeouts"]


class _Model(BaseModel):
    # defer_build (every config module): a model's validator is built at its first use, so
    # a worker builds only the root's, with every section inlined (see types.section)
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class Listen(_Model):
    """Where bastion accepts connections."""

    http: Annotated[
        list[ListenAddress],
        BeforeValidator(one_or_many),
        string_or_list_schema({"type": "string"}),
    ] = Field(
        default_factory=lambda: [Address("127.0.0.1", 8080)],
        description="Plain-HTTP listen address, or a list of them: host:port, [ipv6]:port, "
        "or :port for every interface; [] for none (HTTPS only: ACME then uses tls-alpn-01).",
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

    @model_validator(mode="after")
    def _some(self) -> Listen:
        if not self.http and not self.https:
            raise ValueError("no listener: give listen.http or listen.https an address")
        return self


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
    send: Duration = Field(
        default=60.0,
        gt=0,
        description="Longest time a client may read nothing of a response it is owed "
        "(while the gateway waits for it to make room); past it the connection is closed.",
    )


class Http2(_Model):
    """HTTP/2 on the HTTPS listeners (negotiated with ALPN; no cleartext h2c)."""

    enabled: bool = Field(
        default=True,
        description="Offer h2 in ALPN on HTTPS listeners; false serves HTTP/1.1 only.",
    )
    max_concurrent_streams: int = Field(
        default=100,
        ge=1,
        le=10000,
        description="Streams a client may have open at once on one connection "
        "(SETTINGS_MAX_CONCURRENT_STREAMS).",
    )
    max_requests: int = Field(
        # nginx's default: its keepalive_requests (1000) caps the streams of an HTTP/2
        # connection too (since 1.19.7); a long-lived connection is renewed now and then,
        # which spreads clients over the workers and bounds what one connection holds
        default=1000,
        ge=1,
        description="Streams served on one connection before a graceful GOAWAY asks the "
        "client to open a new one.",
    )
    initial_window: Size = Field(
        default=256 * 1024,
        ge=65535,
        le=2**31 - 1,
        description="Per-stream receive window for request bodies: how much a client may "
        "send before the gateway has passed it on upstream.",
    )
    max_resets: int = Field(
        default=200,
        ge=1,
        description="Streams a client may cancel before they are answered within 10 seconds; "
        "beyond it the connection is closed with GOAWAY(ENHANCE_YOUR_CALM) "
        "(rapid reset defence).",
    )
    max_uploads: int = Field(
        default=16,
        ge=1,
        le=10000,
        description="Streams of one connection whose request body is still arriving that "
        "are forwarded at once (each holds an upstream connection); the others wait, their "
        "bodies held within their flow-control windows, until one of these completes.",
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


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


class Config(_Model):
    """A whole bastion configuration file."""

    listen: Listen = section("Listen addresses.")
    sites: list[Site] = Field(
        min_length=1,
        description="Sites, chosen by the request's host: an exact name first, then the "
        "longest matching '*.suffix', then '*'.",
    )
    limits: Limits = section("Request size limits.")
    timeouts: ServerTimeouts = section("Client time limits.")
    access_log: AccessLog = section("Access log.")
    http2: Http2 = section("HTTP/2 on the HTTPS listeners.")
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
        description="Where the local CA, certificates, API keys and statistics are kept. "
        "The --data-dir flag and $BASTION_DATA_DIR take precedence over it; null means "
        "/var/lib/bastion for root, else ~/.local/share/bastion.",
    )
    acme: Acme = section("ACME settings for certificates of public names (tls: auto).")
    tls: TlsPolicy = section(
        "TLS policy of the https listeners (profile, certificate file watching)."
    )
    cache: Cache = section("The response cache used by routes with `cache:`.")
    metrics: Metrics = section(
        "Prometheus metrics of the traffic, on a listener of their own; off "
        "unless metrics.listen is set."
    )
    stats: Stats = section("Traffic statistics kept in the data dir.")
    alerts: Alerts = section(
        "Alert rules evaluated like CloudWatch alarms, and the channels they notify."
    )
    admin: Admin = section(
        "The admin listener (dashboard and JSON API); off unless admin.listen is set."
    )
    tracing: Tracing = section("W3C trace context (traceparent, tracestate) sent upstream.")
    state: State = section(
        "Shared state across instances (Redis): rate limits and quotas counted "
        "exactly by every instance; off unless state.redis is set."
    )
    log_level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)] = (
        Field(default="info", description="Lowest level of the server's own log messages.")
    )

    @model_validator(mode="wrap")
    @classmethod
    def _rules(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return validate_with_rules(
            cls.__name__, data, handler, lambda d: config_rules(d) + admin_rules(d)
        )
