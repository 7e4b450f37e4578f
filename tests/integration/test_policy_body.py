"""Request validation (OpenAPI from a file or the backend's URL, plain JSON Schema) and
per-route body limits, through the whole gateway against a real backend."""

from __future__ import annotations

import hashlib
import json
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conftest import Backend, Gateway, free_port, raw_request, wait_for_port

SPEC_30 = {
    "openapi": "3.0.3",
    "info": {"title": "shop", "version": "1"},
    "paths": {
        "/items": {
            "get": {
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                    },
                    {
                        "name": "tag",
                        "in": "query",
                        "schema": {"type": "array", "items": {"type": "string", "maxLength": 5}},
                    },
                    {
                        "name": "X-Tenant",
                        "in": "header",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {"200": {"description": "ok"}},
            },
            "post": {
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Item"}}
                    },
                },
                "responses": {"201": {"description": "created"}},
            },
        },
        "/items/{id}": {
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
            ],
            "get": {"responses": {"200": {"description": "ok"}}},
        },
    },
    "components": {
        "schemas": {
            "Item": {
                "type": "object",
                "required": ["name", "price"],
                "properties": {
                    "name": {"type": "string"},
                    "price": {"type": "number", "minimum": 0},
                    "tags": {"type": "array", "items": {"type": "string"}, "nullable": True},
                },
            }
        }
    },
}

# what FastAPI serves at /openapi.json: 3.1, JSON, anyOf with null
SPEC_31 = {
    "openapi": "3.1.0",
    "info": {"title": "users", "version": "1"},
    "paths": {
        "/users": {
            "post": {
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/UserIn"}}
                    },
                },
                "responses": {"200": {"description": "ok"}},
            }
        }
    },
    "components": {
        "schemas": {
            "UserIn": {
                "type": "object",
                "required": ["email", "age"],
                "properties": {
                    "email": {"type": "string"},
                    "age": {"type": "integer", "minimum": 0},
                    "nick": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                },
            }
        }
    },
}


def route_config(
    backend: Backend, tmp_path: Path, route: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "access_log": {"format": "off"},
        "sites": [
            {
                "routes": [
                    {"path": "/api/", "strip_prefix": True, "proxy": {"upstreams": [backend.url]}}
                    | route,
                    {"path": "/", "proxy": {"upstreams": [backend.url]}},
                ]
            }
        ],
    }
    config.update(extra)
    return config


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    doc = response.json()
    assert doc["status"] == status
    return doc


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "openapi.yaml"
    path.write_text(yaml.safe_dump(SPEC_30))
    return path


@pytest.fixture
def shop(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path, spec_file: Path
) -> Gateway:
    return gateway(
        route_config(
            backend,
            tmp_path,
            {"validation": {"openapi": str(spec_file), "unknown_operation": 405}},
        )
    )


# ------------------------------------------------------------------ OpenAPI 3.0 file
def test_valid_requests_are_forwarded(shop: Gateway, backend: Backend) -> None:
    r = httpx.get(f"{shop.url}/api/items?limit=5&tag=a&tag=b", headers={"X-Tenant": "t1"})
    assert r.status_code == 200
    assert r.json()["path"] == "/items?limit=5&tag=a&tag=b"
    r = httpx.get(f"{shop.url}/api/items/42")
    assert r.status_code == 200


def test_parameters_of_the_wrong_type_or_missing_get_400(shop: Gateway, backend: Backend) -> None:
    r = httpx.get(f"{shop.url}/api/items?limit=0&tag=toolong")
    doc = problem(r, 400)
    errors = {(e["in"], e["parameter"]): e["detail"] for e in doc["errors"]}
    assert set(errors) == {("query", "limit"), ("query", "tag"), ("header", "X-Tenant")}
    assert "minimum" in errors[("query", "limit")]
    assert "required" in errors[("header", "X-Tenant")]
    r = httpx.get(f"{shop.url}/api/items?limit=ten", headers={"X-Tenant": "t"})
    doc = problem(r, 400)
    assert doc["errors"] == [
        {"detail": '"ten" is not of type "integer"', "in": "query", "parameter": "limit"}
    ]
    doc = problem(httpx.get(f"{shop.url}/api/items/abc"), 400)
    assert doc["errors"][0]["in"] == "path" and doc["errors"][0]["parameter"] == "id"
    assert backend.requests == []


def test_body_of_the_wrong_type_lists_each_error_with_its_pointer(
    shop: Gateway, backend: Backend
) -> None:
    r = httpx.post(f"{shop.url}/api/items", json={"name": 3, "price": -1, "tags": [1]})
    doc = problem(r, 400)
    pointers = sorted(e["pointer"] for e in doc["errors"])
    assert pointers == ["#/name", "#/price", "#/tags/0"]
    assert all(e["detail"] for e in doc["errors"])
    assert doc["request_id"] == r.headers["x-request-id"]
    doc = problem(httpx.post(f"{shop.url}/api/items", json={"price": 1}), 400)
    assert doc["errors"] == [{"detail": '"name" is a required property', "pointer": "#"}]
    doc = problem(httpx.post(f"{shop.url}/api/items", json=[1, 2]), 400)
    assert doc["errors"][0]["pointer"] == "#"
    assert backend.requests == []


def test_body_that_is_not_json_gets_400(shop: Gateway, backend: Backend) -> None:
    r = httpx.post(
        f"{shop.url}/api/items",
        content=b"name=pen&price=3",
        headers={"Content-Type": "application/json"},
    )
    doc = problem(r, 400)
    assert doc["errors"][0]["pointer"] == "#"
    assert "not valid JSON" in doc["errors"][0]["detail"]
    r = httpx.post(
        f"{shop.url}/api/items", content=b"\xff\xfe{", headers={"Content-Type": "application/json"}
    )
    assert "not UTF-8" in problem(r, 400)["errors"][0]["detail"]
    deep = b'{"name": ' + b"[" * 100000 + b"]" * 100000 + b', "price": 1}'
    r = httpx.post(
        f"{shop.url}/api/items", content=deep, headers={"Content-Type": "application/json"}
    )
    assert "nested too deeply" in problem(r, 400)["errors"][0]["detail"]
    assert httpx.get(f"{shop.url}/api/items/1").status_code == 200  # still serving
    assert backend.requests[-1]["path"] == "/items/1" and len(backend.requests) == 1


def test_valid_body_reaches_the_backend_unchanged(shop: Gateway, backend: Backend) -> None:
    body = json.dumps({"name": "pen", "price": 2.5, "tags": None}).encode()
    r = httpx.post(
        f"{shop.url}/api/items", content=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 200
    seen = r.json()
    assert seen["method"] == "POST" and seen["path"] == "/items"
    assert seen["sha256"] == hashlib.sha256(body).hexdigest()


def test_chunked_body_is_validated_and_replayed(shop: Gateway, backend: Backend) -> None:
    body = b'{"name": "cup", "price": 4}'
    half = len(body) // 2
    chunks = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (
        half,
        body[:half],
        len(body) - half,
        body[half:],
    )
    head = (
        b"POST /api/items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    answer = raw_request(shop.port, head + chunks, timeout=10)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert hashlib.sha256(body).hexdigest().encode() in answer
    bad = b'{"name": 1, "price": 4}'
    answer = raw_request(shop.port, head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(bad), bad), timeout=10)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b'"pointer":"#/name"' in answer


def test_wrong_content_type_gets_415_and_missing_body_400(shop: Gateway, backend: Backend) -> None:
    r = httpx.post(
        f"{shop.url}/api/items", content=b"name=pen", headers={"Content-Type": "text/plain"}
    )
    problem(r, 415)
    doc = problem(httpx.post(f"{shop.url}/api/items"), 400)
    assert doc["errors"] == [{"detail": "A request body is required.", "pointer": "#"}]
    assert backend.requests == []


def test_unknown_operations_get_404_or_405_with_allow(shop: Gateway, backend: Backend) -> None:
    problem(httpx.get(f"{shop.url}/api/orders"), 404)
    r = httpx.delete(f"{shop.url}/api/items/3")
    problem(r, 405)
    assert r.headers["allow"] == "GET, HEAD"
    assert backend.requests == []
    # routes without validation are untouched
    assert httpx.get(f"{shop.url}/orders").status_code == 200


def test_unknown_operation_404_or_pass(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path, spec_file: Path
) -> None:
    gw = gateway(route_config(backend, tmp_path, {"validation": {"openapi": str(spec_file)}}))
    problem(httpx.delete(f"{gw.url}/api/items/3"), 404)
    config = route_config(
        backend, tmp_path, {"validation": {"openapi": str(spec_file), "unknown_operation": "pass"}}
    )
    gw2 = gateway(config)
    assert httpx.delete(f"{gw2.url}/api/items/3").status_code == 200
    assert backend.requests[-1]["method"] == "DELETE"


def test_body_larger_than_the_validation_limit_gets_413(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path, spec_file: Path
) -> None:
    config = route_config(
        backend, tmp_path, {"validation": {"openapi": str(spec_file), "max_body": "1KiB"}}
    )
    gw = gateway(config)
    big = {"name": "x" * 2000, "price": 1}
    problem(httpx.post(f"{gw.url}/api/items", json=big), 413)
    assert httpx.post(f"{gw.url}/api/items", json={"name": "x", "price": 1}).status_code == 200


# ------------------------------------------------------------------ OpenAPI from a URL
class _SpecServer:
    """The backend's own /openapi.json (FastAPI style), which can go down."""

    def __init__(self, doc: dict[str, Any], port: int | None = None) -> None:
        body = json.dumps(doc).encode()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200 if self.path == "/openapi.json" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.port = port or free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.port}/openapi.json"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def spec_server() -> Iterator[_SpecServer]:
    server = _SpecServer(SPEC_31)
    yield server
    server.stop()


def _users_config(backend: Backend, tmp_path: Path, url: str) -> dict[str, Any]:
    return route_config(backend, tmp_path, {"validation": {"openapi": url, "fetch_timeout": "3s"}})


def test_openapi_31_from_the_backend_url(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path, spec_server: _SpecServer
) -> None:
    gw = gateway(_users_config(backend, tmp_path, spec_server.url))
    ok = {"email": "a@b.c", "age": 3, "nick": None}
    assert httpx.post(f"{gw.url}/api/users", json=ok).status_code == 200
    doc = problem(httpx.post(f"{gw.url}/api/users", json={"email": "a", "age": "3"}), 400)
    assert doc["errors"] == [{"detail": '"3" is not of type "integer"', "pointer": "#/age"}]
    saved = list((tmp_path / "data" / "openapi").glob("*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["openapi"] == "3.1.0"


def test_last_good_copy_is_used_when_the_backend_is_down(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path, spec_server: _SpecServer
) -> None:
    config = _users_config(backend, tmp_path, spec_server.url)
    first = gateway(config)
    assert httpx.post(f"{first.url}/api/users", json={"age": 1}).status_code == 400
    first.stop()
    spec_server.stop()
    gw = gateway(config)  # starts while the backend's description is unreachable
    doc = problem(httpx.post(f"{gw.url}/api/users", json={"email": 1, "age": 1}), 400)
    assert doc["errors"][0]["pointer"] == "#/email"
    assert "using the copy saved" in gw.stderr


def test_no_document_yet_gives_503_then_it_is_fetched_without_a_reload(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    server = _SpecServer(SPEC_31)
    server.stop()  # its port is now free: the backend "has not started yet"
    gw = gateway(_users_config(backend, tmp_path, server.url))
    r = httpx.post(f"{gw.url}/api/users", json={"email": "x", "age": 1})
    problem(r, 503)
    assert r.headers["retry-after"] == "5"
    assert backend.requests == []
    late = _SpecServer(SPEC_31, port=server.port)  # the backend comes up on its port
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = httpx.post(f"{gw.url}/api/users", json={"email": "x", "age": "1"})
            if r.status_code != 503:
                break
            time.sleep(0.5)
        doc = problem(r, 400)
        assert doc["errors"][0]["pointer"] == "#/age"
        assert "the OpenAPI document is available" in gw.stderr
    finally:
        late.stop()


def test_no_document_and_no_copy_gives_503_until_a_reload_finds_it(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/openapi.json"
    gw = gateway(_users_config(backend, tmp_path, url))
    doc = problem(httpx.post(f"{gw.url}/api/users", json={}), 503)
    assert "not available" in doc["detail"]
    assert "no earlier copy" in gw.stderr
    assert str(port) not in doc["detail"]  # no backend address to clients
    assert httpx.get(f"{gw.url}/other").status_code == 200  # other routes serve
    server = _SpecServer(SPEC_31)
    try:
        config = _users_config(backend, tmp_path, server.url)
        config["listen"] = {"http": f"127.0.0.1:{gw.port}"}
        gw.reload(config, wait_for="configuration reloaded")
        assert httpx.post(f"{gw.url}/api/users", json={"email": "x", "age": 1}).status_code == 200
        problem(httpx.post(f"{gw.url}/api/users", json={}), 400)
    finally:
        server.stop()


# ------------------------------------------------------------------ plain JSON Schema
def test_plain_json_schema_on_a_route(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    schema = {
        "type": "object",
        "required": ["event"],
        "properties": {"event": {"enum": ["push", "ping"]}, "count": {"type": "integer"}},
        "additionalProperties": False,
    }
    gw = gateway(route_config(backend, tmp_path, {"validation": {"json_schema": schema}}))
    assert httpx.post(f"{gw.url}/api/hook", json={"event": "push"}).status_code == 200
    doc = problem(httpx.post(f"{gw.url}/api/hook", json={"event": "pull", "x": 1}), 400)
    assert sorted(e["pointer"] for e in doc["errors"]) == ["#", "#/event"]
    problem(
        httpx.post(f"{gw.url}/api/hook", content=b"<a/>", headers={"Content-Type": "text/xml"}),
        415,
    )
    problem(httpx.post(f"{gw.url}/api/hook"), 400)
    assert httpx.get(f"{gw.url}/api/hook").status_code == 200  # no body, nothing to check
    assert [r["method"] for r in backend.requests] == ["POST", "GET"]


# ------------------------------------------------------------------ body limits
def test_route_body_limit(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = gateway(route_config(backend, tmp_path, {"max_body": "4KiB"}))
    doc = problem(httpx.post(f"{gw.url}/api/upload", content=b"x" * 5000), 413)
    assert "4096" in doc["detail"]
    assert backend.requests == []
    ok = b"y" * 4096
    r = httpx.post(f"{gw.url}/api/upload", content=ok)
    assert r.status_code == 200 and r.json()["sha256"] == hashlib.sha256(ok).hexdigest()
    # other routes keep the server-wide limit
    assert httpx.post(f"{gw.url}/other", content=b"z" * 5000).status_code == 200


def test_route_body_limit_on_chunked_uploads(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = gateway(route_config(backend, tmp_path, {"max_body": "4KiB"}))

    def chunks(size: int) -> Iterator[bytes]:
        for _ in range(size // 1000):
            yield b"c" * 1000

    r = httpx.post(f"{gw.url}/api/upload", content=chunks(8000))
    problem(r, 413)
    r = httpx.post(f"{gw.url}/api/upload", content=chunks(3000))
    assert r.status_code == 200
    assert r.json()["sha256"] == hashlib.sha256(b"c" * 3000).hexdigest()
    assert r.json()["body_len"] == 3000


def test_expect_100_continue_over_the_limit_is_refused_before_the_body(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = gateway(route_config(backend, tmp_path, {"max_body": "1KiB"}))
    head = (
        b"PUT /api/file HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    answer = raw_request(gw.port, head, timeout=5, read_all=False)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert b"100 Continue" not in answer


# ------------------------------------------------------------------ configuration errors
def _check(tmp_path: Path, route: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    config = {
        "listen": {"http": f"127.0.0.1:{free_port()}"},
        "data_dir": str(tmp_path / "data"),
        "sites": [
            {"routes": [{"path": "/api/", "proxy": {"upstreams": ["http://127.0.0.1:9"]}} | route]}
        ],
    }
    path = tmp_path / "check.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return subprocess.run(
        [sys.executable, "-m", "bastion", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    result = _check(tmp_path, {"validation": {"openapi": "missing.yaml"}})
    assert result.returncode != 0
    assert "validation.openapi" in result.stderr and "does not exist" in result.stderr
    result = _check(tmp_path, {"validation": {}})
    assert result.returncode != 0 and "exactly one of openapi and json_schema" in result.stderr
    result = _check(tmp_path, {"compress": {"types": ["html"]}})
    assert result.returncode != 0 and "compress.types" in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("openapi: 2.0\npaths: {}\n")
    result = _check(tmp_path, {"validation": {"openapi": str(bad)}})
    assert result.returncode != 0
    assert "not an OpenAPI 3.0 or 3.1 document" in result.stderr
    assert "sites[0].routes[0].validation.openapi: " in result.stderr  # with its line


def test_gateway_start_fails_on_a_broken_schema(
    gateway: Callable[..., Gateway], tmp_path: Path, backend: Backend
) -> None:
    spec = json.loads(json.dumps(SPEC_30))
    spec["components"]["schemas"]["Item"]["properties"]["price"]["$ref"] = "#/components/nope"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(spec))
    gw = gateway(
        route_config(backend, tmp_path, {"validation": {"openapi": str(path)}}), start=False
    )
    gw.start(wait=False)
    deadline = time.monotonic() + 30
    while gw.proc is not None and gw.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gw.proc is not None and gw.proc.returncode == 1
    assert "sites[0].routes[0].validation.openapi: " in gw.stderr


# ------------------------------------------------------------------ HTTP/2
def test_validation_over_http2(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path, spec_file: Path
) -> None:
    http, https = free_port(), free_port()
    config = route_config(backend, tmp_path, {"validation": {"openapi": str(spec_file)}})
    config["listen"] = {"http": f"127.0.0.1:{http}", "https": f"127.0.0.1:{https}"}
    config["sites"][0]["hosts"] = ["localhost"]
    gateway(config)
    wait_for_port(https)
    context = ssl.create_default_context(cafile=str(tmp_path / "data" / "ca" / "root.crt"))
    with httpx.Client(http2=True, verify=context) as client:
        url = f"https://localhost:{https}/api/items"
        r = client.post(url, json={"name": "pen", "price": "cheap"})
        assert r.http_version == "HTTP/2"
        doc = problem(r, 400)
        assert doc["errors"] == [
            {"detail": '"cheap" is not of type "number"', "pointer": "#/price"}
        ]
        body = json.dumps({"name": "pen", "price": 1}).encode()
        r = client.post(url, content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 200
        assert r.json()["sha256"] == hashlib.sha256(body).hexdigest()
        problem(client.post(url, content=b"{", headers={"Content-Type": "application/json"}), 400)
    assert [r["method"] for r in backend.requests] == ["POST"]


def test_route_body_limit_over_http2(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    http, https = free_port(), free_port()
    config = route_config(backend, tmp_path, {"max_body": "4KiB"})
    config["listen"] = {"http": f"127.0.0.1:{http}", "https": f"127.0.0.1:{https}"}
    config["sites"][0]["hosts"] = ["localhost"]
    gateway(config)
    wait_for_port(https)
    context = ssl.create_default_context(cafile=str(tmp_path / "data" / "ca" / "root.crt"))

    def parts(size: int) -> Iterator[bytes]:
        for _ in range(size // 1000):
            yield b"h" * 1000

    with httpx.Client(http2=True, verify=context) as client:
        url = f"https://localhost:{https}/api/upload"
        r = client.post(url, content=b"x" * 5000)
        assert r.http_version == "HTTP/2"
        problem(r, 413)
        problem(client.post(url, content=parts(9000)), 413)  # no length announced
        r = client.post(url, content=parts(3000))
        assert r.status_code == 200 and r.json()["body_len"] == 3000
    assert len(backend.requests) == 1
