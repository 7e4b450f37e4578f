"""The `static:` route through the real gateway: index files, content types, 404 for
missing files, dot-files and anything outside the root, directory redirects,
conditional requests, byte ranges, HEAD and a large streamed file; then the other
local actions, `redirect:` and `respond:`."""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Gateway, free_port

SECRET = b"outside the root: must never be served"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("static")
    root = tmp_path / "www"
    (root / "docs" / "empty").mkdir(parents=True)
    (root / "index.html").write_text("<h1>home</h1>")
    (root / "style.css").write_text("body{}")
    (root / "app.js").write_text("let a = 1;")
    (root / "data.json").write_text('{"a": 1}')
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    (root / "blob.unknownext").write_bytes(b"\x00\x01")
    (root / "digits.txt").write_bytes(b"0123456789" * 10)
    (root / "empty.txt").write_bytes(b"")
    (root / "docs" / "index.html").write_text("<p>docs</p>")
    (root / ".env").write_text("PASSWORD=x")
    (root / "docs" / ".hidden").write_text("hidden")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]")
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "index.html").write_bytes(SECRET)
    (root / "leak.txt").symlink_to(tmp_path / "secret.txt")
    (root / "leakdir").symlink_to(tmp_path / "outside")
    (root / "alias.txt").symlink_to(root / "digits.txt")  # inside the root: fine
    return root


@pytest.fixture(scope="module")
def gw(site: Path) -> Iterator[Gateway]:
    """One gateway for the whole module: the tests only read files."""
    port = free_port()
    workdir = site.parent / "gw"
    workdir.mkdir()
    gateway = Gateway(workdir / "bastion.yaml", port, workdir)
    gateway.write_config(
        {
            "listen": {"http": f"127.0.0.1:{port}"},
            "access_log": {"format": "off"},
            "sites": [
                {
                    "hosts": ["*"],
                    "routes": [
                        {
                            "path": "/",
                            "static": {"root": str(site), "cache_control": "public, max-age=60"},
                        },
                    ],
                }
            ],
        }
    )
    yield gateway.start()
    gateway.stop()


@pytest.fixture
def client(gw: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        yield c


def raw(port: int, target: str, extra: str = "") -> tuple[int, bytes, bytes]:
    """Send a target as-is (httpx would normalize it); returns status, head, body."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), head, body


@pytest.mark.parametrize(
    ("path", "ctype", "body"),
    [
        ("/", "text/html; charset=utf-8", b"<h1>home</h1>"),
        ("/index.html", "text/html; charset=utf-8", b"<h1>home</h1>"),
        ("/docs/", "text/html; charset=utf-8", b"<p>docs</p>"),
        ("/style.css", "text/css; charset=utf-8", b"body{}"),
        ("/data.json", "application/json; charset=utf-8", b'{"a": 1}'),
        ("/logo.png", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(100)),
        ("/blob.unknownext", "application/octet-stream", b"\x00\x01"),
        ("/alias.txt", "text/plain; charset=utf-8", b"0123456789" * 10),
        ("/empty.txt", "text/plain; charset=utf-8", b""),
    ],
)
def test_files_and_content_types(client: httpx.Client, path: str, ctype: str, body: bytes) -> None:
    r = client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"] == ctype
    assert r.content == body
    assert r.headers["content-length"] == str(len(body))
    assert r.headers["cache-control"] == "public, max-age=60"
    assert r.headers["etag"].startswith('"')


def test_javascript_type(client: httpx.Client) -> None:
    r = client.get("/app.js")
    assert r.status_code == 200
    assert r.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript")


@pytest.mark.parametrize(
    "target",
    [
        "/missing.html",
        "/docs/missing",
        "/docs/empty/",
        "/.env",
        "/docs/.hidden",
        "/.git/config",
        "/%2eenv",
        "/docs/%2ehidden",
        "/leak.txt",
        "/leakdir/",
        "/leakdir/index.html",
        "/index.html%00.txt",
        "/index.html/",
        "/digits.txt/",
    ],
)
def test_not_found(gw: Gateway, target: str) -> None:
    status, head, body = raw(gw.port, target)
    assert status in (400, 404), head  # %00 is refused as a bad path
    assert SECRET not in body and b"PASSWORD" not in body and b"[core]" not in body
    if "%00" not in target:
        assert status == 404
        assert b"application/problem+json" in head


@pytest.mark.parametrize(
    "target",
    [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/docs/../../secret.txt",
        "/docs/%2e%2e/%2e%2e/secret.txt",
        "/docs/..%2f..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "//../secret.txt",
        "/docs/..%5c..%5csecret.txt",
    ],
)
def test_traversal_never_leaves_the_root(gw: Gateway, target: str) -> None:
    status, head, body = raw(gw.port, target)
    assert status in (400, 404), head  # climbing above "/" is a malformed path
    assert SECRET not in body


def test_traversal_that_stays_inside_resolves(gw: Gateway) -> None:
    status, _, body = raw(gw.port, "/docs/%2e%2e/digits.txt")
    assert (status, body) == (200, b"0123456789" * 10)


def test_directory_redirects_to_trailing_slash(client: httpx.Client) -> None:
    r = client.get("/docs", params={"q": "1"})
    assert r.status_code == 301
    assert r.headers["location"] == "/docs/?q=1"
    assert client.get(r.headers["location"]).text == "<p>docs</p>"


@pytest.mark.parametrize(
    ("target", "location"),
    [
        ("//evil.example/../docs", b"/docs/"),
        ("/%2e/%2e//evil.example/%2e%2e/docs", b"/docs/"),
        ("/docs?a=b", b"/docs/?a=b"),
    ],
)
def test_directory_redirect_stays_on_this_host(gw: Gateway, target: str, location: bytes) -> None:
    status, head, _ = raw(gw.port, target)
    assert status == 301
    assert b"\r\nlocation: " + location + b"\r\n" in head.lower() + b"\r\n", head


def test_etag_and_if_none_match(client: httpx.Client, gw: Gateway) -> None:
    r = client.get("/digits.txt")
    etag = r.headers["etag"]
    for value in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        again = client.get("/digits.txt", headers={"If-None-Match": value})
        assert again.status_code == 304, value
        assert again.content == b""
        assert again.headers["etag"] == etag
    assert client.get("/digits.txt", headers={"If-None-Match": '"other"'}).status_code == 200
    # the 304 had no body: the same connection answers the next request correctly
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        rfile = sock.makefile("rb")
        for extra in (f"If-None-Match: {etag}\r\n", ""):
            sock.sendall(f"GET /digits.txt HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
            status = int(rfile.readline().split()[1])
            headers = {}
            while (line := rfile.readline()) != b"\r\n":
                name, _, value = line.decode().partition(":")
                headers[name.lower()] = value.strip()
            if status == 200:
                assert rfile.read(int(headers["content-length"])) == b"0123456789" * 10
            else:
                assert status == 304 and "content-length" not in headers
        rfile.close()


def test_if_modified_since(client: httpx.Client, site: Path) -> None:
    mtime = (site / "digits.txt").stat().st_mtime
    r = client.get("/digits.txt")
    assert r.headers["last-modified"] == formatdate(mtime, usegmt=True)
    same = client.get("/digits.txt", headers={"If-Modified-Since": r.headers["last-modified"]})
    assert same.status_code == 304 and same.content == b""
    later = client.get(
        "/digits.txt", headers={"If-Modified-Since": formatdate(mtime + 3600, usegmt=True)}
    )
    assert later.status_code == 304
    older = client.get(
        "/digits.txt", headers={"If-Modified-Since": formatdate(mtime - 3600, usegmt=True)}
    )
    assert older.status_code == 200 and older.content == b"0123456789" * 10
    junk = client.get("/digits.txt", headers={"If-Modified-Since": "yesterday"})
    assert junk.status_code == 200


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=10-", 10, 99),
        ("bytes=-5", 95, 99),
        ("bytes=95-1000", 95, 99),
        ("bytes=-500", 0, 99),
        ("bytes=42-42", 42, 42),
    ],
)
def test_range(client: httpx.Client, spec: str, start: int, end: int) -> None:
    r = client.get("/digits.txt", headers={"Range": spec})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes {start}-{end}/100"
    assert r.content == (b"0123456789" * 10)[start : end + 1]
    assert r.headers["content-length"] == str(end - start + 1)


@pytest.mark.parametrize("spec", ["bytes=100-", "bytes=500-600", "bytes=-0", "bytes=9-3"])
def test_range_not_satisfiable(client: httpx.Client, spec: str) -> None:
    r = client.get("/digits.txt", headers={"Range": spec})
    assert r.status_code == 416
    assert r.headers["content-range"] == "bytes */100"
    assert client.get("/digits.txt").status_code == 200  # the connection is still fine


def test_range_ignored_when_not_understood(client: httpx.Client) -> None:
    for spec in ("items=0-3", "bytes=0-1,5-6", "bytes=a-b"):
        r = client.get("/digits.txt", headers={"Range": spec})
        assert r.status_code == 200 and len(r.content) == 100, spec


def test_head(client: httpx.Client) -> None:
    r = client.head("/digits.txt")
    assert r.status_code == 200
    assert r.headers["content-length"] == "100"
    assert r.headers["accept-ranges"] == "bytes"
    assert r.content == b""
    assert client.get("/style.css").content == b"body{}"


def test_methods_other_than_get_and_head(client: httpx.Client) -> None:
    r = client.post("/index.html", content=b"x")
    assert r.status_code == 405
    assert "GET" in r.headers["allow"] and "HEAD" in r.headers["allow"]


def test_large_file_streamed(client: httpx.Client, site: Path, gw: Gateway) -> None:
    size = 50 * 1024 * 1024 + 123
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    with (site / "big.bin").open("wb") as f:
        left = size
        while left:
            part = block[: min(left, len(block))]
            f.write(part)
            digest.update(part)
            left -= len(part)
    got = hashlib.sha256()
    peak = 0
    with client.stream("GET", "/big.bin") as r:
        assert r.status_code == 200
        assert r.headers["content-length"] == str(size)
        for i, chunk in enumerate(r.iter_raw()):
            got.update(chunk)
            if i % 64 == 0:
                peak = max(peak, gw.rss_kb())
    assert got.hexdigest() == digest.hexdigest()
    assert peak < 100 * 1024, f"gateway RSS reached {peak} kB serving a 50 MB file"
    tail = client.get("/big.bin", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and len(tail.content) == 10


# ------------------------------------------------------ redirect / respond routes
def test_redirect_and_respond_routes(gateway: Any) -> None:
    routes = [
        {"path": "/old/", "redirect": {"to": "/new/", "status": 301}},
        {"path": "/home/", "redirect": {"to": "/", "status": 308}},
        {"path": "= /gone", "redirect": {"to": "https://elsewhere.example/x"}},
        {"path": "= /health", "respond": {"body": "fine", "content_type": "text/plain"}},
        {"path": "/teapot/", "respond": {"status": 418, "body": "{}", "content_type": "a/b"}},
    ]
    gw = gateway({"access_log": {"format": "off"}, "sites": [{"hosts": ["*"], "routes": routes}]})
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)

    def get(target: str, method: str = "GET") -> tuple[int, str | None, bytes]:
        conn.request(method, target)  # the target goes out exactly as written
        r = conn.getresponse()
        return r.status, r.getheader("location"), r.read()

    for target, location in (
        ("/old/a/b.html?x=1&y=2", "/new/a/b.html?x=1&y=2"),
        ("/old/", "/new/"),
        ("/old/a%20b%3F/c?q=%20", "/new/a%20b%3F/c?q=%20"),
        ("/%6Fld/page", "/new/page"),
        ("/home//evil.example/x", "/evil.example/x"),  # never "//host": another site
        ("/home/%2e//evil.example", "/evil.example"),
    ):
        assert get(target)[:2] == (308 if target.startswith("/home") else 301, location)
    assert get("/home/%2F%2Fevil.example")[0] == 400  # an encoded slash is refused
    assert get("/gone?q=1") == (302, "https://elsewhere.example/x", b"")
    assert get("/health") == (200, None, b"fine")
    assert get("/teapot/pot") == (418, None, b"{}")
    conn.request("GET", "/teapot/")
    teapot = conn.getresponse()
    assert (teapot.getheader("content-type"), teapot.read()) == ("a/b", b"{}")
    assert get("/health", "HEAD") == (200, None, b"")
    assert get("/health") == (200, None, b"fine")  # HEAD sent no body: still in sync
    conn.close()
