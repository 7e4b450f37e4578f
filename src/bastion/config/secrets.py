"""``${NAME}`` and ``${file:path}`` in string values.

``${NAME}`` is replaced by the environment variable, ``${file:path}`` by the file's content
without its trailing newlines (relative paths resolve against the config file's directory), and
``$${`` stands for a literal ``${``. Every substituted value is collected so that printers and
error messages can redact it; no message produced here contains one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.config.errors import Loc

__all__ = ["Substitution", "substitute"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOKEN = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_LITERAL = "write $${ for a literal ${"


@dataclass
class Substitution:
    """The data with placeholders replaced, what was substituted, and what went wrong."""

    data: Any = None
    secrets: set[str] = field(default_factory=set)
    problems: list[tuple[Loc, str]] = field(default_factory=list)
    failed: set[Loc] = field(default_factory=set)
    """Key paths whose value kept a placeholder; later errors about them are noise."""


def substitute(data: Any, base_dir: Path, env: Mapping[str, str] | None = None) -> Substitution:
    """Replace placeholders in every string value (not in keys) of ``data``."""
    result = Substitution()
    result.data = _walk(data, (), base_dir, os.environ if env is None else env, result)
    return result


def _walk(value: Any, loc: Loc, base_dir: Path, env: Mapping[str, str], out: Substitution) -> Any:
    if isinstance(value, dict):
        return {k: _walk(v, (*loc, k), base_dir, env, out) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, (*loc, i), base_dir, env, out) for i, v in enumerate(value)]
    if isinstance(value, str) and "$" in value:
        return _expand(value, loc, base_dir, env, out)
    return value


def _expand(text: str, loc: Loc, base_dir: Path, env: Mapping[str, str], out: Substitution) -> str:
    problems: list[str] = []

    def replace(match: re.Match[str]) -> str:
        token, body = match.group(0), match.group(1)
        if token == "$${":
            return "${"
        if body is None:
            problems.append(f"unterminated '${{' ({_LITERAL})")
            return token
        value = _lookup(body.strip(), base_dir, env, problems)
        if value is None:
            return token
        if value:
            out.secrets.add(value)
        return value

    expanded = _TOKEN.sub(replace, text)
    if problems:
        out.problems.extend((loc, message) for message in problems)
        out.failed.add(loc)
        return text
    return expanded


def _lookup(body: str, base_dir: Path, env: Mapping[str, str], problems: list[str]) -> str | None:
    if body.startswith("file:"):
        name = body[len("file:") :].strip()
        if not name:
            problems.append("missing file name in '${file:}'")
            return None
        path = Path(name).expanduser()
        if not path.is_absolute():
            path = base_dir / path
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            problems.append(f"secret file {name} is not UTF-8 text")
        except OSError as error:
            problems.append(f"cannot read secret file {name}: {error.strerror or error}")
        return None
    if not _NAME.fullmatch(body):
        problems.append(
            f"invalid placeholder '${{{body}}}': use ${{NAME}} for an environment variable "
            f"or ${{file:path}} for a file ({_LITERAL})"
        )
        return None
    if body not in env:
        problems.append(f"environment variable {body} is not set")
        return None
    return env[body]
