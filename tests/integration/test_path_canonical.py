"""One request, one path: what the router matched is what the backend receives and what
the cache keys on, over HTTP/1.1 (raw request lines) and HTTP/2 (raw `:path` frames).

The backend behaves like the usual frameworks: it drops a fragment from the target
(Werkzeug, uvicorn and Node do), cuts `;` parameters off each segment (Java servlet
containers do), answers "//" with a 308 to the merged path, matches its admin pages by
string prefix, and marks every answer cacheable, as a backend with a default
`Cache-Control` does. An attack succeeds when it makes such a backend
serve another path than the route's, or stores an answer under another request's key.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import h2.events
import pytest
from test_http2 import RawH2, https_port, root_ca

from conftest import Gateway, free_port, raw_request, wait_for_port

REAL_TIME = b"the real time"


class _FrameworkLike(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Recording

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        target = self.path  # the request target exactly as it arrived
        host = self.headers.get("Host", "")
        with self.server.lock:
            self.server.seen.append((target, host))
        path = target.split("?", 1)[0].split("#", 1)[0]
        path = "/".join(segment.split(";", 1)[0] for segment in path.split("/"))
        headers = {"Cache-Control": "public, max-age=60"}
        if "//" in path:
            status, body = 308, b"merged"
            headers["Location"] = "/" + "/".join(p for p in path.split("/") if p)
        elif path == "/api/time":
            status, body = 200, REAL_TIME + b" for " + host.encode()
        elif path.startswith("/api/public/"):
            status, body = 200, b"attacker text " + path.rsplit("/", 1)[1].encode()
        elif path.startswith("/api/admin/"):
            status, body = 200, b"admin secret"
        else:
            status, body = 404, b"not found"
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Recording(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _FrameworkLike)
        self.lock = threading.Lock()
        self.seen: list[tuple[str, str]] = []


@pytest.fixture
def app() -> Iterator[_Recording]:
    server = _Recording()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def seen_paths(app: _Recording) -> list[str]:
    with app.lock:
        return [target for target, _ in app.seen]


def _start(
    app: _Recording, gateway: Callable[..., Gateway], tmp_path: Path, *settings: dict[str, Any]
) -> Gateway:
    """/api/admin/ refuses every client (its IP rules); /api/ is open and cached; / is open;
    `settings` routes come first."""
    upstream = f"http://127.0.0.1:{app.server_address[1]}"
    proxy = {"upstreams": [upstream]}
    http, https = free_port(), free_port()
    routes: list[dict[str, Any]] = [{**route, "proxy": proxy} for route in settings]
    routes += [
        {"path": "/api/admin/", "ip_rules": {"allow": ["10.0.0.0/8"]}, "proxy": proxy},
        {"path": "/api/", "proxy": proxy, "cache": {}},
        {"path": "/", "proxy": proxy},
    ]
    config: dict[str, Any] = {
        "listen": {"http": f"127.0.0.1:{http}", "https": f"127.0.0.1:{https}"},
        "data_dir": str(tmp_path / "data"),
        "access_log": {"format": "off"},
        "sites": [{"hosts": ["localhost"], "routes": routes}],
    }
    g = gateway(config)
    wait_for_port(https_port(config))
    g.https = https_port(config)  # type: ignore[attr-defined]
    g.cafile = root_ca(tmp_path)  # type: ignore[attr-defined]
    return g


@pytest.fixture
def gw(app: _Recording, gateway: Callable[..., Gateway], tmp_path: Path) -> Gateway:
    return _start(app, gateway, tmp_path)


@pytest.fixture
def gw_settings(app: _Recording, gateway: Callable[..., Gateway], tmp_path: Path) -> Gateway:
    """With the per-route path settings on /strict/, /moved/, /repos/ and /matrix/."""
    return _start(
        app,
        gateway,
        tmp_path,
        {"path": "/strict/", "path_normalisation": "reject"},
        {"path": "/moved/", "path_normalisation": "redirect"},
        {"path": "/repos/", "encoded_slashes": "keep"},
        {"path": "/matrix/", "path_parameters": "keep"},
    )


def h1_get(gw: Gateway, target: str, host: str = "localhost") -> tuple[int, bytes]:
    """One GET over HTTP/1.1 (on TLS, as the site has it) with the target written exactly
    as given: (status, body)."""
    data = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    context = ssl.create_default_context(cafile=str(gw.cafile))  # type: ignore[attr-defined]
    context.set_alpn_protocols(["http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", gw.https), timeout=10) as raw,  # type: ignore[attr-defined]
        context.wrap_socket(raw, server_hostname="localhost") as s,
    ):
        s.sendall(data)
        chunks = []
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            while chunk := s.recv(65536):
                chunks.append(chunk)
    reply = b"".join(chunks)
    head, _, body = reply.partition(b"\r\n\r\n")
    gw.last_head = head  # type: ignore[attr-defined]
    return int(head[9:12]), body


def h2_get(gw: Gateway, path: str, authority: str = "localhost") -> tuple[int, bytes]:
    """One GET over HTTP/2 with `:path` sent as given: (status, body); status 0 when the
    stream (or the connection) was reset instead of answered."""
    raw = RawH2(gw.https, gw.cafile)  # type: ignore[attr-defined]
    headers = [(":method", "GET"), (":scheme", "https"), (":authority", authority)]
    raw.conn.send_headers(1, [*headers, (":path", path)], end_stream=True)
    raw.flush()
    status, body = 0, b""
    try:
        for event in raw.events(timeout=10):
            if isinstance(event, h2.events.ResponseReceived):
                status = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                body += event.data
                raw.conn.acknowledge_received_data(event.flow_controlled_length, 1)
                raw.flush()
            elif isinstance(event, h2.events.StreamReset):
                return 0, b""
            elif isinstance(event, h2.events.StreamEnded | h2.events.ConnectionTerminated):
                break
    finally:
        raw.close()
    return status, body


GET = {"h1": h1_get, "h2": h2_get}
protocols = pytest.mark.parametrize("proto", ["h1", "h2"])


@protocols
@pytest.mark.parametrize(
    "target", ["/api/admin/secret#/../../public/x", "/api/public/X#/../../time", "/api/time#x"]
)
def test_a_fragment_is_refused_and_never_forwarded(
    gw: Gateway, app: _Recording, proto: str, target: str
) -> None:
    status, body = GET[proto](gw, target)
    assert status in (0, 400), body  # a 400, or the stream reset over HTTP/2
    assert b"admin secret" not in body and b"attacker" not in body
    assert seen_paths(app) == []
    # the cache holds nothing under /api/time: a second client gets the real answer
    assert GET[proto](gw, "/api/time") == (200, REAL_TIME + b" for localhost")
    assert seen_paths(app) == ["/api/time"]


@protocols
@pytest.mark.parametrize("spelling", ["/api//time", "/api/x/../time", "/api/%2e/time"])
def test_another_spelling_cannot_poison_the_cache(
    gw: Gateway, app: _Recording, proto: str, spelling: str
) -> None:
    # the backend gets the path that was routed and keyed, not the spelling: its
    # answer is the real one (not the 308 or 404 the spelling would get)
    assert GET[proto](gw, spelling) == (200, REAL_TIME + b" for localhost")
    assert seen_paths(app) == ["/api/time"]
    assert GET[proto](gw, "/api/time") == (200, REAL_TIME + b" for localhost")
    assert len(seen_paths(app)) == 1  # the second client's answer came from the cache


@protocols
def test_the_host_port_is_part_of_the_cache_key(gw: Gateway, app: _Recording, proto: str) -> None:
    port_host = "localhost:6666"
    assert GET[proto](gw, "/api/time", port_host)[1] == REAL_TIME + b" for " + port_host.encode()
    # the answer built for another Host (port included) is not served to this one
    assert GET[proto](gw, "/api/time") == (200, REAL_TIME + b" for localhost")
    with app.lock:
        assert [host for _, host in app.seen] == [port_host, "localhost"]


@protocols
@pytest.mark.parametrize(
    ("target", "routed"),
    [
        ("/api/admin/x/../../nc/whoami", "/api/nc/whoami"),
        ("/api/%61dmin/../public/%41", "/api/public/A"),
        ("/api/./admin/..//time", "/api/time"),
    ],
)
def test_the_backend_receives_what_was_routed(
    gw: Gateway, app: _Recording, proto: str, target: str, routed: str
) -> None:
    _, body = GET[proto](gw, target)
    assert b"admin secret" not in body
    assert seen_paths(app) == [routed]


@protocols
@pytest.mark.parametrize(
    "target", ["/api%2Fadmin/secret", "/api/x/..%2f..%2fadmin/s", "/api/..;/admin/s"]
)
def test_ambiguous_separators_are_refused(
    gw: Gateway, app: _Recording, proto: str, target: str
) -> None:
    # a backend that decodes %2F (WSGI servers, uvicorn) or reads "..;" as ".." (Tomcat)
    # would serve /api/admin/ although no route of that prefix matched
    status, body = GET[proto](gw, target)
    assert status in (0, 400), body
    assert seen_paths(app) == []


@protocols
@pytest.mark.parametrize(
    "target",
    [
        "/api/admin;x/secret",
        "/api;x/admin/secret",
        "/api/admin;/secret",
        "/api/admin%3bx/secret",
        "/api/time;jsessionid=1",
    ],
)
def test_a_path_parameter_is_refused_and_never_forwarded(
    gw: Gateway, app: _Recording, proto: str, target: str
) -> None:
    # the open /api/ route matched it, and a servlet container cuts ";..." off each
    # segment before matching: it would serve /api/admin/secret past /api/admin/'s rules
    status, body = GET[proto](gw, target)
    assert status in (0, 400), body
    assert b"admin secret" not in body
    assert seen_paths(app) == []
    # a ";" in the query is data, not a parameter
    assert GET[proto](gw, "/api/public/x?a=1;b=2") == (200, b"attacker text x")
    assert seen_paths(app) == ["/api/public/x?a=1;b=2"]


def test_the_query_passes_unchanged(gw: Gateway, app: _Recording) -> None:
    h1_get(gw, "/api//time?b=%2e%2F&a=/../x")
    assert seen_paths(app) == ["/api/time?b=%2e%2F&a=/../x"]


@protocols
def test_a_strict_route_refuses_a_non_canonical_target(
    gw_settings: Gateway, app: _Recording, proto: str
) -> None:
    for target in ("/strict//x", "/strict/a/../x", "/strict/%78", "/strict/%7e"):
        assert GET[proto](gw_settings, target)[0] in (0, 400), target
    assert seen_paths(app) == []
    assert GET[proto](gw_settings, "/strict/x?q=%2e")[0] == 404  # canonical: forwarded
    assert seen_paths(app) == ["/strict/x?q=%2e"]


@protocols
def test_a_redirecting_route_sends_the_canonical_form(
    gw_settings: Gateway, app: _Recording, proto: str
) -> None:
    assert GET[proto](gw_settings, "/moved//a/./%62?q=1")[0] == 308
    if proto == "h1":
        assert b"\r\nlocation: /moved/a/b?q=1" in gw_settings.last_head.lower()  # type: ignore[attr-defined]
    assert seen_paths(app) == []
    GET[proto](gw_settings, "/moved/a/b?q=1")
    assert seen_paths(app) == ["/moved/a/b?q=1"]


@protocols
def test_encoded_slashes_are_forwarded_only_where_a_route_keeps_them(
    gw_settings: Gateway, app: _Recording, proto: str
) -> None:
    assert GET[proto](gw_settings, "/repos/group%2fname/files")[0] == 404
    assert seen_paths(app) == ["/repos/group%2Fname/files"]
    # hidden dot segments are refused even there, and other routes refuse %2F
    for target in ("/repos/x/..%2F..%2Fapi%2Fadmin/s", "/api/group%2Fname"):
        assert GET[proto](gw_settings, target)[0] in (0, 400), target
    assert len(seen_paths(app)) == 1
    # plain HTTP is redirected to HTTPS as it is: the route there decides
    reply = raw_request(
        gw_settings.port,
        b"GET /repos/a%2Fb HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 301"), reply
    assert b"/repos/a%2Fb\r\n" in reply



def test_an_absolute_form_authority_is_the_host_of_the_cache_key(
    gw: Gateway, app: _Recording
) -> None:
    """An absolute-form target's authority replaces the Host field (RFC 9112 §3.2.2): it
    is what the backend gets as Host, so it is what the cache keys on."""
    assert h1_get(gw, "https://localhost:6666/api/time") == (
        200,
        REAL_TIME + b" for localhost:6666",
    )
    assert h1_get(gw, "/api/time") == (200, REAL_TIME + b" for localhost")
    assert h1_get(gw, "https://localhost/api/time", "localhost:6666") == (
        200,
        REAL_TIME + b" for localhost",
    )
    with app.lock:
        assert [host for _, host in app.seen] == ["localhost:6666", "localhost"]


@protocols
def test_path_parameters_are_forwarded_only_where_a_route_keeps_them(
    gw_settings: Gateway, app: _Recording, proto: str
) -> None:
    assert GET[proto](gw_settings, "/matrix/a;v=1/b;x?q=1;2")[0] == 404
    assert GET[proto](gw_settings, "/matrix/a%3Bv=1")[0] == 404
    assert seen_paths(app) == ["/matrix/a;v=1/b;x?q=1;2", "/matrix/a%3Bv=1"]  # unchanged
    # "..;" and ";x" segments are refused even there; other routes refuse any ";",
    # the one keeping %2F included
    for target in (
        "/matrix/x/..;/..;/api/admin/s",
        "/matrix/;x/b",
        "/matrix/a%2Fb;v=1",
        "/repos/a;v=1/b",
        "/strict/a;v=1",
        "/moved/a;v=1",
    ):
        assert GET[proto](gw_settings, target)[0] in (0, 400), target
    assert len(seen_paths(app)) == 2
    # plain HTTP is redirected to HTTPS as it is: the route there decides
    reply = raw_request(
        gw_settings.port,
        b"GET /api/admin;x/secret HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 301"), reply
    assert b"/api/admin;x/secret\r\n" in reply
