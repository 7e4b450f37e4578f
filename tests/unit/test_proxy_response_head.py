"""The head relayed to the client, rewritten from the upstream's (bastion.proxy.response_head)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.http.request import BODY_CHUNKED, BODY_CLOSE, BODY_LENGTH, BODY_NONE
from bastion.policies.fields import FieldEdit
from bastion.proxy.headers import RESPONSE_DROPPED
from bastion.proxy.response_head import RESPONSE_KINDS, edit_kinds, rewrite_head

Fields = list[tuple[bytes, bytes]]


def rewrite(
    status: int, headers: Fields, head_request: bool = False, edit: FieldEdit | None = None
) -> tuple[list[bytes], bool, int, int]:
    if edit is None:
        return rewrite_head(status, headers, RESPONSE_KINDS, (), head_request)
    kinds = edit.kinds or edit_kinds(edit)
    return rewrite_head(status, headers, kinds, edit.prefixes, head_request)


def relayed(status: int, headers: Fields, edit: FieldEdit | None = None) -> list[bytes]:
    """The field lines relayed, without the status line."""
    return rewrite(status, headers, edit=edit)[0][1:]


# ------------------------------------------------------------------ status line


@pytest.mark.parametrize(
    ("status", "line"),
    [
        (200, b"HTTP/1.1 200 OK\r\n"),
        (404, b"HTTP/1.1 404 Not Found\r\n"),
        (413, b"HTTP/1.1 413 Content Too Large\r\n"),
        (299, b"HTTP/1.1 299 Unknown\r\n"),
    ],
)
def test_status_line(status: int, line: bytes) -> None:
    assert rewrite(status, [])[0] == [line]


# ---------------------------------------------------------------------- fields


def test_fields_are_relayed_as_sent_in_order() -> None:
    headers = [
        (b"Content-Type", b"text/plain"),
        (b"x-custom", b"A, b"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
        (b"X-MiXeD", b"v"),
    ]
    assert relayed(200, headers) == [
        b"Content-Type: text/plain\r\n",
        b"x-custom: A, b\r\n",
        b"Set-Cookie: a=1\r\n",
        b"Set-Cookie: b=2\r\n",
        b"X-MiXeD: v\r\n",
    ]


@pytest.mark.parametrize(
    "name",
    [
        b"Connection",
        b"Keep-Alive",
        b"Proxy-Connection",
        b"Proxy-Authenticate",
        b"Proxy-Authorization",
        b"TE",
        b"Trailer",
        b"Transfer-Encoding",
        b"Upgrade",
        b"X-Request-ID",  # the gateway adds its own
    ],
)
@pytest.mark.parametrize("spelling", [bytes, bytes.lower, bytes.upper])
def test_hop_by_hop_fields_are_dropped(name: bytes, spelling: object) -> None:
    sent = spelling(name)  # type: ignore[operator]
    assert relayed(200, [(sent, b"x"), (b"X-Kept", b"1")]) == [b"X-Kept: 1\r\n"]


def test_fields_named_by_connection_are_dropped() -> None:
    headers = [
        (b"Connection", b"X-Foo, close, x-BAR"),
        (b"x-foo", b"1"),
        (b"X-Bar", b"2"),
        (b"X-Baz", b"3"),
    ]
    assert relayed(200, headers) == [b"X-Baz: 3\r\n"]


def test_connection_naming_no_field_drops_nothing_else() -> None:
    for value in (b"close", b"keep-alive", b"Keep-Alive", b" close ,, keep-alive"):
        headers = [(b"Connection", value), (b"X-Foo", b"1")]
        assert relayed(200, headers) == [b"X-Foo: 1\r\n"]


def test_connection_naming_content_length_keeps_the_framing() -> None:
    # the body is framed by that length: the client must get it, whatever Connection says
    lines, _, framing, _ = rewrite(
        200, [(b"Connection", b"content-length, http/1.1"), (b"Content-Length", b"3")]
    )
    assert lines == [b"HTTP/1.1 200 OK\r\n", b"Content-Length: 3\r\n"]
    assert framing == BODY_LENGTH


def test_content_length_is_relayed() -> None:
    assert relayed(200, [(b"content-length", b"12")]) == [b"content-length: 12\r\n"]


# ------------------------------------------------------------------------ Date


def test_date_from_upstream_is_kept() -> None:
    lines, add_date, _, _ = rewrite(200, [(b"date", b"Sat, 05 Dec 2026 00:00:00 GMT")])
    assert lines[1:] == [b"date: Sat, 05 Dec 2026 00:00:00 GMT\r\n"]
    assert add_date is False


def test_date_is_added_when_missing() -> None:
    assert rewrite(200, [])[1] is True


def test_date_removed_by_the_route_is_neither_relayed_nor_added() -> None:
    edit = FieldEdit(frozenset((b"date",)), (), [])
    lines, add_date, _, _ = rewrite(200, [(b"Date", b"x")], edit=edit)
    assert lines[1:] == []
    assert add_date is False


# --------------------------------------------------------------------- framing


@pytest.mark.parametrize(
    ("status", "headers", "head_request", "framing", "upstream_framing"),
    [
        (200, [(b"Content-Length", b"5")], False, BODY_LENGTH, BODY_LENGTH),
        (200, [(b"Content-Length", b"0")], False, BODY_LENGTH, BODY_LENGTH),
        (200, [(b"Transfer-Encoding", b"chunked")], False, BODY_CHUNKED, BODY_CHUNKED),
        # chunked wins over a length (RFC 9112 §6.3)
        (
            200,
            [(b"Content-Length", b"5"), (b"Transfer-Encoding", b"chunked")],
            False,
            BODY_CHUNKED,
            BODY_CHUNKED,
        ),
        (200, [], False, BODY_CLOSE, BODY_CLOSE),  # delimited by the connection's end
        (500, [(b"X-Foo", b"1")], False, BODY_CLOSE, BODY_CLOSE),
        # no body, whatever the fields announce
        (200, [(b"Content-Length", b"5")], True, BODY_NONE, BODY_NONE),
        (200, [(b"Transfer-Encoding", b"chunked")], True, BODY_NONE, BODY_NONE),
        (200, [], True, BODY_NONE, BODY_NONE),
        (304, [(b"Content-Length", b"5")], False, BODY_NONE, BODY_NONE),
        (304, [], False, BODY_NONE, BODY_NONE),
        (204, [], False, BODY_NONE, BODY_NONE),
        (204, [(b"Content-Length", b"0")], False, BODY_NONE, BODY_NONE),
        # a 204 announcing a body: none is relayed, and the connection is not reused
        (204, [(b"Content-Length", b"5")], False, BODY_NONE, BODY_CLOSE),
        (204, [(b"Transfer-Encoding", b"chunked")], False, BODY_NONE, BODY_CLOSE),
        (204, [(b"Content-Length", b"5")], True, BODY_NONE, BODY_NONE),
    ],
)
def test_framing(
    status: int, headers: Fields, head_request: bool, framing: int, upstream_framing: int
) -> None:
    assert rewrite(status, headers, head_request)[2:] == (framing, upstream_framing)


def test_transfer_encoding_is_not_relayed() -> None:
    # the client's protocol writes its own framing
    assert relayed(200, [(b"Transfer-Encoding", b"chunked")]) == []


# ------------------------------------------------------------ 101 Switching


def test_switching_protocols_keeps_connection_and_upgrade() -> None:
    headers = [
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Accept", b"abc"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Keep-Alive", b"timeout=5"),
        (b"X-Request-ID", b"theirs"),
    ]
    lines, add_date, framing, upstream_framing = rewrite(101, headers)
    assert lines == [
        b"HTTP/1.1 101 Switching Protocols\r\n",
        b"Upgrade: websocket\r\n",
        b"Connection: Upgrade\r\n",
        b"Sec-WebSocket-Accept: abc\r\n",
    ]
    assert add_date is True
    assert (framing, upstream_framing) == (BODY_NONE, BODY_NONE)


def test_switching_protocols_ignores_connection_tokens() -> None:
    headers = [(b"Connection", b"upgrade, X-Foo"), (b"X-Foo", b"1")]
    assert relayed(101, headers) == [b"Connection: upgrade, X-Foo\r\n", b"X-Foo: 1\r\n"]


# ------------------------------------------------------- the route's header rules


def test_route_rules_remove_fields_in_any_spelling() -> None:
    edit = FieldEdit(frozenset((b"server", b"x-powered-by")), (), [])
    headers = [
        (b"Server", b"nginx"),
        (b"SERVER", b"nginx"),
        (b"X-Powered-By", b"php"),
        (b"x-powered-by", b"php"),
        (b"Content-Type", b"text/html"),
    ]
    assert relayed(200, headers, edit) == [b"Content-Type: text/html\r\n"]


def test_route_rules_remove_fields_by_prefix() -> None:
    edit = FieldEdit(frozenset(), (b"x-secret-",), [])
    headers = [(b"X-Secret-Token", b"1"), (b"x-secret-b", b"2"), (b"X-Secrets", b"3")]
    assert relayed(200, headers, edit) == [b"X-Secrets: 3\r\n"]


def test_route_rules_cannot_remove_framing_fields() -> None:
    edit = FieldEdit(frozenset((b"content-length", b"transfer-encoding")), (b"content-",), [])
    lines, _, framing, _ = rewrite(200, [(b"Content-Length", b"3")], edit=edit)
    assert lines[1:] == [b"Content-Length: 3\r\n"]
    assert framing == BODY_LENGTH


def test_edit_table_is_made_once() -> None:
    edit = FieldEdit(frozenset((b"server",)), (), [])
    kinds = edit_kinds(edit)
    assert edit.kinds is kinds
    assert RESPONSE_KINDS[b"Server"] != kinds[b"Server"]  # the shared table is untouched


# ------------------------------------------------------------- any upstream head

_NAMES = [
    b"Connection",
    b"Keep-Alive",
    b"Transfer-Encoding",
    b"Upgrade",
    b"TE",
    b"Trailer",
    b"Proxy-Connection",
    b"X-Request-ID",
    b"Content-Length",
    b"Date",
    b"Server",
    b"X-Foo",
    b"X-Bar",
    b"Set-Cookie",
]
_VALUES = [b"close", b"keep-alive", b"X-Foo", b"x-bar, close", b"chunked", b"5", b"v"]
_spelled = st.builds(
    lambda name, how: (name, name.lower(), name.upper())[how],
    st.sampled_from(_NAMES),
    st.integers(0, 2),
)


@given(st.lists(st.tuples(_spelled, st.sampled_from(_VALUES)), max_size=10))
def test_any_head_relays_exactly_the_end_to_end_fields(headers: Fields) -> None:
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.split(b",")
    }
    dropped = RESPONSE_DROPPED | named
    expected = [n + b": " + v + b"\r\n" for n, v in headers if n.lower() not in dropped]
    assert relayed(200, headers) == expected
