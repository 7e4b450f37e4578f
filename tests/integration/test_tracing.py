"""W3C trace context through a real `bastion run`, over HTTP/1.1 and HTTP/2, against a
backend that echoes the fields it received: a trace started when the client sent none
(its id is the request id), a valid one forwarded as sent, an invalid one replaced and
its tracestate dropped, two traceparent fields (however spelled) refused as one, and the
JSON access log's trace_id."""

from __future__ import annotations

import json
import re
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Backend, Gateway, free_port, wait_for_port

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-01")


def fields(r: httpx.Response, name: str) -> list[str]:
    assert r.status_code == 200, r.text
    return [v for k, v in r.json()["headers"] if k == name]


@pytest.fixture(params=["h1", "h2"])
def traced(request: pytest.FixtureRequest, backend: Backend, gateway: Any, tmp_path: Path) -> Any:
    https = free_port()
    data = tmp_path / "data"
    gw: Gateway = gateway(
        {
            "listen": {"http": f"127.0.0.1:{free_port()}", "https": f"127.0.0.1:{https}"},
            "data_dir": str(data),
            "access_log": {"format": "json"},
            "sites": [
                {"hosts": ["*"], "routes": [{"path": "/", "proxy": {"upstreams": [backend.url]}}]}
            ],
        }
    )
    wait_for_port(https)
    context = ssl.create_default_context(cafile=str(data / "ca" / "root.crt"))
    h2 = request.param == "h2"
    client = httpx.Client(
        base_url=f"https://localhost:{https}", verify=context, http1=not h2, http2=h2, timeout=10
    )
    yield gw, client
    client.close()


def test_a_trace_is_started_with_the_request_id(traced: Any) -> None:
    _gw, client = traced
    r = client.get("/a", headers={"tracestate": "vendor=1"})
    (parent,) = fields(r, "traceparent")
    match = TRACEPARENT.fullmatch(parent)
    assert match is not None
    (rid,) = fields(r, "x-request-id")
    assert match.group(1) == rid  # the trace id IS the request id
    assert fields(r, "tracestate") == []  # no tracestate without a valid traceparent
    # another request, another trace
    (other,) = fields(client.get("/b"), "traceparent")
    assert other[3:35] != rid


def test_a_valid_traceparent_is_forwarded_with_its_tracestate(traced: Any) -> None:
    _gw, client = traced
    headers = [("traceparent", VALID), ("tracestate", "a=1"), ("tracestate", "b=2")]
    r = client.get("/a", headers=headers)
    assert fields(r, "traceparent") == [VALID]  # the same parent id: bastion records no span
    assert fields(r, "tracestate") == ["a=1,b=2"]
    (rid,) = fields(r, "x-request-id")
    assert rid != VALID[3:35]  # the client does not name the request


@pytest.mark.parametrize(
    "bad",
    [
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # too short
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero parent id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        VALID + "-extra",  # version 00 has four fields
    ],
)
def test_an_invalid_traceparent_is_replaced(traced: Any, bad: str) -> None:
    _gw, client = traced
    r = client.get("/a", headers={"traceparent": bad, "tracestate": "evil=1"})
    (parent,) = fields(r, "traceparent")
    assert parent != bad and TRACEPARENT.fullmatch(parent)
    assert fields(r, "tracestate") == []


def test_two_traceparent_fields_are_not_a_trace(traced: Any) -> None:
    _gw, client = traced
    other = "00-11111111111111111111111111111111-2222222222222222-01"
    # HTTP/1.1: two spellings of one name; HTTP/2: two lower-case fields
    r = client.get("/a", headers=[("traceparent", VALID), ("Traceparent", other)])
    (parent,) = fields(r, "traceparent")
    assert VALID[3:35] not in parent and other[3:35] not in parent


def test_a_later_version_is_restated_as_version_00(traced: Any) -> None:
    _gw, client = traced
    later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-future"
    r = client.get("/a", headers={"traceparent": later})
    assert fields(r, "traceparent") == ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"]


def test_the_access_log_names_the_trace(traced: Any) -> None:
    gw, client = traced
    client.get("/mine", headers={"traceparent": VALID})
    r = client.get("/ours")
    (rid,) = fields(r, "x-request-id")
    gw.stop()
    lines = [json.loads(x) for x in gw.stdout.splitlines() if x.startswith("{")]
    by_target = {line["target"]: line for line in lines}
    assert by_target["/mine"]["trace_id"] == VALID[3:35]
    assert by_target["/ours"]["trace_id"] == rid == by_target["/ours"]["request_id"]


def test_tracing_off_passes_the_fields_through(backend: Backend, gateway: Any) -> None:
    gw: Gateway = gateway(
        {
            "tracing": {"traceparent": False},
            "access_log": {"format": "off"},
            "sites": [{"routes": [{"path": "/", "proxy": {"upstreams": [backend.url]}}]}],
        }
    )
    r = httpx.get(gw.url + "/a", headers={"traceparent": "whatever", "tracestate": "x=1"})
    assert fields(r, "traceparent") == ["whatever"]
    assert fields(r, "tracestate") == ["x=1"]
    assert fields(httpx.get(gw.url + "/b"), "traceparent") == []
