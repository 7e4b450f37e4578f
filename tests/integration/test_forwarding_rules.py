"""What the gateway forwards is only what the client could mean, over HTTP/1.1 and HTTP/2:
request trailers never become header fields (nor credentials), Upgrade is forwarded for
the route's protocols only (never h2c), header names with "_" are dropped unless a route
allows them, and a credential sent twice is refused instead of "first wins"."""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import h2.events
import httpx
import pytest
from test_http2 import RawH2, client, h2_config, https_port, root_ca, start
from test_proxy import RawClient, Seen, TinyBackend

from authtokens import create_key
from conftest import Backend, Gateway, raw_request

_KEYS = {"api_keys": {"query": "api_key"}}
PLAIN = "plain.test"  # the host of the routes served without TLS


def forwarding_config(tmp_path: Path, upstream: str) -> dict[str, Any]:
    """An http and an https (h2) listener. The same routes for localhost (TLS, so HTTP/2
    on the https listener) and for plain.test (no TLS: HTTP/1.1 on the http listener):
    /keys/ needs an API key (header, bearer or query), /under/ forwards header names with
    "_", /ws/ also forwards the x-demo protocol, and everything else is a plain proxy."""
    config = h2_config(tmp_path, upstream)
    routes = config["sites"][0]["routes"]
    routes[1:1] = [
        {"path": "/keys/", "auth": _KEYS, "proxy": {"upstreams": [upstream]}},
        {"path": "/under/", "proxy": {"upstreams": [upstream], "underscores_in_headers": True}},
        {"path": "/ws/", "proxy": {"upstreams": [upstream], "upgrade": ["websocket", "X-Demo"]}},
    ]
    config["sites"].append({"hosts": [PLAIN], "tls": "off", "routes": copy.deepcopy(routes)})
    return config


@dataclass
class Started:
    gw: Gateway
    config: dict[str, Any]

    @property
    def port(self) -> int:
        return self.gw.port

    def clients(self, tmp_path: Path) -> list[tuple[httpx.Client, str]]:
        """An HTTP/1.1 client of the http listener and an HTTP/2 one of the https
        listener, with the protocol version each must get."""
        h1 = httpx.Client(base_url=self.gw.url, headers={"Host": PLAIN}, timeout=30)
        h2 = client(tmp_path, base_url=f"https://localhost:{https_port(self.config)}")
        return [(h1, "HTTP/1.1"), (h2, "HTTP/2")]


def start_forwarding(gateway: Callable[..., Gateway], tmp_path: Path, upstream: str) -> Started:
    config = forwarding_config(tmp_path, upstream)
    return Started(start(gateway, config), config)


@pytest.fixture
def gw(tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]) -> Started:
    return start_forwarding(gateway, tmp_path, backend.url)


@pytest.fixture
def tiny() -> Iterator[Callable[..., TinyBackend]]:
    """Raw-socket backends (tests/integration/test_proxy.py) that answer as scripted."""
    made: list[TinyBackend] = []

    def make(*args: Any, **kwargs: Any) -> TinyBackend:
        made.append(TinyBackend(*args, **kwargs))
        return made[-1]

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def key(tmp_path: Path, gw: Started) -> str:
    return create_key(tmp_path / "data", "alice")


def names(entry: dict[str, Any]) -> set[str]:
    return {name for name, _ in entry["headers"]}


def h2_exchange(
    tmp_path: Path,
    gw: Started,
    headers: list[tuple[str, str]],
    body: bytes = b"",
    trailers: list[tuple[str, str]] | None = None,
) -> int:
    """One raw HTTP/2 request (with an optional body and trailers): its status."""
    h2c = RawH2(https_port(gw.config), root_ca(tmp_path))
    try:
        end_with_headers = not body and not trailers
        h2c.conn.send_headers(1, headers, end_stream=end_with_headers)
        if body:
            h2c.conn.send_data(1, body, end_stream=not trailers)
        if trailers:
            h2c.conn.send_headers(1, trailers, end_stream=True)
        h2c.flush()
        status = 0
        for event in h2c.events():
            if isinstance(event, h2.events.ResponseReceived) and event.stream_id == 1:
                status = int(dict(event.headers)[b":status"])
            if isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                break
        return status
    finally:
        h2c.close()


# ---------------------------------------------------------------- trailers
def test_a_trailer_key_does_not_authenticate_over_http1(
    gw: Started, key: str, backend: Backend
) -> None:
    chunked = (
        "POST {path} HTTP/1.1\r\nHost: plain.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5\r\nhello\r\n0\r\nX-API-Key: {key}\r\nX-Trailer-Note: t\r\n\r\n"
    )
    assert _status_of(gw.port, chunked.format(path="/keys/up", key=key).encode()) == 401
    assert backend.requests == []
    # on an open route the body passes, its trailer fields stay out of the header block
    assert _status_of(gw.port, chunked.format(path="/up", key=key).encode()) == 200
    (seen,) = backend.requests
    assert seen["body_len"] == 5
    assert not names(seen) & {"x-api-key", "x-trailer-note"}
    # trailers count with the head against max_header_bytes (16 KiB by default)
    huge = "".join(f"X-Filler-{i}: {'f' * 100}\r\n" for i in range(200))
    answer = raw_request(
        gw.port,
        b"POST /up HTTP/1.1\r\nHost: plain.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n" + huge.encode() + b"\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert len(backend.requests) == 1


def test_a_trailer_key_does_not_authenticate_over_http2(
    tmp_path: Path, gw: Started, key: str, backend: Backend
) -> None:
    def post(path: str) -> list[tuple[str, str]]:
        return [
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", "localhost"),
            (":path", path),
        ]

    trailers = [("x-api-key", key), ("x-trailer-note", "t")]
    assert h2_exchange(tmp_path, gw, post("/keys/up"), b"hello", trailers) == 401
    assert backend.requests == []
    assert h2_exchange(tmp_path, gw, post("/up"), b"hello", trailers) == 200
    (seen,) = backend.requests
    assert seen["body_len"] == 5
    assert not names(seen) & {"x-api-key", "x-trailer-note"}


# ---------------------------------------------------------------- upgrade
H2C_UPGRADE = (
    b"GET /plain HTTP/1.1\r\nHost: plain.test\r\nConnection: Upgrade, HTTP2-Settings\r\n"
    b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
)


def test_h2c_upgrade_is_forwarded_as_a_plain_request(gw: Started, backend: Backend) -> None:
    answer = raw_request(gw.port, H2C_UPGRADE)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    (seen,) = backend.requests
    assert seen["path"] == "/plain"
    sent = dict(seen["headers"])
    assert "upgrade" not in sent and "http2-settings" not in sent
    assert "upgrade" not in sent.get("connection", "").lower()


def _status_of(port: int, data: bytes) -> int:
    """The status of the answer to `data`, read as soon as it is whole (a kept-alive
    connection is not waited on until a timeout)."""
    raw = RawClient(port)
    try:
        raw.send(data)
        return raw.reply().status
    finally:
        raw.close()


def _with_bodies(port: int, heads: tuple[bytes, ...]) -> list[int]:
    """The statuses of the answers to each head (its fields, without the blank line) sent
    with a 5-byte body, by Content-Length and chunked."""
    bodies = (b"Content-Length: 5\r\n\r\nhello",
              b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")  # fmt: skip
    return [_status_of(port, head + body) for head in heads for body in bodies]


def test_an_upgrade_request_with_a_body_is_a_400(gw: Started, backend: Backend) -> None:
    """The parser hands over what follows an upgrade request's head unparsed: its body
    would be lost (the backend waited for it until a 504) whether the upgrade is
    stripped (h2c) or forwarded (websocket, whose handshake is a GET without a body)."""
    heads = (
        b"POST /plain HTTP/1.1\r\nHost: plain.test\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
        b"POST /plain HTTP/1.1\r\nHost: plain.test\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\n",
    )
    assert _with_bodies(gw.port, heads) == [400] * 4
    assert backend.requests == []


def test_an_upgrade_token_without_an_upgrade_field_is_a_plain_request(
    gw: Started, backend: Backend
) -> None:
    """Only an Upgrade field makes a request an upgrade: "Connection: upgrade" alone (or a
    stray Upgrade-like field) is a plain request, whose body reaches the backend whole."""
    heads = (
        b"POST /plain HTTP/1.1\r\nHost: plain.test\r\nConnection: Upgrade\r\n",
        b"POST /plain HTTP/1.1\r\nHost: plain.test\r\nConnection: upgrade\r\n"
        b"Upgrades: websocket\r\nX-Upgrade: websocket\r\n",
    )
    assert _with_bodies(gw.port, heads) == [200] * 4
    assert len(backend.requests) == 4
    for seen in backend.requests:
        assert seen["method"] == "POST" and seen["body_len"] == 5
        assert "upgrade" not in dict(seen["headers"])


def test_a_101_to_a_stripped_upgrade_is_a_502(
    tiny: Callable[..., TinyBackend], gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    def switch_anyway(seen: Seen) -> bytes:
        return b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"

    backend = tiny(switch_anyway)
    gw = start_forwarding(gateway, tmp_path, backend.url)
    raw = RawClient(gw.port)
    try:
        raw.send(H2C_UPGRADE)
        reply = raw.reply()
        assert reply.status == 502
        assert reply.header("content-type") == "application/problem+json"
        assert raw.is_closed()  # no tunnel: the connection ends with the answer
    finally:
        raw.close()
    (seen,) = backend.seen
    assert "upgrade" not in dict(seen.headers)


def test_only_the_routes_upgrade_protocols_are_forwarded(
    tiny: Callable[..., TinyBackend], gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    backend = tiny()
    gw = start_forwarding(gateway, tmp_path, backend.url)
    offer = (
        "GET {path} HTTP/1.1\r\nHost: plain.test\r\nConnection: upgrade\r\n"
        "Upgrade: h2c, X-DEMO/2, websocket, irc/6.9\r\n\r\n"
    )
    for path in ("/ws/chat", "/plain"):
        answer = raw_request(gw.port, offer.format(path=path).encode())
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    routed, plain = (dict(seen.headers) for seen in backend.seen)
    assert routed["upgrade"] == "X-DEMO/2, websocket"  # as sent, h2c and irc left out
    assert routed["connection"].lower() == "upgrade"
    assert plain["upgrade"] == "websocket"


def test_h2c_in_a_routes_upgrade_list_is_a_config_error(tmp_path: Path) -> None:
    from bastion.config.errors import ConfigError
    from bastion.config.loader import config_from_dict

    config = forwarding_config(tmp_path, "http://127.0.0.1:9")
    config["sites"][0]["routes"][-1]["proxy"]["upgrade"] = ["websocket", "H2C"]
    with pytest.raises(ConfigError, match="h2c is never forwarded"):
        config_from_dict(config)


# ------------------------------------------------------------- underscores
SPOOFS = {"X_Consumer": "admin", "X_Forwarded_For": "6.6.6.6", "X_Real_IP": "6.6.6.6"}


def test_underscore_names_are_dropped_unless_the_route_allows_them(
    tmp_path: Path, gw: Started, backend: Backend
) -> None:
    extra = {**SPOOFS, "X-Kept": "yes"}
    for c, version in gw.clients(tmp_path):
        with c:
            for path in ("/plain", "/under/x"):
                r = c.get(path, headers=extra)
                assert r.status_code == 200 and r.http_version == version
    plain1, under1, plain2, under2 = (names(seen) for seen in backend.requests)
    spoofed = {name.lower() for name in SPOOFS}
    for plain in (plain1, plain2):
        assert "x-kept" in plain and not plain & spoofed
    for under in (under1, under2):
        assert "x-kept" in under and spoofed <= under


# ----------------------------------------------------------- credentials
def test_a_credential_sent_twice_is_a_400(
    tmp_path: Path, gw: Started, key: str, backend: Backend
) -> None:
    other = create_key(tmp_path / "data", "bob")
    twice: list[tuple[str, list[tuple[str, str]]]] = [
        ("/keys/a", [("X-API-Key", key), ("X-API-Key", other)]),
        ("/keys/a", [("X-API-Key", key), ("X-API-Key", key)]),
        (f"/keys/a?api_key={other}", [("X-API-Key", key)]),
        (f"/keys/a?api_key={key}&api_key={other}", []),
        (f"/keys/a?api_key={key}&api_key={key}", []),
        ("/keys/a", [("Authorization", f"Bearer {key}"), ("Authorization", f"Bearer {other}")]),
        # bearer tokens are keys on this route: a different one beside the key header is
        # a second key, whichever comes first
        ("/keys/a", [("X-API-Key", key), ("Authorization", f"Bearer {other}")]),
        ("/keys/a", [("Authorization", f"Bearer {other}"), ("X-API-Key", key)]),
    ]
    for n, (c, version) in enumerate(gw.clients(tmp_path)):
        with c:
            for path, headers in twice:
                r = c.get(path, headers=headers)
                assert r.status_code == 400, (version, path, headers, r.text)
                assert r.http_version == version
                assert r.headers["content-type"] == "application/problem+json"
                assert key not in r.text and other not in r.text
            assert len(backend.requests) == 2 * n  # nothing forwarded
            # the same key in the header and the query is one key
            r = c.get(f"/keys/a?api_key={key}&n=1", headers={"X-API-Key": key})
            assert r.status_code == 200, r.text
            assert backend.requests[-1]["path"] == "/keys/a?n=1"
            r = c.get("/keys/a", headers={"X-API-Key": key, "Authorization": f"Bearer {key}"})
            assert r.status_code == 200, r.text


def test_two_basic_authorization_fields_are_a_400(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    config = forwarding_config(tmp_path, backend.url)
    for site in config["sites"]:
        site["routes"][-1]["auth"] = {"basic": {"users": {"alice": hashed}}}
    gw = Started(start(gateway, config), config)
    good = "Basic " + base64.b64encode(b"alice:pw").decode()
    for c, version in gw.clients(tmp_path):
        with c:
            r = c.get("/x", headers=[("Authorization", good), ("Authorization", good)])
            assert r.status_code == 400 and r.http_version == version, r.text
            assert c.get("/x", headers={"Authorization": good}).status_code == 200
    assert len(backend.requests) == 2


def test_websocket_upgrade_still_reaches_the_backend(gw: Started, backend: Backend) -> None:
    offer = (
        b"GET /plain HTTP/1.1\r\nHost: plain.test\r\nConnection: Upgrade\r\n"
        b"Upgrade: WebSocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    answer = raw_request(gw.port, offer)
    assert answer.startswith(b"HTTP/1.1 200 ")  # the stdlib backend does not switch
    sent = dict(backend.requests[0]["headers"])
    assert sent["upgrade"] == "WebSocket" and sent["connection"].lower() == "upgrade"


# ------------------------------------------------------- how names are spelled
_SPELLINGS = (str.title, str.lower, str.upper, lambda n: n[:3].lower() + n[3:].upper())


@pytest.mark.parametrize("spell", _SPELLINGS, ids=["title", "lower", "upper", "mixed"])
def test_fields_the_gateway_sets_are_replaced_however_they_are_spelled(
    gw: Started, backend: Backend, spell: Callable[[str], str]
) -> None:
    """Names are compared case-insensitively whether the gateway knows their usual spelling
    or not (HTTP/1.1: HTTP/2 names are lowercase on the wire): a client's forwarding
    fields never reach the backend, however it spells them."""
    spoofs = {
        "X-Forwarded-For": "6.6.6.6",
        "X-Forwarded-Proto": "gopher",
        "X-Forwarded-Host": "evil.test",
        "X-Real-IP": "6.6.6.6",
        "X-Request-ID": "spoofed-id",
        "Forwarded": "for=6.6.6.6",
        "X-Kept": "yes",
    }
    lines = "".join(f"{spell(name)}: {value}\r\n" for name, value in spoofs.items())
    head = f"GET /plain HTTP/1.1\r\n{spell('Host')}: {PLAIN}\r\n{lines}Connection: close\r\n\r\n"
    answer = raw_request(gw.port, head.encode())
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    seen = dict(backend.requests[-1]["headers"])
    assert seen["x-forwarded-for"] == "127.0.0.1" and seen["x-real-ip"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http" and seen["x-forwarded-host"] == PLAIN
    assert seen["x-request-id"] != "spoofed-id" and "forwarded" not in seen
    assert seen["x-kept"] == "yes"


@pytest.mark.parametrize("second", ["HOST", "host", "hOST"])
def test_a_second_host_spelled_otherwise_is_a_400(
    gw: Started, backend: Backend, second: str
) -> None:
    before = len(backend.requests)
    head = f"GET /plain HTTP/1.1\r\nHost: {PLAIN}\r\n{second}: evil.test\r\n\r\n"
    assert raw_request(gw.port, head.encode()).startswith(b"HTTP/1.1 400")
    assert len(backend.requests) == before
