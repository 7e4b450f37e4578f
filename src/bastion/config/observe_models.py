"""How the gateway shows its traffic: Prometheus metrics."""

from __future__ import annotations

from ipaddress import ip_network

from pydantic import BaseModel, ConfigDict, Field

from bastion.config.types import ListenAddress, Network

__all__ = ["Metrics"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
