"""Response compression through the whole gateway: gzip, brotli and zstd chosen by
Accept-Encoding q-values, only for compressible types above the minimum size, never twice,
Vary: Accept-Encoding, streamed; over HTTP/1.1 and HTTP/2."""

from __future__ import annotations

import gzip
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import brotli
import httpx
import pytest
import zstandard

from conftest import Gateway, free_port, wait_for_port

TEXT = ("bastion compresses this line of text for the client. " * 200).encode()


class _Origin:
    """A backend with answers made for compression: text, JSON, binary, pre-encoded,
    streamed in parts the test releases one by one."""

    def __init__(self) -> None:
        self.release = threading.Event()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def send(self, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                path = url.path
                if path.endswith("/text"):
                    n = int(query.get("n", len(TEXT)))
                    self.send(TEXT[:n], query.get("type", "text/plain; charset=utf-8"),
                              {"ETag": '"v1"'})  # fmt: skip
                elif path.endswith("/json"):
                    self.send(b'{"items": [' + b'{"n": 1},' * 500 + b'{"n": 2}]}',
                              "application/vnd.api+json")  # fmt: skip
                elif path.endswith("/binary"):
                    self.send(TEXT, "application/octet-stream")
                elif path.endswith("/pre-encoded"):
                    self.send(gzip.compress(TEXT), "text/plain", {"Content-Encoding": "gzip"})
                elif path.endswith("/no-transform"):
                    self.send(TEXT, "text/plain", {"Cache-Control": "no-transform"})
                elif path.endswith("/vary"):
                    self.send(TEXT, "text/plain", {"Vary": "Origin"})
                elif path.endswith("/stream"):
                    self.send_response(200)
                    self.send_header("Content-Type", "application/x-ndjson")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    first = b'{"part": 1}\n' * 10
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(first), first))
                    self.wfile.flush()
                    origin.release.wait(20)
                    second = b'{"part": 2}\n' * 10
                    self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(second), second))
                else:
                    self.send(b"not found", "text/plain")

            do_HEAD = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def origin() -> Iterator[_Origin]:
    server = _Origin()
    yield server
    server.stop()


def _config(origin: _Origin, tmp_path: Path, **route: Any) -> dict[str, Any]:
    return {
        "data_dir": str(tmp_path / "data"),
        "access_log": {"format": "off"},
        "sites": [
            {
                "compress": True,
                "routes": [
                    {"path": "/plain/", "proxy": {"upstreams": [origin.url]}, "compress": False},
                    {"path": "/", "proxy": {"upstreams": [origin.url]}, **route},
                ],
            }
        ],
    }


@pytest.fixture
def gw(origin: _Origin, gateway: Callable[..., Gateway], tmp_path: Path) -> Gateway:
    return gateway(_config(origin, tmp_path))


DECODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.decompress,
    "br": brotli.decompress,
    "zstd": lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data),
}


def _raw_get(port: int, path: str, headers: str = "", method: str = "GET") -> tuple[bytes, bytes]:
    """Head and the de-chunked body exactly as sent (no client decoding)."""
    request = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2 :]
        body = out
    return head, body


def _field(head: bytes, name: str) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.encode():
            return value.strip().decode()
    return None


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_each_coding_when_it_is_the_only_one_accepted(gw: Gateway, coding: str) -> None:
    head, body = _raw_get(gw.port, "/text", f"Accept-Encoding: {coding}\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert _field(head, "content-encoding") == coding
    assert _field(head, "content-length") is None
    assert _field(head, "vary") == "Accept-Encoding"
    assert _field(head, "etag") == 'W/"v1"'  # the encoded bytes are another representation
    assert len(body) < len(TEXT) / 5
    assert DECODERS[coding](body) == TEXT


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("gzip, deflate, br, zstd", "zstd"),  # equal q: the gateway's order
        ("gzip;q=0.5, br;q=0.9", "br"),
        ("gzip, br;q=0, zstd;q=0", "gzip"),
        ("*;q=0.2, zstd;q=0, gzip;q=0.1", "br"),
        ("GZIP;Q=1.0", "gzip"),
        ("identity", None),
        ("gzip;q=0, br;q=0, zstd;q=0", None),
        ("deflate, compress", None),
        ("gzip;q=bogus, br", "br"),
    ],
)
def test_q_values_choose_the_coding(gw: Gateway, accept: str, expected: str | None) -> None:
    head, body = _raw_get(gw.port, "/text", f"Accept-Encoding: {accept}\r\n")
    assert _field(head, "content-encoding") == expected
    assert _field(head, "vary") == "Accept-Encoding"
    if expected is None:
        assert body == TEXT and _field(head, "content-length") == str(len(TEXT))
        assert _field(head, "etag") == '"v1"'
    else:
        assert DECODERS[expected](body) == TEXT


def test_no_accept_encoding_sends_identity_with_vary(gw: Gateway) -> None:
    head, body = _raw_get(gw.port, "/text")
    assert _field(head, "content-encoding") is None and body == TEXT
    assert _field(head, "vary") == "Accept-Encoding"


def test_only_compressible_types_above_the_minimum_size(gw: Gateway) -> None:
    accept = "Accept-Encoding: gzip\r\n"
    head, body = _raw_get(gw.port, "/binary", accept)
    assert _field(head, "content-encoding") is None and body == TEXT
    assert _field(head, "vary") is None  # never compressed: does not vary
    head, body = _raw_get(gw.port, "/text?n=500", accept)  # below the 1 KiB default
    assert _field(head, "content-encoding") is None and body == TEXT[:500]
    head, body = _raw_get(gw.port, "/text?type=text/event-stream", accept)
    assert _field(head, "content-encoding") is None
    head, body = _raw_get(gw.port, "/json", accept)  # application/*+json
    assert _field(head, "content-encoding") == "gzip"
    assert gzip.decompress(body).startswith(b'{"items": [')


def test_never_twice_and_no_transform(gw: Gateway) -> None:
    head, body = _raw_get(gw.port, "/pre-encoded", "Accept-Encoding: br, gzip\r\n")
    assert _field(head, "content-encoding") == "gzip"
    assert gzip.decompress(body) == TEXT  # the backend's encoding, once
    head, body = _raw_get(gw.port, "/no-transform", "Accept-Encoding: gzip\r\n")
    assert _field(head, "content-encoding") is None and body == TEXT


def test_vary_is_merged_with_the_backends(gw: Gateway) -> None:
    head, _ = _raw_get(gw.port, "/vary", "Accept-Encoding: gzip\r\n")
    varies = [line for line in head.split(b"\r\n") if line.lower().startswith(b"vary:")]
    tokens = {t.strip().lower() for line in varies for t in line[5:].split(b",")}
    assert tokens == {b"origin", b"accept-encoding"}


def test_head_and_problem_answers_are_not_encoded(gw: Gateway) -> None:
    head, body = _raw_get(gw.port, "/text", "Accept-Encoding: gzip\r\n", method="HEAD")
    assert head.startswith(b"HTTP/1.1 200")
    assert _field(head, "content-encoding") is None and body == b""


def test_route_can_turn_the_sites_compression_off(gw: Gateway) -> None:
    head, body = _raw_get(gw.port, "/plain/text", "Accept-Encoding: gzip\r\n")
    assert _field(head, "content-encoding") is None and body == TEXT
    assert _field(head, "vary") is None


def test_route_settings_algorithms_and_min_size(
    origin: _Origin, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    config = _config(origin, tmp_path, compress={"algorithms": ["gzip"], "min_size": 10})
    gw = gateway(config)
    head, _ = _raw_get(gw.port, "/text", "Accept-Encoding: zstd, br, gzip;q=0.1\r\n")
    assert _field(head, "content-encoding") == "gzip"
    head, body = _raw_get(gw.port, "/text?n=100", "Accept-Encoding: gzip\r\n")
    assert _field(head, "content-encoding") == "gzip" and gzip.decompress(body) == TEXT[:100]


def test_compression_streams(gw: Gateway, origin: _Origin) -> None:
    """The first part reaches the client, decodable, while the backend still holds the
    rest: the encoder flushes what it has instead of waiting for more."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=15) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
        seen, data = b"", b""
        deadline = time.monotonic() + 15
        while b'{"part": 1}\n' * 10 not in seen and time.monotonic() < deadline:
            data += sock.recv(65536)
            head, sep, body = data.partition(b"\r\n\r\n")
            if not sep:
                continue
            assert b"content-encoding: gzip" in head.lower()
            # de-chunk what has arrived so far
            out, rest = b"", body
            while rest:
                size_line, found, after = rest.partition(b"\r\n")
                if not found:
                    break
                size = int(size_line, 16)
                if size == 0 or len(after) < size + 2:
                    break
                out, rest = out + after[:size], after[size + 2 :]
            seen = zlib.decompressobj(31).decompress(out)
        assert seen == b'{"part": 1}\n' * 10  # and not part 2: the backend still waits
        origin.release.set()
        while not data.endswith(b"0\r\n\r\n") and time.monotonic() < deadline:
            data += sock.recv(65536)


def test_compression_over_http2(
    origin: _Origin, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    http, https = free_port(), free_port()
    config = _config(origin, tmp_path)
    config["listen"] = {"http": f"127.0.0.1:{http}", "https": f"127.0.0.1:{https}"}
    config["sites"][0]["hosts"] = ["localhost"]
    gateway(config)
    wait_for_port(https)
    ca = tmp_path / "data" / "ca" / "root.crt"
    with httpx.Client(http2=True, verify=ssl.create_default_context(cafile=str(ca))) as client:
        for coding in ("gzip", "br", "zstd"):
            r = client.get(f"https://localhost:{https}/text", headers={"Accept-Encoding": coding})
            assert r.http_version == "HTTP/2"
            assert r.headers["content-encoding"] == coding
            assert "content-length" not in r.headers
            assert r.headers["vary"] == "Accept-Encoding"
            assert r.content == TEXT  # httpx decoded it


def test_static_files_are_compressed_and_fixed_answers_are_not(
    gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    root = tmp_path / "www"
    root.mkdir()
    (root / "app.js").write_bytes(b"console.log('bastion');\n" * 200)
    config = {
        "data_dir": str(tmp_path / "data"),
        "access_log": {"format": "off"},
        "sites": [
            {
                "compress": True,
                "routes": [
                    {"path": "= /fixed", "respond": {"body": "x" * 5000}},
                    {"path": "/", "static": {"root": str(root)}},
                ],
            }
        ],
    }
    gw = gateway(config)
    head, body = _raw_get(gw.port, "/app.js", "Accept-Encoding: br\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert _field(head, "content-encoding") == "br"
    assert brotli.decompress(body) == b"console.log('bastion');\n" * 200
    head, body = _raw_get(gw.port, "/fixed", "Accept-Encoding: br\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert _field(head, "content-encoding") is None and body == b"x" * 5000


def test_revalidation_of_a_compressed_static_file(
    gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    root = tmp_path / "www"
    root.mkdir()
    (root / "style.css").write_bytes(b"body { color: black; }\n" * 100)
    config = {
        "data_dir": str(tmp_path / "data"),
        "access_log": {"format": "off"},
        "sites": [{"compress": True, "routes": [{"path": "/", "static": {"root": str(root)}}]}],
    }
    gw = gateway(config)
    head, _ = _raw_get(gw.port, "/style.css", "Accept-Encoding: gzip\r\n")
    etag = _field(head, "etag")
    assert etag is not None and etag.startswith('W/"')
    head, body = _raw_get(
        gw.port, "/style.css", f"Accept-Encoding: gzip\r\nIf-None-Match: {etag}\r\n"
    )
    assert head.startswith(b"HTTP/1.1 304") and body == b""
    assert _field(head, "etag") == etag
