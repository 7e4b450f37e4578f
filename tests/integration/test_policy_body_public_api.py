"""examples/public-api.yaml run for real (on local ports): API keys, then rate limits, then
validation against the backend's own OpenAPI document, then compression."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from authtokens import create_key
from conftest import Backend, Gateway, free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "public-api.yaml"

SPEC = {
    "openapi": "3.1.0",
    "info": {"title": "items", "version": "1"},
    "paths": {
        "/items": {
            "get": {
                "parameters": [
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "maximum": 50}}
                ],
                "responses": {"200": {"description": "ok"}},
            },
            "post": {
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": {"type": "string"}},
                            }
                        }
                    },
                },
                "responses": {"200": {"description": "ok"}},
            },
        }
    },
}


@pytest.fixture
def spec_url() -> Iterator[str]:
    body = json.dumps(SPEC).encode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/openapi.json"
    server.shutdown()
    server.server_close()


def test_public_api_example(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path, spec_url: str
) -> None:
    config = yaml.safe_load(EXAMPLE.read_text())
    data = tmp_path / "data"
    port = free_port()
    config["listen"] = {"http": f"127.0.0.1:{port}"}
    config.pop("acme")
    config["data_dir"] = str(data)
    config["access_log"] = {"format": "off"}
    site = config["sites"][0]
    site["hosts"] = ["*"]
    site["tls"] = "off"
    route = site["routes"][1]
    route["proxy"]["upstreams"] = [backend.url]
    route["validation"]["openapi"] = spec_url
    key = create_key(data, "acme")
    gw = gateway(config)
    url = f"{gw.url}/v1/items"
    auth = {"X-API-Key": key}

    # no key: refused before the body is looked at
    r = httpx.post(url, json={"name": 1})
    assert r.status_code == 401 and "www-authenticate" in r.headers
    # a key and an invalid body or query: 400 with pointers
    r = httpx.post(url, json={"name": 1}, headers=auth)
    assert r.status_code == 400 and r.json()["errors"][0]["pointer"] == "#/name"
    r = httpx.get(url + "?limit=500", headers=auth)
    assert r.status_code == 400 and r.json()["errors"][0]["parameter"] == "limit"
    # a good request reaches the backend with the consumer's name, compressed on the way back
    r = httpx.post(url, json={"name": "pen"}, headers=auth | {"X-Pad": "p" * 2000})
    assert r.status_code == 200
    assert r.headers["content-encoding"] == "zstd"
    assert ["x-consumer", "acme"] in r.json()["headers"]
    assert [q["method"] for q in backend.requests] == ["POST"]
    # the rate limit (10/s, burst 20) answers before validation does
    statuses = []
    with httpx.Client(headers=auth) as client:
        for _ in range(200):  # (kept-alive requests: far faster than 10/s refills)
            r = client.get(url + "?limit=500")
            statuses.append(r.status_code)
            if r.status_code == 429:
                break
    assert statuses[-1] == 429, statuses
    assert set(statuses[:-1]) == {400}
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["content-type"] == "application/problem+json"
