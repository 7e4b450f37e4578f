"""Name → builder tables: how a name chosen in the config becomes a runtime object.

The config models list the names they accept (a ``Literal`` or a set of keys); each table
here maps those names to what builds them, and the unit tests check that every accepted
name has a builder. A name without one is a configuration error naming its key path,
never a silent fallback to some default. Tables are read while a plan is compiled, never
per request.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from bastion.config.errors import ConfigError, ConfigIssue, Loc, format_path

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A fixed table of builders by name; ``kind`` names what the names are, in errors."""

    __slots__ = ("_entries", "kind")

    def __init__(self, kind: str, entries: Mapping[str, T]) -> None:
        self.kind = kind
        self._entries = dict(entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def get(self, name: str, loc: Loc, source: str) -> T:
        """The builder for ``name``; ``loc`` is the key path that chose it and ``source``
        the config file, for the error raised when there is none."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries))
            message = f"unknown {self.kind} {name!r}; known: {known}"
            raise ConfigError([ConfigIssue(source, None, format_path(loc), message)]) from None
