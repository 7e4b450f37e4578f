"""HTTP-01 key authorizations waiting to be fetched by the CA.

The ACME code (in a thread, maybe in another worker process than the one the CA's
request reaches) publishes ``token → key authorization``; the plain-HTTP listener answers
``GET /.well-known/acme-challenge/<token>`` from here. Only requests whose path starts
with the challenge prefix and that would otherwise be redirected to HTTPS ever look here.

``ChallengeTokens`` is what both sides use; a backend only has to make a published token
visible to every process that may receive the CA's request:

- ``FileChallengeTokens``: small files under ``<data dir>/acme/challenges/<token>``, seen
  by every worker of the machine (the default);
- ``MemoryChallengeTokens``: a dict, for a single process (tests, embedding).

A backend shared between machines (Redis) is one more module implementing the protocol.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Protocol, runtime_checkable

from bastion.state.files import atomic_write, ensure_dir

__all__ = [
    "CHALLENGE_PREFIX",
    "ChallengeCertificates",
    "ChallengeTokens",
    "FileChallengeTokens",
    "MemoryChallengeTokens",
    "valid_token",
]

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
# RFC 8555 8.3: base64url characters; the length bound keeps a file name (and a key) sane
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")


def valid_token(token: str) -> bool:
    """Whether ``token`` can be an ACME token (never a path: no dots, no slashes)."""
    return _TOKEN.fullmatch(token) is not None


class ChallengeTokens(Protocol):
    """token → key authorization, published by the ACME side, read by the HTTP side."""

    def publish(self, token: str, key_authorization: str) -> None:
        """Make the answer visible; raises ``ValueError`` for an invalid token."""
        ...

    def unpublish(self, token: str) -> None:
        """Forget the answer (missing or invalid tokens are ignored)."""
        ...

    def lookup(self, token: str) -> bytes | None:
        """The key authorization for ``token``, or None (invalid tokens included)."""
        ...


@runtime_checkable
class ChallengeCertificates(Protocol):
    """TLS-ALPN-01 certificates made known to other instances (a shared store's)."""

    def publish_certificate(self, name: str, pem: bytes) -> None: ...

    def unpublish_certificate(self, name: str) -> None: ...


class FileChallengeTokens:
    """One file per token under ``<data dir>/acme/challenges/``."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "acme" / "challenges"

    def publish(self, token: str, key_authorization: str) -> None:
        if not valid_token(token):
            raise ValueError(f"invalid ACME token {token!r}")
        ensure_dir(self.dir)
        atomic_write(self.dir / token, key_authorization.encode("ascii"))

    def unpublish(self, token: str) -> None:
        if valid_token(token):
            with contextlib.suppress(OSError):
                (self.dir / token).unlink()

    def lookup(self, token: str) -> bytes | None:
        """A tiny file read (only challenge requests get here)."""
        if not valid_token(token):
            return None
        try:
            return (self.dir / token).read_bytes()
        except OSError:
            return None


class MemoryChallengeTokens:
    """In this process only: enough when one process both orders and answers."""

    def __init__(self) -> None:
        self.tokens: dict[str, bytes] = {}

    def publish(self, token: str, key_authorization: str) -> None:
        if not valid_token(token):
            raise ValueError(f"invalid ACME token {token!r}")
        self.tokens[token] = key_authorization.encode("ascii")

    def unpublish(self, token: str) -> None:
        self.tokens.pop(token, None)

    def lookup(self, token: str) -> bytes | None:
        return self.tokens.get(token)
