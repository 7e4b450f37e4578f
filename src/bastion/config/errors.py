"""What a broken config file produces: one ``ConfigIssue`` per problem, all raised together."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["ConfigError", "ConfigIssue", "Loc", "format_path", "line_of"]

Loc = tuple[str | int, ...]
"""A key path as a tuple: ``("sites", 0, "routes", 1)``."""


def format_path(loc: Sequence[str | int]) -> str:
    """``("sites", 0, "routes", 1, "proxy")`` -> ``sites[0].routes[1].proxy``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def line_of(loc: Loc, lines: Mapping[Loc, int]) -> int | None:
    """The line of ``loc`` or, for a key that is not in the file, of its nearest parent."""
    for end in range(len(loc), -1, -1):
        line = lines.get(loc[:end])
        if line is not None:
            return line
    return None


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a config file.

    ``line`` is 1-based (None when unknown, e.g. for a config built from a dict); ``path`` is
    the key path like ``sites[0].routes[1].proxy.upstreams[0]``, empty for the whole file.
    """

    file: str
    line: int | None
    path: str
    message: str
    column: int | None = None
    """1-based, where it is known (YAML syntax errors, duplicate keys)."""
    loc: Loc | None = field(default=None, compare=False)
    """The key path as a tuple, when known (to find the line later)."""

    @classmethod
    def at(cls, file: str, loc: Loc, message: str) -> ConfigIssue:
        """An issue at key path ``loc`` whose line is not known yet (see
        ``LoadedConfig.locate``)."""
        return cls(file, None, format_path(loc), message, loc=loc)

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        if self.line is not None and self.column is not None:
            where += f":{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """The config file is unusable; ``issues`` lists every problem found, in file order."""

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        self.issues: list[ConfigIssue] = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)
