"""The pieces every policy uses: the editable response head and the client address."""

from __future__ import annotations

from bastion.http.request import BODY_FIXED, BODY_LENGTH, Request
from bastion.policies.base import ResponseHead, apply_response_policies, real_client_ip


def test_response_head_edits_round_trip() -> None:
    head = ResponseHead(b"HTTP/1.1 200 OK\r\nServer: app\r\nContent-Length: 5\r\n", BODY_LENGTH)
    assert head.status == 200 and head.get(b"server") == b"app"
    head.remove(b"server")
    head.set(b"X-Frame-Options", b"DENY")
    head.add(b"Vary", b"Origin")
    assert head.names() == [b"content-length", b"x-frame-options", b"vary"]
    assert head.to_bytes() == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Frame-Options: DENY\r\nVary: Origin\r\n"
    )


class _Upper:
    def feed(self, data: bytes) -> bytes:
        return data.upper()

    def finish(self) -> bytes:
        return b"!"


class _Transform:
    def on_response(self, req: Request, head: ResponseHead) -> None:
        if head.can_transform:
            head.set_body_filter(_Upper())


def test_body_filter_drops_the_length_and_makes_the_body_chunked() -> None:
    hook = apply_response_policies((_Transform(),))
    req = Request()
    head, framing = hook(req, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", BODY_LENGTH)
    assert b"Content-Length" not in head and framing == 2 and req.body_filter is not None
    fixed = Request()
    head, framing = hook(fixed, b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n", BODY_FIXED)
    assert b"Content-Length: 9" in head and framing == BODY_FIXED and fixed.body_filter is None


def test_real_client_ip_walks_forwarded_for_only_from_trusted_peers() -> None:
    req = Request()
    req.client_ip = "10.0.0.2"
    req.xff = b"203.0.113.9, 10.0.0.1"
    trusted = {"10.0.0.1", "10.0.0.2"}.__contains__
    assert real_client_ip(req, trusted) == "203.0.113.9"
    assert real_client_ip(req, None) == "10.0.0.2"
    req.client_ip = "198.51.100.7"  # not a trusted proxy: its X-Forwarded-For is ignored
    assert real_client_ip(req, trusted) == "198.51.100.7"
