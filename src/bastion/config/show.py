"""How an error message quotes a value from the file, without ever quoting a secret.

Every ``got ...`` in a config error goes through ``show``. While the loader validates, the
substituted secret values are set with ``hiding``; ``show`` replaces them *before* quoting and
shortening the value, so neither an escaped (``repr``) nor a truncated form of a secret can slip
through the final redaction of the whole message.

Redaction replaces a secret where it stands as a value, not wherever its letters occur: a
secret of ``MIN_ANYWHERE`` characters or more is replaced wherever it appears (such a string
does not occur in a message by chance, and a value may embed it: ``http://TOKEN@host``); a
shorter one only where it is a whole token, not touching a letter, digit or ``_`` on either
side, so that a one-letter secret ``y`` hides ``'y'`` and ``user:y@host`` but leaves ``bytes``
alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = ["REDACTED", "hiding", "redact", "show"]

REDACTED = "<redacted>"
# a secret this long is replaced wherever it occurs; a shorter one only as a whole token
MIN_ANYWHERE = 8

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
    """``text`` with every secret (those given, else those being hidden) replaced where it
    stands as a value (see the module's docstring)."""
    ordered = _SECRETS.get() if secrets is None else sorted(secrets, key=len, reverse=True)
    for secret in ordered:
        if not secret:
            continue
        if len(secret) >= MIN_ANYWHERE:
            text = text.replace(secret, REDACTED)
        elif secret in text:
            text = re.sub(rf"(?<!\w){re.escape(secret)}(?!\w)", REDACTED, text)
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
