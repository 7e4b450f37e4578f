"""The JSON access log's fields through a real `bastion run`, over HTTP/1.1 and HTTP/2:
the cache outcome (MISS then HIT), the refusing policy and its reason, null for every
absent value (never an empty string), durations in milliseconds with microseconds."""

from __future__ import annotations

import json
import re
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
from cacheorigin import CountingBackend, Reply

from conftest import Gateway, free_port, wait_for_port

# milliseconds with three decimals, as written (not as parsed: 1.500 would read as 1.5)
DURATION = re.compile(r'"duration_ms":(\d+\.\d{3}),')


@pytest.fixture
def origin() -> Any:
    b = CountingBackend()
    yield b
    b.stop()


@pytest.mark.parametrize("protocol", ["h1", "h2"])
def test_cache_refusal_and_null_fields(
    protocol: str, origin: CountingBackend, gateway: Any, tmp_path: Path
) -> None:
    origin.replies["/cached"] = Reply(headers={"Cache-Control": "max-age=60"}, body=b"n={n}")
    https = free_port()
    data = tmp_path / "data"
    gw: Gateway = gateway(
        {
            "listen": {"http": f"127.0.0.1:{free_port()}", "https": f"127.0.0.1:{https}"},
            "data_dir": str(data),
            "access_log": {"format": "json"},
            "sites": [
                {
                    "hosts": ["*"],
                    "routes": [
                        {"path": "/keys/", "auth": {"api_keys": {}}, "respond": {}},
                        {"path": "/fixed", "respond": {"body": "fixed"}},
                        {"path": "/", "proxy": {"upstreams": [origin.url]}, "cache": {}},
                    ],
                }
            ],
        }
    )
    wait_for_port(https)
    context = ssl.create_default_context(cafile=str(data / "ca" / "root.crt"))
    h2 = protocol == "h2"
    with httpx.Client(
        base_url=f"https://localhost:{https}", verify=context, http1=not h2, http2=h2, timeout=10
    ) as client:
        assert client.get("/cached").text == "n=1"
        assert client.get("/cached").text == "n=1"
        assert client.get("/keys/x").status_code == 401
        assert client.get("/fixed").status_code == 200
    gw.stop()
    raw = [x for x in gw.stdout.splitlines() if x.startswith("{")]
    lines = [json.loads(x) for x in raw]
    assert [line["target"] for line in lines] == ["/cached", "/cached", "/keys/x", "/fixed"]
    miss, hit, refused, fixed = lines
    assert miss["cache"] == "MISS" and hit["cache"] == "HIT"
    assert miss["protocol"] == ("HTTP/2.0" if h2 else "HTTP/1.1")
    assert miss["upstream"] == origin.url and miss["refused_by"] is None
    assert refused["refused_by"] == "auth" and "API key" in refused["refusal"]
    assert refused["status"] == 401
    # absent values are null, never "" (no cache, no upstream, no consumer, no agent...)
    for line in (refused, fixed):
        for name in ("cache", "upstream", "upstream_ms", "consumer", "referer"):
            assert line[name] is None, (name, line)
    assert fixed["refused_by"] is None and fixed["refusal"] is None
    assert all(value != "" for line in lines for value in line.values())
    # durations: milliseconds with microsecond digits
    for text in raw:
        assert DURATION.search(text), text
