"""The in-process harness answers as a running gateway does: the same requests sent by
httpx to `bastion run` (HTTP/1.1 on the plain listener, HTTP/2 over TLS) and through the
fake transport get the same status, fields and bodies. This keeps the harness honest: what
the protocol tests see is what clients see."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cachekit import start_site
from conftest import Backend, Gateway
from protocolkit import InProcessGateway, Session

FIELDS = ("content-type", "content-length", "allow", "location")
REQUESTS = [
    ("GET", "/hello"),
    ("HEAD", "/hello"),
    ("GET", "/missing"),
    ("DELETE", "/only-get"),
    ("POST", "/only-get"),
    ("GET", "/old/x?q=1"),
    ("GET", "/echo/x?y=1"),
]


def routes(backend: Backend) -> list[dict[str, Any]]:
    return [
        {"path": "/hello", "respond": {"body": "hello"}},
        {"path": "= /only-get", "methods": ["GET"], "respond": {"body": "got"}},
        {"path": "/old/", "redirect": {"to": "/new/", "status": 308}},
        {"path": "/echo/", "proxy": {"upstreams": [backend.url]}},
    ]


def comparable(
    status: int, fields: dict[str, str], body: bytes, request_id: str
) -> tuple[int, dict[str, str], bytes]:
    kept = {k: v for k, v in fields.items() if k in FIELDS}
    if fields.get("content-type") == "application/json":  # the backend's echo
        body = body[: body.index(b', "headers"')]  # method and path; the fields differ
        kept.pop("content-length", None)
    elif request_id and request_id.encode() in body:
        body = body.replace(request_id.encode(), b"<id>")
        kept["content-length"] = str(len(body))  # ids differ in length too
    return status, kept, body


@pytest.mark.parametrize("protocol", ["h1", "h2"])
def test_harness_answers_as_the_gateway(
    backend: Backend,
    gateway: Callable[..., Gateway],
    in_process: Callable[..., InProcessGateway],
    tmp_path: Path,
    protocol: str,
) -> None:
    site = start_site(gateway, tmp_path, routes(backend))
    harness = in_process(
        {
            "sites": [
                {"hosts": ["localhost"], "routes": routes(backend)},
                {"hosts": ["*"], "tls": "off", "routes": routes(backend)},
            ]
        }
    )
    # the gateway's http listener is plain HTTP/1.1, its https one HTTP/2
    session = Session(harness, "h1-plain" if protocol == "h1" else "h2")
    host = "127.0.0.1" if protocol == "h1" else "localhost"
    try:
        for method, path in REQUESTS:
            real = site.clients[protocol].request(method, site.bases[protocol] + path)
            fake = session.request(method, path, host=host)
            expected = comparable(
                real.status_code, dict(real.headers), real.content, real.headers["x-request-id"]
            )
            seen = comparable(
                fake.status, dict(fake.headers), fake.body, fake.header("x-request-id") or ""
            )
            assert seen == expected, (method, path)
    finally:
        site.close()
    assert [r["path"] for r in backend.requests] == ["/echo/x?y=1"] * 2
