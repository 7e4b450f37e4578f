"""Listening sockets the worker binds itself (server/listen.py): IP literals and every
interface are bound without the loop's resolver; names are left to the loop."""

from __future__ import annotations

import socket

import pytest

from bastion.config.addresses import parse_address
from bastion.server.listen import bind_listener, where_to_listen
from conftest import free_port


def _accepts(sock: socket.socket, host: str, family: socket.AddressFamily) -> bool:
    port = sock.getsockname()[1]
    try:
        with socket.socket(family, socket.SOCK_STREAM) as client:
            client.settimeout(2)
            client.connect((host, port))
    except OSError:
        return False
    return True


def test_an_ipv4_literal_is_bound_here() -> None:
    sock = bind_listener(parse_address(f"127.0.0.1:{free_port()}"), reuse_port=False, backlog=16)
    assert sock is not None
    with sock:
        assert sock.family == socket.AF_INET
        assert sock.getsockname()[0] == "127.0.0.1"
        assert not sock.getblocking()
        assert _accepts(sock, "127.0.0.1", socket.AF_INET)


def test_every_interface_takes_ipv4_and_ipv6_on_one_socket() -> None:
    sock = bind_listener(parse_address(f":{free_port()}"), reuse_port=False, backlog=16)
    assert sock is not None
    with sock:
        assert _accepts(sock, "127.0.0.1", socket.AF_INET)
        if socket.has_ipv6 and sock.family == socket.AF_INET6:
            assert _accepts(sock, "::1", socket.AF_INET6)


def test_the_ipv6_any_address_is_ipv6_only_as_the_loop_binds_it() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        sock = bind_listener(parse_address(f"[::]:{free_port()}"), reuse_port=False, backlog=16)
    except OSError as exc:
        pytest.skip(f"cannot bind IPv6 here: {exc}")
    assert sock is not None
    with sock:
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1


def test_a_name_is_left_to_the_loop() -> None:
    address = parse_address("localhost:8080")
    assert bind_listener(address, reuse_port=False, backlog=16) is None
    assert where_to_listen(address, reuse_port=True, backlog=16) == {
        "host": "localhost",
        "port": 8080,
        "reuse_port": True,
        "backlog": 16,
    }


def test_an_address_in_use_is_an_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            bind_listener(parse_address(f"127.0.0.1:{port}"), reuse_port=False, backlog=16)
