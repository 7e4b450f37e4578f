"""`bastion demo`: a small API backend on a loopback port with bastion in front.

The backend is deliberately tiny (asyncio + httptools, no framework) so the demo
has no dependency beyond bastion's own.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import parse_qs

import httptools

from bastion.config import LoadedConfig, config_from_dict

DEMO_PORT = 8080
DEMO_HTTPS_PORT = 8443
DEMO_ADMIN_PORT = 8090  # the dashboard and the admin API
DEMO_METRICS_PORT = 9464  # Prometheus' /metrics
ADMIN_TOKEN_ENV = "BASTION_ADMIN_TOKEN"  # the demo makes one up when it is not set


class DemoBackend(asyncio.Protocol):
    """An HTTP/1.1 keep-alive JSON API: /api/hello, /api/headers, /api/echo, /api/slow,
    /api/time (what the clock says now: shows when an answer came from the cache),
    /api/items (a list of a few KB, as list endpoints answer: large enough to be
    compressed, where the others are under compression's min_size) and /api/fail (a 500,
    for the error figures)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop transports are not asyncio.Transport subclasses; same interface
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", {}, []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        url = httptools.parse_url(self.url)
        # answered by the last segment, so routes that strip their prefix reach it too
        path = "/api/" + url.path.decode().rsplit("/", 1)[-1]
        query = parse_qs((url.query or b"").decode())
        keep_alive = self.parser.should_keep_alive()
        if path == "/api/slow":
            seconds = min(float(query.get("seconds", ["1"])[0]), 30.0)
            loop = asyncio.get_running_loop()
            loop.call_later(seconds, self._send, 200, {"slept": seconds}, keep_alive)
            return
        status, doc = self._answer(method, path)
        self._send(status, doc, keep_alive)

    def _answer(self, method: str, path: str) -> tuple[int, Any]:
        if path == "/api/time":
            return 200, {"backend_time": time.strftime("%H:%M:%S")}
        if path == "/api/hello":
            return 200, {"message": "hello from the demo backend", "method": method}
        if path == "/api/headers":
            return 200, {"headers_seen_by_backend": self.headers}
        if path == "/api/items":
            return 200, {"items": ITEMS, "count": len(ITEMS)}
        if path == "/api/fail":
            return 500, {"error": "the demo backend fails here on purpose"}
        if path == "/api/echo":
            body = b"".join(self.body).decode("utf-8", "replace")
            return 200, {"method": method, "received": body}
        return 404, {"error": "not found", "path": path}

    def _send(self, status: int, doc: Any, keep_alive: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        body = json.dumps(doc, indent=2).encode() + b"\n"
        reason = _REASONS.get(status, b"Error")
        head = (
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Server: demo-backend\r\n%s\r\n"
            % (status, reason, len(body), b"" if keep_alive else b"Connection: close\r\n")
        )
        self.transport.write(head + body)
        if not keep_alive:
            self.transport.close()


_REASONS = {200: b"OK", 404: b"Not Found", 500: b"Internal Server Error"}

# /api/items' answer: about 6 KB of JSON, over the 1 KiB below which answers go uncompressed
ITEMS = [
    {"id": i, "name": f"item {i}", "price_cents": 100 + 37 * i % 900, "in_stock": i % 3 != 0}
    for i in range(1, 61)
]


def demo_config(
    backend_port: int,
    port: int = DEMO_PORT,
    https_port: int = DEMO_HTTPS_PORT,
    ca_root: str = "<data dir>/ca/root.crt",
    *,
    admin_port: int = DEMO_ADMIN_PORT,
    metrics_port: int = DEMO_METRICS_PORT,
    access_log: str = "stdout",
) -> LoadedConfig:
    """Two sites with the same routes: `localhost` over HTTPS with a certificate from
    the local CA (plain HTTP redirects to it), and every other host over plain HTTP; the
    dashboard on `admin_port` (its token from $BASTION_ADMIN_TOKEN), Prometheus metrics on
    `metrics_port`, statistics in the data dir, and an alert shown on the dashboard when
    more than a tenth of a minute's answers are 5xx."""
    upstream = f"http://127.0.0.1:{backend_port}"
    guide = "\n".join(
        [
            "bastion demo: this page is a fixed response from the gateway itself.",
            "",
            "Try:",
            *(f"  {line}" for line in try_lines(port, https_port, ca_root)),
            "",
        ]
    )
    proxy = {"upstreams": [upstream]}
    routes = [
        # answers kept for 10 seconds: X-Cache says HIT or MISS, the body keeps its time
        {"path": "= /api/time", "proxy": proxy, "cache": {"ttl": "10s"}},
        # 3 requests a second per client address, bursts of 5: then 429 with Retry-After
        {
            "path": "/api/limited/",
            "proxy": proxy,
            "strip_prefix": True,
            "rate_limits": [{"rate": "3/s", "burst": 5}],
        },
        # needs a key from `bastion keys create --consumer NAME`
        {"path": "/api/private/", "proxy": proxy, "strip_prefix": True, "auth": {"api_keys": {}}},
        {"path": "/api/", "proxy": proxy},
        {"path": "= /health", "methods": ["GET"], "respond": {"body": "ok\n"}},
        {"path": "/old/", "redirect": {"to": "/api/", "status": 308}},
        {"path": "/", "respond": {"body": guide}},
    ]
    return config_from_dict(
        {
            "listen": {"http": f"127.0.0.1:{port}", "https": f"127.0.0.1:{https_port}"},
            "access_log": {"format": "combined", "path": access_log},
            "admin": {"listen": f"127.0.0.1:{admin_port}", "token": "${" + ADMIN_TOKEN_ENV + "}"},
            "metrics": {"listen": f"127.0.0.1:{metrics_port}", "consumers": 10},
            # no channel: the state shows on the dashboard (and in /api/alerts) only
            "alerts": {
                "rules": {
                    "errors": {
                        "kind": "error_rate",
                        "threshold": "10%",
                        "min_requests": 10,
                        "channels": [],
                    },
                },
            },
            "sites": [
                {
                    "hosts": ["localhost"],
                    "tls": "internal",
                    "hsts": True,
                    "routes": routes,
                    "compress": True,
                    "security_headers": True,
                },
                {"hosts": ["*"], "tls": "off", "routes": routes, "compress": True},
            ],
        },
        source="<demo>",
    )


def try_lines(
    port: int, https_port: int = DEMO_HTTPS_PORT, ca_root: str = "<data dir>/ca/root.crt"
) -> list[str]:
    base = f"http://127.0.0.1:{port}"
    secure = f"https://localhost:{https_port}"
    return [
        f"curl -i {base}/api/hello                     # proxied to the demo backend",
        f"curl -s {base}/api/headers                   # X-Forwarded-*, X-Real-IP, X-Request-ID",
        f"curl -s -d 'hi there' {base}/api/echo        # request bodies stream through",
        f"curl -i {base}/old/hello                     # 308 redirect to /api/hello",
        f"curl -i --path-as-is {base}/nope/../api/hello  # paths are normalised before routing",
        f"curl -i -X DELETE {base}/health              # exact route: 405 problem+json",
        f"curl -i {base}/api/slow?seconds=2            # a slow backend answer",
        f"curl -i {base}/api/time                      # cached 10 s: X-Cache MISS, then HIT",
        f"for i in 1 2 3 4 5 6 7; do curl -s -o /dev/null -w '%{{http_code}} ' "
        f"{base}/api/limited/hello; done  # 429 past the burst",
        f"curl -i {base}/api/private/hello             # 401: this route needs an API key",
        "bastion keys create --consumer me            # prints a key (stored hashed)",
        f"curl -i -H 'X-API-Key: KEY' {base}/api/private/headers  # X-Consumer: me upstream",
        f"curl -s -H 'Accept-Encoding: gzip' -D - -o /dev/null {base}/api/items  "
        "# Content-Encoding: gzip (br and zstd too; answers under 1 KiB are sent as they are)",
        f"curl -i --cacert {ca_root} {secure}/api/hello   # HTTPS from the local CA, with HSTS",
        f"curl -i --http2 --cacert {ca_root} {secure}/api/hello  # HTTP/2 (ALPN h2)",
        f"curl -i http://localhost:{port}/api/hello    # localhost has TLS: 301 to https",
        "bastion trust                                 # how to make browsers trust the local CA",
    ]


async def start_backend(port: int = 0) -> tuple[asyncio.Server, int]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(DemoBackend, "127.0.0.1", port)
    sock = server.sockets[0]
    return server, sock.getsockname()[1]
