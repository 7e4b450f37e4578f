"""A route's response-field edits folded into one `FieldEdit`, for the proxy to apply while it
builds an answer's head.

Header rules and the security-headers preset only remove fields by name and add fields. A
proxied answer's head is built field by field from the upstream's parsed fields anyway
(`bastion.proxy.exchange`), so it can skip the removed names in that same pass and append
the added lines: no second parse of the head. Answers the gateway makes itself (problems,
static files, cache hits) still go through the route's ``on_head`` hook, which gives the same
result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bastion.http1.request import Request
    from bastion.policies.headers import Template

__all__ = ["FieldEdit", "Fields", "FoldablePolicy", "field_line", "fold"]

# (lowercase names removed, name prefixes removed, fields added in order: name and value)
Fields = tuple[frozenset[bytes], tuple[bytes, ...], list[tuple[bytes, "bytes | Template"]]]


class FoldablePolicy(Protocol):
    def field_edit(self) -> Fields | None:
        """The policy's edit as removals and additions, or None when it needs the head
        (a field added only when absent, a field that depends on another)."""


class FieldEdit:
    __slots__ = ("constant", "drop", "kinds", "lines", "prefixes")

    def __init__(
        self,
        drop: frozenset[bytes],
        prefixes: tuple[bytes, ...],
        lines: list[bytes | Callable[[Request], bytes]],
    ) -> None:
        self.drop = drop
        self.prefixes = prefixes
        # the added lines: all constant (one bytes), or rendered per request
        self.constant = (
            b"".join(x for x in lines if isinstance(x, bytes))
            if all(isinstance(x, bytes) for x in lines)
            else None
        )
        self.lines = lines
        self.kinds: dict[bytes, int] | None = None  # the proxy's field table, made at first use

    def render(self, req: Request) -> bytes:
        """The header lines this edit adds to the answer of ``req``."""
        if self.constant is not None:
            return self.constant
        out = b""
        for line in self.lines:
            out += line if line.__class__ is bytes else line(req)  # type: ignore[operator]
        return out

    def removes(self, lname: bytes) -> bool:
        return lname in self.drop or (bool(self.prefixes) and lname.startswith(self.prefixes))


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


def field_line(name: bytes, value: bytes | Template) -> bytes | Callable[[Request], bytes]:
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
