"""`bastion demo` (what `make run` starts) shows its own traffic: it prints the dashboard's
address and token, generates requests, and the admin API, the metrics and `bastion stats`
count them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from conftest import free_port, wait_for_port


def test_demo_prints_the_dashboard_and_feeds_it(tmp_path: Path) -> None:
    port, admin, metrics = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "BASTION_ADMIN_TOKEN"}
    env["BASTION_DATA_DIR"] = str(tmp_path / "data")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastion", "demo", "--port", str(port),
         "--https-port", str(free_port()), "--admin-port", str(admin),
         "--metrics-port", str(metrics)],
        stdout=out.open("wb"), stderr=(tmp_path / "err").open("wb"), env=env,
    )  # fmt: skip
    try:
        wait_for_port(admin)
        deadline = time.monotonic() + 10
        while "Ctrl-C" not in out.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        printed = out.read_text()
        found = re.search(r"Dashboard: (http://\S+)\s+\(log in with the admin token (\S+) ;",
                          printed)
        assert found, printed
        url, token = found.groups()
        assert url == f"http://127.0.0.1:{admin}/"
        # the printed token logs in (the dashboard's form), a wrong one does not
        with httpx.Client(base_url=url) as client:
            assert client.post("/login", data={"token": "wrong" * 4}).status_code != 303
        with httpx.Client(base_url=url) as client:
            login = client.post("/login", data={"token": token})
            assert login.status_code == 303 and "bastion_admin" in login.cookies, printed
            assert client.get("/").status_code == 200
        headers = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 30
        while True:  # the demo's own traffic reaches the statistics within seconds
            stats = httpx.get(f"{url}api/stats?window=5m", headers=headers).json()
            totals = stats["totals"]
            clients = {row["key"] for row in stats["top"]["clients"]}
            if (totals["requests"] >= 20 and len(clients) >= 2) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert totals["requests"] >= 20, totals
        assert len(clients) >= 2 and "127.0.0.1" not in clients, clients
        assert stats["top"]["browsers"] and stats["routes"]
        scrape = httpx.get(f"http://127.0.0.1:{metrics}/metrics").text
        assert "bastion_requests_total{" in scrape
        printed_stats = subprocess.run(
            [sys.executable, "-m", "bastion", "stats", "--since", "5m", "--json"],
            capture_output=True, text=True, env=env, timeout=60, check=True,
        )  # fmt: skip
        assert json.loads(printed_stats.stdout)["totals"]["requests"] >= 20
        # the access log went to a file, the terminal kept the instructions readable
        assert (tmp_path / "data" / "demo-access.log").stat().st_size > 0
        assert "HTTP/1.1\" 200" not in printed
    finally:
        proc.terminate()
        assert proc.wait(15) == 0
