"""How an error message quotes a value from the file, without ever quoting a secret.

Every ``got ...`` in a config error goes through ``show``. While the loader validates, the
substituted secret values are set with ``hiding``; ``show`` replaces them *before* quoting and
shortening the value, so neither an escaped (``repr``) nor a truncated form of a secret can slip
through the final substring redaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = ["REDACTED", "hiding", "redact", "show"]

REDACTED = "<redacted>"

_SECRETS: ContextVar[tuple[str, ...]] = ContextVar("bastion_config_secrets", default=())


@contextmanager
def hiding(secrets: Iterable[str]) -> Iterator[None]:
    """Within the block, ``show`` and ``redact`` replace each of ``secrets``."""
    # Longest first, so that a secret containing another is replaced whole.
    token = _SECRETS.set(tuple(sorted({s for s in secrets if s}, key=len, reverse=True)))
    try:
        yield
    finally:
        _SECRETS.reset(token)


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with every secret (those given, else those being hidden) replaced."""
    ordered = _SECRETS.get() if secrets is None else sorted(secrets, key=len, reverse=True)
    for secret in ordered:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def show(value: Any, limit: int = 60) -> str:
    """A short rendering of a YAML value for messages: never a whole list or mapping."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = repr(redact(value)) if isinstance(value, str) else redact(str(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."
