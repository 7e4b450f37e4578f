"""The ``state:`` section: where state shared by several instances lives (Redis).

Without ``state.redis`` every process keeps its own counters (exact for one worker). With
it, rate limits and quotas are counted in Redis, exactly across every instance and worker
that names the same server and ``key_prefix``. The forms of ``redis``:

- a URL: ``redis://[user:password@]host[:port][/db]``, ``rediss://…`` (TLS) or
  ``unix:///path/redis.sock[?db=N]``;
- ``{sentinel: [host:port, …], service: NAME}``: the master that these Sentinels name;
- ``{cluster: [host:port, …]}``: a Redis Cluster, found from these nodes.

A password is written as ``${ENV}`` or ``${file:path}`` like every secret; `redis_target`
describes the server without it, for logs.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    field_validator,
)

from bastion.config.state_values import encryption_key_bytes, redis_target
from bastion.config.types import Duration, one_or_many, section

__all__ = [
    "Breaker",
    "RedisCluster",
    "RedisSentinel",
    "State",
    "encryption_key_bytes",
    "redis_target",
]

_SCHEMES = ("redis", "rediss", "unix")
_URL_FORMS = "redis://host:port/db, rediss://host:port/db or unix:///path/to/redis.sock"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


def _node(value: str) -> str:
    """``host:port`` (``[v6]:port``), checked."""
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, got {value!r}")
    return value.strip()


Node = Annotated[str, BeforeValidator(lambda v: _node(v) if isinstance(v, str) else v)]


class RedisSentinel(_Model):
    """A master found through Redis Sentinel."""

    sentinel: Annotated[list[Node], BeforeValidator(one_or_many)] = Field(
        min_length=1, description="Sentinel addresses, host:port each."
    )
    service: str = Field(min_length=1, description="The master's name in the Sentinels.")
    username: str | None = Field(default=None, description="ACL user of the master; null: none.")
    password: str | None = Field(
        default=None, description="Password of the master (a secret: write ${ENV}); null: none."
    )
    db: int = Field(default=0, ge=0, description="Database number on the master.")


class RedisCluster(_Model):
    """A Redis Cluster, found from a few of its nodes."""

    cluster: Annotated[list[Node], BeforeValidator(one_or_many)] = Field(
        min_length=1, description="Some of the cluster's nodes, host:port each."
    )
    username: str | None = Field(default=None, description="ACL user; null: none.")
    password: str | None = Field(
        default=None, description="Password of the nodes (a secret: write ${ENV}); null: none."
    )
    tls: bool = Field(default=False, description="Speak TLS to the nodes.")


class Breaker(_Model):
    """When the gateway stops asking Redis, and when it tries again."""

    failures: int = Field(
        default=5,
        ge=1,
        description="Consecutive errors or timeouts after which requests stop asking Redis "
        "and take their limits' on_store_down instead.",
    )
    open_for: Duration = Field(
        default=2.0,
        gt=0,
        description="How long requests do not ask Redis after it failed; then one request "
        "tries it again, and its success brings every request back.",
    )


def _check_url(value: str) -> str:
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError as exc:
        raise ValueError(f"not a Redis URL ({exc}): expected {_URL_FORMS}") from None
    if parts.scheme not in _SCHEMES:
        raise ValueError(
            f"unsupported scheme {parts.scheme + '://' if parts.scheme else 'none'}: "
            f"expected {_URL_FORMS} (Sentinel and Cluster: see the state section of the docs)"
        )
    if parts.scheme == "unix":
        if not parts.path.startswith("/"):
            raise ValueError(f"a unix:// URL needs an absolute path: expected {_URL_FORMS}")
    elif not parts.hostname:
        raise ValueError(f"no host in the Redis URL: expected {_URL_FORMS}")
    elif parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise ValueError("the path of a Redis URL is the database number (/0, /1, …)")
    return value.strip()


def _redis(value: Any) -> Any:
    return _check_url(value) if isinstance(value, str) else value


def _redis_form(value: Any) -> str | None:
    """Which form a ``redis`` value is: one message about that form, not one per form."""
    if isinstance(value, str):
        return "url"
    if isinstance(value, dict):
        return "cluster" if "cluster" in value and "sentinel" not in value else "sentinel"
    if isinstance(value, RedisSentinel | RedisCluster):
        return "sentinel" if isinstance(value, RedisSentinel) else "cluster"
    return None


RedisForm = Annotated[
    Annotated[str, Tag("url")]
    | Annotated[RedisSentinel, Tag("sentinel")]
    | Annotated[RedisCluster, Tag("cluster")],
    Discriminator(
        _redis_form,
        custom_error_type="redis_form",
        custom_error_message=f"expected a URL ({_URL_FORMS}), "
        "{sentinel: [host:port, …], service: NAME} or {cluster: [host:port, …]}",
    ),
]


class State(_Model):
    """Shared state: where several instances keep their rate limits and quotas."""

    redis: Annotated[RedisForm | None, BeforeValidator(_redis)] = Field(
        default=None,
        description="The Redis server: redis://[user:password@]host:port/db, rediss://… (TLS), "
        "unix:///path.sock, {sentinel: [host:port, …], service: NAME} or "
        "{cluster: [host:port, …]}; null keeps every counter in its own process.",
    )
    timeout: Duration = Field(
        default=0.05,
        gt=0,
        description="Longest time a request waits for Redis (connecting and answering); past "
        "it, the request takes its limits' on_store_down and the error counts for the breaker.",
    )
    key_prefix: str = Field(
        default="bastion:",
        description="Start of every Redis key of this gateway: instances that share counters "
        "use the same prefix.",
    )
    breaker: Breaker = section(
        "When requests stop asking an unreachable Redis, and when they try again."
    )
    instances: int = Field(
        default=1,
        ge=1,
        description="How many gateway instances share this Redis: while it is unreachable, "
        "each worker of each instance counts on its own with a local share of every limit "
        "(on_store_down: local), the limit divided by instances times workers.",
    )

    encryption_key: SecretStr | None = Field(
        default=None,
        description="A 32-byte key, base64 or hex (a secret: write it as ${ENV} or "
        "${file:path}), that encrypts the private keys kept in Redis (ACME account and "
        "certificate keys) with AES-GCM; every instance needs the same one. null: stored "
        "as they are.",
    )

    @field_validator("encryption_key")
    @classmethod
    def _key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            encryption_key_bytes(value.get_secret_value())
        return value

    @field_validator("key_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if "{" in value or "}" in value:
            raise ValueError("may not contain { or } (the keys' hash tag follows it)")
        return value
