"""http1/head.py's tables of what clients usually send must give exactly what the general
path gives: a field name's lowercase form, a Connection value's token set. A wrong entry
would make one spelling of a field (or of a Connection option) mean something else than the
others, which is how a gateway's checks get walked around."""

from __future__ import annotations

from bastion.http1.head import _CONNECTION_VALUES, _LOWER_NAMES


def general_tokens(value: bytes) -> frozenset[bytes]:
    """The token set `_special_header` builds for a Connection value not in the table."""
    return frozenset(t.strip().lower() for t in value.split(b",") if t.strip())


def test_each_name_spelling_maps_to_its_lowercase_form() -> None:
    for spelling, lowered in _LOWER_NAMES.items():
        assert lowered == spelling.lower(), spelling
    # one object per name: the same hash computed once, whatever the spelling
    by_value: dict[bytes, int] = {}
    for lowered in _LOWER_NAMES.values():
        assert by_value.setdefault(lowered, id(lowered)) == id(lowered), lowered


def test_each_connection_value_has_the_general_token_set() -> None:
    for value, tokens in _CONNECTION_VALUES.items():
        assert tokens == general_tokens(value), value
