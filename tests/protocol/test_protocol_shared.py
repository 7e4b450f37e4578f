"""Behaviour both protocols share: routing, policies and the cache answer the same over
HTTP/1.1 and HTTP/2. Every test runs twice (the `client_protocol` fixture of conftest), talks
to the in-process harness (tests/protocolkit.py) through one `Session`, and checks what the
real backend of conftest received.

To add a behaviour: write the test once against `Session.request`, take `client_protocol`,
and assert on `backend.requests` for what reached (or did not reach) the backend."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from authtokens import create_key
from bastion.handlers.simple import RedirectHandler
from conftest import Backend
from protocolkit import InProcessGateway, Response, Session

Harness = Callable[..., InProcessGateway]


def site(backend: Backend, routes: str, data_dir: Path | None = None) -> str:
    """A config: `routes` (YAML, indented for the list) on host api.test, and a second site
    for every other host."""
    data = f"data_dir: {data_dir}\n" if data_dir is not None else ""
    return f"""{data}
sites:
  - hosts: [api.test]
    tls: internal
    routes:
{routes.format(backend=backend.url)}
  - hosts: ["*"]
    tls: internal
    routes:
      - path: /
        respond: {{body: "the other site"}}
"""


def problem(response: Response, status: int) -> dict[str, Any]:
    assert response.status == status, response.text
    assert response.header("content-type") == "application/problem+json"
    doc: dict[str, Any] = json.loads(response.body)
    assert doc["status"] == status
    return doc


def upstream_fields(backend: Backend, index: int = -1) -> dict[str, str]:
    return dict(backend.requests[index]["headers"])


# ------------------------------------------------------------------------ routing
ROUTES = """\
      - path: /v1/
        proxy: {{upstreams: ["{backend}"]}}
      - path: "= /items"
        methods: [GET, POST]
        proxy: {{upstreams: ["{backend}"]}}
"""


def test_host_and_path_choose_the_route(
    backend: Backend, in_process: Harness, client_protocol: str
) -> None:
    session = Session(in_process(site(backend, ROUTES)), client_protocol)
    answer = session.request("GET", "/v1/users?page=2", host="api.test")
    assert answer.status == 200, answer.text
    assert json.loads(answer.body)["path"] == "/v1/users?page=2"
    other = session.request("GET", "/v1/users", host="elsewhere.test")
    assert (other.status, other.body) == (200, b"the other site")
    assert [(r["method"], r["path"]) for r in backend.requests] == [("GET", "/v1/users?page=2")]
    assert upstream_fields(backend)["host"] == "api.test"


def test_no_route_is_404(backend: Backend, in_process: Harness, client_protocol: str) -> None:
    session = Session(in_process(site(backend, ROUTES)), client_protocol)
    problem(session.request("GET", "/v2/users", host="api.test"), 404)
    problem(session.request("GET", "/items/1", host="api.test"), 404)  # an exact route
    assert backend.requests == []


def test_method_not_allowed_names_the_allowed_ones(
    backend: Backend, in_process: Harness, client_protocol: str
) -> None:
    session = Session(in_process(site(backend, ROUTES)), client_protocol)
    refused = session.request("DELETE", "/items", host="api.test")
    problem(refused, 405)
    assert refused.header("allow") == "GET, HEAD, POST"
    assert backend.requests == []
    body = b'{"name": "a thing"}'
    created = session.request("POST", "/items", body=body, host="api.test")
    assert created.status == 200, created.text
    [received] = backend.requests
    assert (received["method"], received["path"]) == ("POST", "/items")
    assert received["body_len"] == len(body)
    assert received["sha256"] == hashlib.sha256(body).hexdigest()


# ----------------------------------------------------------------------- policies
KEYED = """\
      - path: /keyed/
        auth: {{api_keys: {{}}}}
        proxy: {{upstreams: ["{backend}"]}}
"""


def test_api_key_required_and_not_forwarded(
    backend: Backend, in_process: Harness, client_protocol: str, tmp_path: Path
) -> None:
    data = tmp_path / "keys"
    key = create_key(data, "alice")
    session = Session(in_process(site(backend, KEYED, data)), client_protocol)
    refused = session.request("GET", "/keyed/a", host="api.test")
    problem(refused, 401)
    assert refused.header("www-authenticate") is not None
    assert key not in refused.text
    problem(session.request("GET", "/keyed/a", {"X-API-Key": key + "x"}, host="api.test"), 401)
    assert backend.requests == []

    by_header = session.request("GET", "/keyed/a", {"X-API-Key": key}, host="api.test")
    assert by_header.status == 200, by_header.text
    by_bearer = session.request(
        "GET", "/keyed/b", {"Authorization": f"Bearer {key}"}, host="api.test"
    )
    assert by_bearer.status == 200, by_bearer.text
    assert [r["path"] for r in backend.requests] == ["/keyed/a", "/keyed/b"]
    for received in backend.requests:
        fields = dict(received["headers"])
        assert "x-api-key" not in fields and "authorization" not in fields
        assert fields["x-consumer"] == "alice"
        assert key not in json.dumps(received)


LIMITED = """\
      - path: /limited/
        rate_limits: [{{rate: 2/10s}}]
        proxy: {{upstreams: ["{backend}"]}}
"""


def test_rate_limit_refuses_with_retry_after(
    backend: Backend, in_process: Harness, client_protocol: str
) -> None:
    session = Session(in_process(site(backend, LIMITED)), client_protocol)
    answers = [session.request("GET", f"/limited/{i}", host="api.test") for i in range(3)]
    assert [a.status for a in answers] == [200, 200, 429]
    problem(answers[2], 429)
    assert 1 <= int(answers[2].header("retry-after") or 0) <= 10
    assert [r["path"] for r in backend.requests] == ["/limited/0", "/limited/1"]


# -------------------------------------------------------------------------- cache
CACHED = """\
      - path: /cached/
        cache: {{ttl: 60s}}
        proxy: {{upstreams: ["{backend}"]}}
"""


def test_cache_miss_then_hit(backend: Backend, in_process: Harness, client_protocol: str) -> None:
    session = Session(in_process(site(backend, CACHED)), client_protocol)
    first = session.request("GET", "/cached/doc", host="api.test")
    second = session.request("GET", "/cached/doc", host="api.test")
    assert first.status == second.status == 200
    assert first.header("x-cache") == "MISS"
    assert second.header("x-cache") == "HIT"
    assert second.body == first.body
    assert [(r["method"], r["path"]) for r in backend.requests] == [("GET", "/cached/doc")]


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_cache_passes_unsafe_methods(
    backend: Backend, in_process: Harness, client_protocol: str, method: str
) -> None:
    session = Session(in_process(site(backend, CACHED)), client_protocol)
    session.request("GET", "/cached/doc", host="api.test")
    changed = session.request(method, "/cached/doc", body=b"{}", host="api.test")
    assert changed.status == 200, changed.text
    again = session.request("GET", "/cached/doc", host="api.test")
    assert again.header("x-cache") == "MISS"  # the unsafe method invalidated the entry
    assert [r["method"] for r in backend.requests] == ["GET", method, "GET"]


# ------------------------------------------------------------------------ failures
FAILING = """\
      - path: /broken
        redirect: {{to: /elsewhere}}
      - path: /fine
        respond: {{body: "fine"}}
"""


def test_handler_failure_is_500_and_the_connection_goes_on(
    backend: Backend,
    in_process: Harness,
    client_protocol: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: RedirectHandler, client: object, req: object) -> None:
        raise RuntimeError("a bug in a handler")

    monkeypatch.setattr(RedirectHandler, "handle", broken)
    harness = in_process(site(backend, FAILING))
    session = Session(harness, client_protocol)
    doc = problem(session.request("GET", "/broken", host="api.test"), 500)
    assert "a bug" not in json.dumps(doc)  # no traceback or message to the client
    after = session.request("GET", "/fine", host="api.test")
    assert (after.status, after.body) == (200, b"fine")
    assert len(harness.errors) == 1 and "failed in its handler" in harness.errors[0]


# ------------------------------------------------------------- the same request, twice
def test_both_protocols_forward_the_same_request(backend: Backend, in_process: Harness) -> None:
    """What the backend receives does not depend on the client's protocol (fields may come
    in another order: HTTP/2 joins cookie fields at the end)."""
    harness = in_process(site(backend, ROUTES))
    fields = {"Accept": "application/json", "Cookie": "a=1; b=2", "X-Custom": "v"}
    body = b'{"n": 1}'
    for protocol in ("h1", "h2"):
        session = Session(harness, protocol)
        assert session.request("GET", "/v1/a?x=1", fields, host="api.test").status == 200
        assert session.request("POST", "/items", fields, body, host="api.test").status == 200
    received = [
        (
            r["method"],
            r["path"],
            r["sha256"],
            sorted(kv for kv in r["headers"] if kv[0] not in ("x-request-id", "traceparent")),
        )
        for r in backend.requests
    ]
    assert len(received) == 4
    assert received[:2] == received[2:]
    assert ("cookie", "a=1; b=2") in received[0][3] and ("x-custom", "v") in received[1][3]
