"""X-Forwarded-For elements parsed to addresses, and the walk from the right."""

from __future__ import annotations

import pytest

from bastion.http.request import Request
from bastion.proxy.forwarded import client_address, forwarded_chain, parse_hop

_TRUSTED = {"127.0.0.1", "10.0.0.1", "10.0.0.2"}.__contains__


@pytest.mark.parametrize(
    ("element", "address"),
    [
        (b"1.2.3.4", "1.2.3.4"),
        (b"1.2.3.4:80", "1.2.3.4"),
        (b"[2001:db8::1]:80", "2001:db8::1"),
        (b"[2001:DB8:0::1]", "2001:db8::1"),
        (b"2001:db8::1", "2001:db8::1"),
        (b"::ffff:1.2.3.4", "1.2.3.4"),
        (b"[::ffff:1.2.3.4]:443", "1.2.3.4"),
        (b"01.2.3.4", None),  # octal to inet_aton, decimal to others: no address
        (b"garbage", None),
        (b"unknown", None),
        (b"1.2.3.4:", None),
        (b"1.2.3.4:99999", None),
        (b"1.2.3.4:8o", None),
        (b"[1.2.3.4]:80", None),
        (b"[2001:db8::1", None),
        (b"[2001:db8::1]80", None),
        (b"fe80::1%eth0", None),
        (b"1.2.3.4 5.6.7.8", None),
        (b"\xff1.2.3.4", None),
        (b"1" * 100, None),
    ],
)
def test_parse_hop(element: bytes, address: str | None) -> None:
    assert parse_hop(element) == address


def _req(xff: bytes | None, peer: str = "127.0.0.1") -> Request:
    req = Request()
    req.client_ip = peer
    req.xff = xff
    return req


def test_walk_stops_at_the_first_untrusted_address() -> None:
    req = _req(b"6.6.6.6, 1.2.3.4:80, 10.0.0.1:3128")
    assert client_address(req, _TRUSTED) == "1.2.3.4"
    assert forwarded_chain(req, _TRUSTED) == (b"6.6.6.6, 1.2.3.4, 10.0.0.1, 127.0.0.1", b"1.2.3.4")


def test_walk_stops_at_what_is_not_an_address() -> None:
    req = _req(b"1.2.3.4, garbage, 10.0.0.2")
    assert client_address(req, _TRUSTED) == "10.0.0.2"
    assert forwarded_chain(req, _TRUSTED) == (b"1.2.3.4, garbage, 10.0.0.2, 127.0.0.1", b"10.0.0.2")


def test_all_trusted_gives_the_leftmost_and_empty_elements_are_skipped() -> None:
    req = _req(b" 10.0.0.2 ,, 10.0.0.1,")
    assert client_address(req, _TRUSTED) == "10.0.0.2"
    assert forwarded_chain(req, _TRUSTED) == (b"10.0.0.2, 10.0.0.1, 127.0.0.1", b"10.0.0.2")


def test_untrusted_peer_or_no_list_is_the_peer() -> None:
    assert client_address(_req(b"1.2.3.4", "203.0.113.5"), _TRUSTED) == "203.0.113.5"
    assert client_address(_req(b"1.2.3.4"), None) == "127.0.0.1"
    assert client_address(_req(None), _TRUSTED) == "127.0.0.1"
    assert forwarded_chain(_req(b""), _TRUSTED) == (b"127.0.0.1", b"127.0.0.1")
