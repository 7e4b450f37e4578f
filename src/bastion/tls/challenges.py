"""HTTP-01 key authorizations waiting to be fetched by the CA.

The ACME code (in a thread, maybe in another worker process than the one the CA's
request reaches) publishes ``token → key authorization``; the plain-HTTP listener answers
``GET /.well-known/acme-challenge/<token>`` from here. Entries live as small files under
``<data dir>/acme/challenges/`` so that every
worker of the machine sees them. Only requests whose path starts with the challenge
prefix and that would otherwise be redirected to HTTPS ever look here.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from bastion.tls.store import atomic_write, ensure_dir

__all__ = ["CHALLENGE_PREFIX", "ChallengeStore"]

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")


class ChallengeStore:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "acme" / "challenges"

    def publish(self, token: str, key_authorization: str) -> None:
        if not _TOKEN.fullmatch(token):
            raise ValueError(f"invalid ACME token {token!r}")
        ensure_dir(self.dir)
        atomic_write(self.dir / token, key_authorization.encode("ascii"))

    def unpublish(self, token: str) -> None:
        if _TOKEN.fullmatch(token):
            with contextlib.suppress(OSError):
                (self.dir / token).unlink()

    def lookup(self, token: str) -> bytes | None:
        """The key authorization for ``token``, or None (a tiny file read)."""
        if not _TOKEN.fullmatch(token):
            return None
        try:
            return (self.dir / token).read_bytes()
        except OSError:
            return None
