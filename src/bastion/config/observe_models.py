"""How the gateway shows its traffic: Prometheus metrics, traffic statistics."""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bastion.config.show import redact
from bastion.config.types import Duration, ListenAddress, Network, RelativePath

__all__ = ["Metrics", "Stats", "Tracing"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class Metrics(_Model):
    """Prometheus metrics of the traffic, on a listener of their own."""

    listen: ListenAddress | None = Field(
        default=None,
        description="Address of the metrics listener (GET /metrics, Prometheus text format); "
        "null: no metrics. Keep it private: 127.0.0.1 or an internal address.",
    )
    allow: list[Network] = Field(
        default_factory=lambda: [ip_network("127.0.0.1/32"), ip_network("::1/128")],
        description="Client addresses or CIDRs that may scrape; others get 403.",
    )
    status_codes: bool = Field(
        default=False,
        description="Label requests with the exact status code instead of its class "
        "(2xx, 4xx, ...): more precise, more series.",
    )
    consumers: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Count requests per authenticated consumer "
        "(bastion_consumer_requests_total): the N consumers with the most requests get a "
        'label each, the others are summed as "_other". 0: no consumer metric.',
    )


class Stats(_Model):
    """Traffic statistics kept in the data dir (stats.sqlite3): per-second, per-minute and
    hourly figures per route and top-K tables, read by `bastion stats` and the dashboard."""

    enabled: bool = Field(
        default=True,
        description="Keep traffic statistics. On by default: the request path only appends "
        "a row per request; the figures are written once a second by a thread of each "
        "worker.",
    )
    geoip: RelativePath | None = Field(
        default=None,
        description="A MaxMind-format country database (.mmdb, e.g. GeoLite2-Country) to "
        "count clients by country; null: no countries.",
    )

    cluster_interval: Duration = Field(
        default=60.0,
        ge=1.0,
        le=60.0,
        description="With state.redis: how often each worker writes its figures of the "
        "current minute to Redis for the cluster view (seconds, 1 to 60). The minute rows "
        "are the unit either way; a shorter interval only shows the minute in progress "
        "sooner, at one Redis round trip per interval and worker.",
    )
    instance: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        pattern=r"^\S+$",
        description="With state.redis: this instance's name in the cluster view; null: "
        "hostname:pid of `bastion run`. Give each instance its own name.",
    )

    @field_validator("geoip")
    @classmethod
    def _geoip_exists(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(f"file {redact(value)} does not exist")
        return value


class Tracing(_Model):
    """W3C Trace Context on proxied requests."""

    traceparent: bool = Field(
        default=True,
        description="Send traceparent (and a valid client's tracestate) upstream: a "
        "client's valid traceparent is forwarded, else bastion starts a trace whose id is "
        "the request id. false: the client's trace fields pass through untouched.",
    )
