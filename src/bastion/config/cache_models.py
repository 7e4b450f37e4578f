"""Config models of the response cache: the process-wide store (``cache:``) and a proxy
route's caching rules (``routes[].cache``)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from bastion.config.show import show
from bastion.config.types import Duration, Network, Size, section

__all__ = ["Cache", "CacheKey", "RouteCache"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


def _header_name(value: str) -> str:
    if not value or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", value):
        raise ValueError(f"{show(value)} is not a header field name")
    return value.lower()


class CacheKey(_Model):
    """What makes two requests the same cache entry (besides scheme, host and path)."""

    query: Literal["all", "ignore"] | list[str] = Field(
        default="all",
        description="Query parameters in the key: 'all' (sorted, so order does not "
        "matter), 'ignore', or the list of parameter names kept.",
    )
    headers: list[Annotated[str, AfterValidator(_header_name)]] = Field(
        default_factory=list,
        description="Request header fields whose values are added to the key (as if the "
        "backend always sent them in Vary).",
    )
    consumer: bool = Field(
        default=False,
        description="On a route with auth, keep every answer per consumer, even one that "
        "says public or s-maxage (answers are per consumer by default on such a route; "
        "no effect without auth).",
    )


class RouteCache(_Model):
    """Caching of a proxy route's responses (RFC 9111 shared-cache rules)."""

    ttl: Duration | None = Field(
        default=None,
        gt=0,
        description="Freshness lifetime that overrides the backend's Cache-Control/Expires; "
        "null follows the backend. no-store, private, Set-Cookie and Vary: * are still "
        "never stored.",
    )
    stale_while_revalidate: Duration = Field(
        default=0.0,
        ge=0,
        description="Default window after expiry in which a stale response is served at "
        "once while one background request refreshes it (the response's own "
        "stale-while-revalidate wins).",
    )
    stale_if_error: Duration = Field(
        default=0.0,
        ge=0,
        description="Default window after expiry in which a stale response is served when "
        "the backend fails or times out (the response's own stale-if-error wins).",
    )
    key: CacheKey = section("What the cache key is made of.")
    heuristic: bool = Field(
        default=False,
        description="Allow heuristic freshness (10% of the age of Last-Modified) for "
        "responses without max-age, s-maxage or Expires.",
    )
    allow_authorization: bool = Field(
        default=False,
        description="On a route without auth: store responses to requests with "
        "Authorization even without public, s-maxage or must-revalidate (only when the "
        "answer is the same for everyone).",
    )
    shared: bool = Field(
        default=False,
        description="On a route with auth: the answers are the same for every consumer, "
        "so each is stored once for all of them (as if it said public). By default they "
        "are stored per consumer unless the response says public or s-maxage.",
    )
    statuses: list[Annotated[int, Field(ge=200, le=599)]] | None = Field(
        default=None,
        description="Cacheable status codes; null means 200, 203, 204, 300, 301, 308, 404, "
        "405, 410, 414, 501.",
    )

    @model_validator(mode="after")
    def _sharing(self) -> RouteCache:
        if self.shared and self.key.consumer:
            raise ValueError(
                "shared: true stores answers once for every consumer and key.consumer: true "
                "keeps them per consumer: choose one"
            )
        return self


class Cache(_Model):
    """The response cache shared by the routes that have `cache:` (one per worker, and
    with ``store: redis`` one in Redis behind them for every instance)."""

    store: Literal["memory", "redis"] = Field(
        default="memory",
        description="memory: each worker keeps its own entries; redis (needs state.redis): "
        "each worker keeps its entries in memory as well as in Redis, and a miss in memory "
        "asks Redis, so an answer stored by one instance is served by all of them.",
    )
    redis_max_object_size: Size = Field(
        default=256 * 1024,
        gt=0,
        description="With store: redis, responses with larger bodies are cached in the "
        "worker's memory only, not in Redis.",
    )

    max_size: Size = Field(
        default=256 * 1024 * 1024,
        gt=0,
        description="Memory for cached responses (heads, bodies, bookkeeping); least "
        "recently used entries are evicted past it.",
    )
    max_object_size: Size = Field(
        default=8 * 1024 * 1024,
        gt=0,
        description="Responses with larger bodies are streamed through and not stored.",
    )
    lock_timeout: Duration = Field(
        default=5.0,
        gt=0,
        description="How long concurrent misses for one key wait for the single backend "
        "request before going to the backend themselves.",
    )
    purge_from: list[Network] = Field(
        default_factory=list,
        description="Client addresses or CIDRs allowed to send PURGE requests on cached "
        "routes; empty disables the PURGE method.",
    )
