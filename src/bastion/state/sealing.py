"""Private keys at rest in a shared store: AES-GCM under ``state.encryption_key``.

A sealed value is ``MAGIC || nonce (12 bytes) || ciphertext+tag``; the associated data is
the name the value is kept under (Redis key and field), so a sealed value copied to
another key does not open. Without a key, values are kept as they are; a plain PEM value
still opens once a key is configured (it is sealed at its next write), but a sealed one
never opens without the right key: that is a clear error, never a silent new key or a
new order.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["SealError", "Sealer"]

MAGIC = b"bastion-aesgcm-1:"


class SealError(ValueError):
    """A stored private key that cannot be opened; ``hint`` says what to do."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


class Sealer:
    """Seals and opens private keys with one AES-256-GCM key (or none)."""

    def __init__(self, key: bytes | None) -> None:
        self.aead = AESGCM(key) if key is not None else None

    def seal(self, value: bytes, where: str) -> bytes:
        if self.aead is None:
            return value
        nonce = os.urandom(12)
        return MAGIC + nonce + self.aead.encrypt(nonce, value, where.encode())

    def open(self, stored: bytes, where: str) -> bytes:
        if not stored.startswith(MAGIC):
            return stored  # kept before a key was configured
        if self.aead is None:
            raise SealError(
                f"the private key in {where} is encrypted but state.encryption_key is not set",
                "set state.encryption_key to the key the other instances use",
            )
        body = stored[len(MAGIC) :]
        try:
            return self.aead.decrypt(body[:12], body[12:], where.encode())
        except InvalidTag:
            raise SealError(
                f"the private key in {where} does not decrypt with state.encryption_key "
                "(another key encrypted it, or the value was altered)",
                "give every instance the same state.encryption_key; nothing is ordered or "
                "replaced until it matches",
            ) from None
