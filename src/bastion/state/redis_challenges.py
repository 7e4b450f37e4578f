"""ACME challenge answers in Redis: whichever instance the CA's validation request reaches
answers it, not only the one that ordered.

- HTTP-01: ``<p>acme-challenge:<token>`` → key authorization, expiring after
  ``TOKEN_TTL`` (an order abandoned by a dead instance leaves nothing behind for long).
  The plain-HTTP listener reads it on the event loop with the asyncio client
  (`lookup_async`, bounded by ``state.timeout``); the blocking `lookup` is for threads.
- TLS-ALPN-01: ``<p>acme-alpn`` is a hash, name → challenge certificate and key (PEM;
  a throwaway key, never sealed). Each worker whose https listeners may answer TLS-ALPN-01
  mirrors the hash into its local challenge directory (`mirror_alpn`), which the listeners
  already watch.

Every answer is also written to the local files (``FileChallengeTokens``): when Redis does
not answer, this machine still answers its own challenges.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from bastion.config.state_values import redis_target
from bastion.state.challenges import FileChallengeTokens, valid_token
from bastion.state.files import atomic_write, ensure_dir
from bastion.state.redis_sync import connect_sync

if TYPE_CHECKING:
    from bastion.config.state_models import State

__all__ = ["ALPN_MIRROR", "TOKEN_TTL", "RedisChallengeTokens"]

log = logging.getLogger("bastion.acme")

TOKEN_TTL = 600.0  # seconds an HTTP-01 answer stays in Redis unless removed earlier
ALPN_MIRROR = 0.5  # how often a worker mirrors TLS-ALPN-01 certificates (seconds)
_ALPN_TTL = 3600  # seconds the challenge-certificate hash lives after its last change


ANSWER_WAIT = 1.0
"""Seconds an http-01 answer may wait for Redis. ``state.timeout`` (50 ms by default) is a
request's budget, sized for rate limits; a validation comes a few times per certificate,
and one answered with the redirect instead fails the whole order: a just-started
instance's first connection on a busy machine may take longer than 50 ms."""

class RedisChallengeTokens:
    """``ChallengeTokens`` in Redis, with the local files as a copy."""

    def __init__(self, settings: State, local: FileChallengeTokens) -> None:
        assert settings.redis is not None
        self.settings = settings
        self.local = local
        self.target = redis_target(settings.redis)
        self.prefix = settings.key_prefix
        self.alpn_key = f"{self.prefix}acme-alpn"
        self._sync: Any = None
        self._async: Any = None
        self._owner: tuple[int, asyncio.AbstractEventLoop] | None = None

    def _key(self, token: str) -> str:
        return f"{self.prefix}acme-challenge:{token}"

    def _client(self) -> Any:
        if self._sync is None:
            self._sync = connect_sync(self.settings)
        return self._sync

    def _aclient(self) -> Any:
        from bastion.state.redis_client import connect

        owner = (os.getpid(), asyncio.get_running_loop())
        if self._async is None or self._owner != owner:
            self._async = connect(self.settings)  # (one per process and loop: never forked)
            self._owner = owner
        return self._async

    # ----------------------------------------------------------------- HTTP-01
    def publish(self, token: str, key_authorization: str) -> None:
        self.local.publish(token, key_authorization)
        try:
            self._client().set(self._key(token), key_authorization, px=int(TOKEN_TTL * 1000))
        except (RedisError, OSError) as exc:
            log.warning(
                "acme: cannot publish the http-01 answer in %s (%s): only this machine answers it",
                self.target,
                exc,
            )

    def unpublish(self, token: str) -> None:
        self.local.unpublish(token)
        if valid_token(token):
            with contextlib.suppress(RedisError, OSError):
                self._client().delete(self._key(token))

    def lookup(self, token: str) -> bytes | None:
        if not valid_token(token):
            return None
        try:
            value = self._client().get(self._key(token))
        except (RedisError, OSError):
            value = None
        return bytes(value) if value is not None else self.local.lookup(token)

    async def lookup_async(self, token: str) -> bytes | None:
        """`lookup` on the event loop: the asyncio client, waiting at most
        ``state.timeout`` or ``ANSWER_WAIT``, the longer; then the local files."""
        if not valid_token(token):
            return None
        value = None
        try:
            async with asyncio.timeout(max(self.settings.timeout, ANSWER_WAIT)):
                value = await self._aclient().get(self._key(token))
        except (RedisError, OSError, TimeoutError) as exc:
            log.debug("acme: http-01 answer not read from %s: %s", self.target, exc)
        return bytes(value) if value is not None else self.local.lookup(token)

    # ------------------------------------------------------------- TLS-ALPN-01
    def publish_certificate(self, name: str, pem: bytes) -> None:
        """Make the TLS-ALPN-01 certificate of ``name`` known to every instance."""
        try:
            client = self._client()
            client.hset(self.alpn_key, name, pem)
            client.expire(self.alpn_key, _ALPN_TTL)
        except (RedisError, OSError) as exc:
            log.warning(
                "acme: cannot publish the tls-alpn-01 certificate in %s (%s): only this "
                "machine answers it",
                self.target,
                exc,
            )

    def unpublish_certificate(self, name: str) -> None:
        with contextlib.suppress(RedisError, OSError):
            self._client().hdel(self.alpn_key, name)

    async def mirror_alpn(self, directory: Path) -> None:
        """Forever: copy the shared TLS-ALPN-01 certificates into ``directory`` (and remove
        those that were mirrored and are gone), for this worker's https listeners."""
        mirrored: dict[str, bytes] = {}
        while True:
            await asyncio.sleep(ALPN_MIRROR)
            try:
                async with asyncio.timeout(max(self.settings.timeout, 1.0)):
                    found = await self._aclient().hgetall(self.alpn_key)
            except (RedisError, OSError, TimeoutError):
                continue  # the ordering instance answers its own challenges meanwhile
            current = {bytes(k).decode(errors="replace"): bytes(v) for k, v in found.items()}
            if current == mirrored:
                continue
            await asyncio.to_thread(_mirror, directory, mirrored, current)
            mirrored = current


def _mirror(directory: Path, before: dict[str, bytes], now: dict[str, bytes]) -> None:
    ensure_dir(directory)
    for name, pem in now.items():
        if before.get(name) != pem and "/" not in name and not name.startswith("."):
            atomic_write(directory / f"{name.lower()}.pem", pem, 0o600)
    for name in before.keys() - now.keys():
        with contextlib.suppress(OSError):
            (directory / f"{name.lower()}.pem").unlink()
