"""Config models of forwarding to upstream servers: the ``proxy:`` action, its time limits
and the TLS settings of https:// upstreams (balancing and health: ``balancing``).

The TLS files of an upstream are loaded once at load time (through ``material``), so that a
missing CA or a key that does not fit its certificate is a config error with its line, not a
502 at the first request. Messages never contain a secret.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bastion.config.addresses import parse_hostname
from bastion.config.balancing import (
    ActiveHealth,
    HashKey,
    PassiveHealth,
    Retries,
    Sticky,
    UpstreamEndpoint,
    endpoint_short_form,
)
from bastion.config.material import ca_bundle_problem, client_context_problem
from bastion.config.show import redact, show
from bastion.config.types import Duration, RelativePath, Size, section

__all__ = ["Proxy", "ProxyTimeouts", "UpstreamTls"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


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


class UpstreamTls(_Model):
    """How bastion connects to https:// upstreams (TLS 1.2 or newer, ALPN http/1.1)."""

    verify: bool = Field(
        default=True,
        description="Verify the upstream's certificate chain and name; false accepts any "
        "certificate (testing only).",
    )
    ca: RelativePath | None = Field(
        default=None,
        description="PEM bundle of the CA certificates trusted for the upstream; null uses "
        "the system's trust store.",
    )
    server_name: str | None = Field(
        default=None,
        description="Name sent in SNI and checked against the certificate; null uses the "
        "upstream URL's host (an IP address is checked against the IP SANs).",
    )
    client_cert: RelativePath | None = Field(
        default=None,
        description="PEM file with the client certificate (and its intermediates) presented "
        "to the upstream (mutual TLS).",
    )
    client_key: RelativePath | None = Field(
        default=None,
        description="PEM file with the client certificate's private key; null when "
        "client_cert holds the key too.",
    )

    @field_validator("ca", "client_cert", "client_key")
    @classmethod
    def _exists(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(f"file {redact(value)} does not exist")
        return value

    @model_validator(mode="after")
    def _loads(self) -> UpstreamTls:
        _check_upstream_tls(self)
        return self


def _check_upstream_tls(tls: UpstreamTls) -> None:
    """Raise ``ValueError`` when the (existing) files do not load as TLS material."""
    if tls.client_key is not None and tls.client_cert is None:
        raise ValueError("client_key needs client_cert")
    if tls.server_name is not None:
        name = tls.server_name.strip().strip("[]")
        try:
            ipaddress.ip_address(name)
        except ValueError:
            parse_hostname(name)
    if tls.ca is not None:
        reason = ca_bundle_problem(tls.ca)
        if reason is not None:
            raise ValueError(f"ca: cannot load {redact(tls.ca)} as a PEM CA bundle: {reason}")
    reason = client_context_problem(tls.verify, tls.ca, tls.client_cert, tls.client_key)
    if reason is not None:
        key = "" if tls.client_key is None else f" with the key {redact(tls.client_key)}"
        raise ValueError(
            f"cannot load the client certificate {redact(tls.client_cert or '')}{key}: {reason}"
        )


def _upgrade_protocol(value: str) -> str:
    name = value.strip().lower()
    if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9a-z-]+", name):
        raise ValueError(f"{show(value)} is not an Upgrade protocol name")
    if name == "h2c":
        # after a 101 the connection would carry HTTP/2 requests the gateway never routes
        raise ValueError(
            "h2c is never forwarded: after the switch, the backend would take requests "
            "that bypass routing and every policy"
        )
    return name


class Proxy(_Model):
    """Forward the request to an upstream server."""

    upstreams: list[Annotated[UpstreamEndpoint, BeforeValidator(endpoint_short_form)]] = Field(
        min_length=1,
        description="Upstream endpoints: http://host[:port] (port 80 by default), "
        "https://host[:port] (port 443), unix:/absolute/path.sock, or {url, weight, zone, "
        "backup}.",
    )
    tls: UpstreamTls | None = Field(
        default=None,
        description="TLS settings for the https:// upstreams; null verifies them against "
        "the system's trust store.",
    )
    balance: (
        Literal["round_robin", "least_requests", "random_two", "peak_ewma", "hash", "sticky"]
        | None
    ) = Field(
        default=None,
        description="Load-balancing policy; round_robin, or peak_ewma when the endpoints "
        "have more than one zone.",
    )
    hash: HashKey = section("Key of the hash policy.")
    sticky: Sticky = section("Cookie of the sticky policy.")
    health: ActiveHealth | None = Field(
        default=None, description="Active health checks; none by default."
    )
    passive: PassiveHealth = section("Ejection of endpoints that fail real requests.")
    retries: Retries = section("Retries on another endpoint.")
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
    timeouts: ProxyTimeouts = section("Upstream time limits.")
    preserve_host: bool | None = Field(
        default=None,
        description="Send the client's Host header upstream; false sends the upstream's "
        "host[:port] instead. Default: true for http:// and unix: upstreams, false for "
        "https:// ones.",
    )
    websocket_idle_timeout: Duration | None = Field(
        default=3600.0,
        gt=0,
        description="Close an upgraded (WebSocket) tunnel with no byte in either direction "
        "for this long; null never does.",
    )
    upgrade: list[Annotated[str, AfterValidator(_upgrade_protocol)]] = Field(
        default_factory=lambda: ["websocket"],
        description="Upgrade protocols forwarded to the upstream (names compared "
        "case-insensitively); the Upgrade field of any other request is removed and the "
        "request forwarded as a plain one. h2c is never forwarded; [] forwards none.",
    )
    underscores_in_headers: bool = Field(
        default=False,
        description="Forward request header fields whose names contain '_'; by default they "
        "are dropped (CGI/WSGI backends read X_Real_IP as X-Real-IP), as nginx does.",
    )
    max_idle_connections: int = Field(
        default=64,
        ge=0,
        description="Idle keep-alive connections kept per upstream endpoint; more released "
        "together in a burst are kept for up to a second for the next burst. 0 keeps none.",
    )
    idle_timeout: Duration = Field(
        default=4.0,
        gt=0,
        description="How long an idle pooled upstream connection is kept; shorter than the "
        "5s keep-alive of common app servers so that they never close it first.",
    )

    max_response_header_bytes: Size = Field(
        default=64 * 1024,
        gt=0,
        description="Largest response head accepted from an upstream (status line and header "
        "fields; each interim 1xx head and the trailer section are held to it too); beyond it "
        "the client gets 502 and the upstream connection is closed.",
    )
    max_response_header_fields: int = Field(
        default=100,
        ge=1,
        description="Most header fields in one upstream response head; beyond it the client "
        "gets 502 and the upstream connection is closed.",
    )

    @model_validator(mode="after")
    def _tls_needs_https(self) -> Proxy:
        if self.tls is not None and not any(u.url.scheme == "https" for u in self.upstreams):
            raise ValueError("tls only applies to https:// upstreams, and this proxy has none")
        return self

