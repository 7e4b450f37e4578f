"""A route's response-field edits folded into one `FieldEdit`, for the proxy to apply while it
builds an answer's head.

Header rules and the security-headers preset only remove fields by name and add fields. A
proxied answer's head is rewritten in one pass anyway (`bastion.proxy.exchange`): the scan
of its bytes in the compiled build (`proxy/raw_head.py`), the per-field rewrite otherwise
(`proxy/response_head.py`). Either skips the removed names in that same pass, and the
added lines are appended: no second parse of the head. Answers the gateway makes itself
(problems, static files, cache hits) still go through the route's ``on_head`` hook, which
gives the same result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bastion.http.request import Request

Getter = Callable[["Request"], bytes]

__all__ = ["FieldEdit", "Fields", "FoldablePolicy", "Getter", "Template", "field_line", "fold"]

# (lowercase names removed, name prefixes removed, fields added in order: name and value)
Fields = tuple[frozenset[bytes], tuple[bytes, ...], list[tuple[bytes, "bytes | Template"]]]


class FoldablePolicy(Protocol):
    def field_edit(self) -> Fields | None:
        """The policy's edit as removals and additions, or None when it needs the head
        (a field added only when absent, a field that depends on another)."""


class FieldEdit:
    __slots__ = ("added", "drop", "drop_names", "drops_date", "kinds", "prefixes")

    def __init__(
        self,
        drop: frozenset[bytes],
        prefixes: tuple[bytes, ...],
        lines: list[bytes | Getter],
    ) -> None:
        # lowercase whatever a policy gave: both the per-field path and the scan of the
        # answer's bytes (proxy/raw_head.py, which takes tuples) compare lowercase names
        self.drop = frozenset(name.lower() for name in drop)
        self.prefixes = tuple(prefix.lower() for prefix in prefixes)
        self.drop_names = tuple(sorted(self.drop))
        self.drops_date = b"date" in self.drop
        self.added = Template.of(lines)  # the lines added
        self.kinds: dict[bytes, int] | None = None  # the proxy's field table, made at first use

    def render(self, req: Request) -> bytes:
        """The header lines this edit adds to the answer of ``req``."""
        return self.added.render(req)

    def removes(self, lname: bytes) -> bool:
        return lname in self.drop or (bool(self.prefixes) and lname.startswith(self.prefixes))


class Template:
    """Header text (a value, or whole lines): constant, or rendered per request from its
    parts, constant bytes and functions of the request."""

    __slots__ = ("constant", "parts")

    def __init__(self, constant: bytes | None, parts: list[bytes | Getter]) -> None:
        self.constant = constant
        self.parts = parts

    @classmethod
    def of(cls, parts: list[bytes | Getter]) -> Template:
        if all(isinstance(p, bytes) for p in parts):
            return cls(b"".join(p for p in parts if isinstance(p, bytes)), [])
        return cls(None, parts)

    def render(self, req: Request) -> bytes:
        if self.constant is not None:
            return self.constant
        out = b""
        for part in self.parts:
            out += part if part.__class__ is bytes else part(req)  # type: ignore[operator]
        return out


def fold(policies: Sequence[object]) -> FieldEdit | None:
    """The edit of ``policies`` applied in order, or None when one of them cannot fold."""
    drop: set[bytes] = set()
    prefixes: list[bytes] = []
    added: list[tuple[bytes, bytes | Template]] = []
    for policy in policies:
        edit = getattr(policy, "field_edit", None)
        fields = edit() if edit is not None else None
        if fields is None:
            return None
        names, starts, lines = fields
        # a later policy's removals also remove what earlier ones added
        added = [
            (name, value)
            for name, value in added
            if (low := name.lower()) not in names and not (starts and low.startswith(starts))
        ]
        drop |= names
        prefixes += starts
        added += lines
    return FieldEdit(frozenset(drop), tuple(prefixes), [field_line(n, v) for n, v in added])


def field_line(name: bytes, value: bytes | Template) -> bytes | Getter:
    """A header line: constant bytes, or a function rendering it for a request."""
    if isinstance(value, bytes):
        return name + b": " + value + b"\r\n"
    if value.constant is not None:
        return name + b": " + value.constant + b"\r\n"
    head = name + b": "
    if len(value.parts) == 1 and callable(value.parts[0]):
        get = value.parts[0]  # one placeholder and nothing else: "{client_ip}"
        return lambda req: head + get(req) + b"\r\n"
    render = value.render
    return lambda req: head + render(req) + b"\r\n"
