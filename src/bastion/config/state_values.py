"""What the shared-state code reads off the ``state`` section, without its models: the
encryption key's bytes and a Redis server's name for messages (``bastion.config.plain``
says why a serving process does without the models)."""

from __future__ import annotations

import base64
import binascii
import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from bastion.config.plain import is_a

if TYPE_CHECKING:
    from typing_extensions import TypeIs

    from bastion.config.state_models import RedisCluster, RedisSentinel

__all__ = ["encryption_key_bytes", "is_cluster", "is_sentinel", "redis_target"]


def is_sentinel(redis: object) -> TypeIs[RedisSentinel]:
    """``state.redis`` names Sentinels (the model or its plain node)."""
    return is_a(redis, "RedisSentinel")


def is_cluster(redis: object) -> TypeIs[RedisCluster]:
    """``state.redis`` names a Redis Cluster's nodes."""
    return is_a(redis, "RedisCluster")


_HEX = re.compile(r"[0-9A-Fa-f]{64}")


def encryption_key_bytes(text: str) -> bytes:
    """The 32 bytes of an ``encryption_key`` (64 hex digits, or base64 / base64url);
    ``ValueError`` that never shows the value."""
    raw = text.strip()
    if _HEX.fullmatch(raw):
        return bytes.fromhex(raw)
    try:
        key = base64.b64decode(raw.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ValueError(
            "expected a 32-byte key as 64 hex digits or base64 (the value is hidden); "
            "make one with: openssl rand -base64 32"
        )
    return key


def redis_target(redis: str | RedisSentinel | RedisCluster) -> str:
    """The server for logs and messages: no user, no password."""
    if is_sentinel(redis):
        return f"sentinel {redis.service} via {', '.join(redis.sentinel)}"
    if is_cluster(redis):
        return f"cluster via {', '.join(redis.cluster)}"
    parts = urlsplit(redis)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
