"""The statistics of a real `bastion run` (on by default) over HTTP/1.1 and HTTP/2: the
User-Agent and Referer the parsers keep reach the browsers, operating systems and
referrers tables; requests without them or with nonsense in them are counted too; and
the figures survive a restart."""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Any

import httpx

from bastion.observe.stats import StatsStore
from conftest import Backend, Gateway, free_port, wait_for_port

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
CURL = "curl/8.5.0"


def test_agents_and_referrers_over_both_protocols(
    backend: Backend, gateway: Any, tmp_path: Path
) -> None:
    https = free_port()
    data = tmp_path / "data"
    gw: Gateway = gateway(
        {
            "listen": {"http": f"127.0.0.1:{free_port()}", "https": f"127.0.0.1:{https}"},
            "data_dir": str(data),
            "access_log": {"format": "off"},
            "sites": [
                {"hosts": ["*"], "routes": [{"path": "/", "proxy": {"upstreams": [backend.url]}}]}
            ],
        }
    )
    wait_for_port(https)
    context = ssl.create_default_context(cafile=str(data / "ca" / "root.crt"))
    h2_headers = {"User-Agent": FIREFOX, "Referer": "https://example.org/h2"}
    with httpx.Client(http1=False, http2=True, verify=context, timeout=10) as h2:
        for _ in range(3):
            r = h2.get(f"https://localhost:{https}/a", headers=h2_headers)
            assert r.status_code == 200 and r.http_version == "HTTP/2"
    with httpx.Client(verify=context, timeout=10) as h1:
        base = f"https://localhost:{https}"
        for _ in range(2):
            r = h1.get(base + "/b", headers={"User-Agent": CURL, "Referer": "https://x.test/"})
            assert r.status_code == 200 and r.http_version == "HTTP/1.1"
        # no User-Agent at all, and a hostile one
        assert h1.get(base + "/c", headers={"User-Agent": ""}).status_code == 200
        assert h1.get(base + "/d", headers={"User-Agent": "<b>x</b>"}).status_code == 200
    store = StatsStore(data)
    deadline = time.monotonic() + 20
    while True:  # the top tables are written every few seconds
        top = store.summary("5m")["top"]
        browsers = {row["key"]: row["requests"] for row in top["browsers"]}
        if browsers.get("Firefox") == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert browsers.get("Firefox") == 3, top
    assert browsers.get("curl") == 2, browsers
    referrers = {row["key"]: row["requests"] for row in top["referrers"]}
    assert referrers["https://example.org/h2"] == 3 and referrers["https://x.test/"] == 2
    os_rows = {row["key"]: row["requests"] for row in top["os"]}
    assert os_rows.get("Linux") == 3, os_rows
    assert sum(browsers.values()) == 7  # every request is in the table, "Other" included

    # a restart keeps the file: the figures are there, and new requests add to them
    gw.stop()
    gw.start(wait=False)
    wait_for_port(https)
    with httpx.Client(verify=context, timeout=10) as h1:
        assert h1.get(f"https://localhost:{https}/e").status_code == 200
    deadline = time.monotonic() + 20
    while (total := store.summary("1h")["totals"]["requests"]) < 8:
        assert time.monotonic() < deadline, total
        time.sleep(0.3)
    assert total == 8
