"""Password hashes of Basic auth as the config gives them: inline (``users``) or in an
htpasswd-style file (``users_file``). Only bcrypt and argon2 hashes are accepted.

The format is checked here, with the parser of the library that verifies the passwords, so
that a plain password or a broken hash is a config error with its line.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["check_hash", "read_users_file"]



def _argon2_parses(value: str) -> bool:
    """Whether argon2-cffi (which verifies the passwords) reads this encoded hash."""
    # imported here: its C bindings cost memory in every gateway without argon2 users
    from argon2 import extract_parameters
    from argon2.exceptions import InvalidHashError

    try:
        extract_parameters(value)
    except (InvalidHashError, ValueError):
        return False
    return True


def check_hash(value: str) -> str | None:
    """What is wrong with a stored hash, or None when it is a usable bcrypt/argon2 hash."""
    if value.startswith(("$2a$", "$2b$", "$2y$")):
        parts = value.split("$")
        if len(value) != 60 or len(parts) != 4 or not parts[2].isdigit():
            return "not a valid bcrypt hash (the value is hidden)"
        return None
    if value.startswith("$argon2"):
        if not _argon2_parses(value):
            return "not a valid argon2 hash (the value is hidden)"
        return None
    return "expected a bcrypt ($2b$...) or argon2 ($argon2id$...) hash, not a plain password"


def read_users_file(path: str) -> dict[str, str]:
    """name -> hash from an htpasswd-style file; raises ValueError with the line number."""
    users: dict[str, str] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ValueError(f"cannot read users_file: {reason}") from None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, hashed = line.partition(":")
        if not sep or not name:
            raise ValueError(f"users_file line {number}: expected name:hash")
        problem = check_hash(hashed.strip())
        if problem:
            raise ValueError(f"users_file line {number} ({name}): {problem}")
        users[name] = hashed.strip()
    return users
