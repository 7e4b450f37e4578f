"""Public keys for JWT verification: PEM files, JWKS documents (RFC 7517/7518) and a JWKS URL
fetched in the background.

A key remembers its type, so that the verifier can refuse a token whose algorithm does not fit
the key (an HS256 token "signed" with an RSA public key as the secret, an ES384 token against a
P-256 key).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from bastion.clock import SYSTEM_CLOCK, Clock
from bastion.keymaterial.jwk import PublicKey, parse_jwks
from bastion.policies.authclient import AuthClient, AuthClientError, loggable_url

__all__ = ["JwksSource", "jwks_source"]

log = logging.getLogger("bastion.jwt")

class JwksSource:
    """A JWKS URL's keys, fetched in the background and kept while the server is down.

    Requests never wait for a scheduled refresh: they use the keys held. They wait (up to the
    fetch timeout) only when no key was ever fetched, or when a token names an unknown kid and
    the last fetch is older than ``min_interval`` (a key rotation)."""

    def __init__(
        self,
        url: str,
        refresh: float,
        min_interval: float,
        timeout: float,
        ca: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.url = loggable_url(url)  # for log lines
        self._now = clock.monotonic  # intervals and cool-downs: never goes back
        self.refresh = refresh
        self.min_interval = min_interval
        self.timeout = timeout
        self.keys: list[PublicKey] = []
        self.fetched_at = 0.0  # monotonic time of the last successful fetch
        self.tried_at = -1e18  # monotonic time of the last attempt
        self.error = ""
        self._client = AuthClient(url, ca=ca, setting="auth.jwt")  # the full URL
        self._task: asyncio.Task[None] | None = None

    def stale(self) -> bool:
        return self._now() - self.fetched_at > self.refresh

    def refresh_soon(self) -> None:
        """Start a background fetch unless one runs or one was tried very recently."""
        if self._task is None and self._now() - self.tried_at >= min(
            self.min_interval, self.refresh
        ):
            self._task = asyncio.get_running_loop().create_task(self._fetch())

    def prefetch(self) -> None:
        """At load: start fetching now, so that the first request finds the keys, when
        called from the running loop and no key is held yet."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # `bastion check`: no loop serves, nothing to fetch for
        if not self.keys:
            self.refresh_soon()

    async def wait(self, forced: bool = False) -> None:
        """Fetch now (or join the fetch under way), at most once per min_interval; while no
        key is held at all, at most every 5 seconds (an issuer that starts after the
        gateway is found soon)."""
        if self._task is None:
            interval = self.min_interval if self.keys else min(self.min_interval, 5.0)
            if forced and self._now() - self.tried_at < interval:
                return
            self._task = asyncio.get_running_loop().create_task(self._fetch())
        await asyncio.shield(self._task)

    async def _fetch(self) -> None:
        self.tried_at = self._now()
        try:
            answer = await self._client.get([("Accept", b"application/json")], self.timeout)
            if answer.status != 200:
                raise ValueError(f"status {answer.status}")
            keys = parse_jwks(answer.body)
            if not keys:
                raise ValueError("no signature key in the document")
        except (AuthClientError, ValueError, TimeoutError) as exc:
            self.error = str(exc) or type(exc).__name__
            held = (
                f"keeping the {len(self.keys)} keys fetched before"
                if self.keys
                else ("no keys are cached: tokens cannot be verified")
            )
            log.error("JWKS %s cannot be fetched (%s); %s", self.url, self.error, held)
        else:
            self.keys = keys
            self.fetched_at = self._now()
            self.error = ""
            log.info("JWKS %s fetched: %d keys", self.url, len(keys))
        finally:
            self._task = None


# One source per URL and settings, shared by every route (and kept across reloads) so that a
# reload neither drops the keys held nor refetches them.
_SOURCES: dict[tuple[str, float, float, float, str | None, int], JwksSource] = {}


def jwks_source(
    url: str,
    refresh: float,
    min_interval: float,
    timeout: float,
    ca: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> JwksSource:
    # a CA file changed on disk takes effect at the next reload: it makes a new source
    try:
        ca_version = Path(ca).stat().st_mtime_ns if ca is not None else 0
    except OSError:
        ca_version = 0  # gone since the config check: the client reports the failure
    key = (url, refresh, min_interval, timeout, ca, ca_version)
    source = _SOURCES.get(key)
    if source is None:
        source = _SOURCES[key] = JwksSource(url, refresh, min_interval, timeout, ca, clock)
    return source
