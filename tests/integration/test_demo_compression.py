"""The demo's compression line shows compression: the command it prints, run against the
running demo, gets a compressed answer."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from conftest import free_port, wait_for_port


def test_the_printed_compression_command_gets_a_compressed_answer(tmp_path: Path) -> None:
    port = free_port()
    ports = ["--port", str(port), "--https-port", str(free_port())]
    ports += ["--admin-port", str(free_port()), "--metrics-port", str(free_port())]
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastion", "demo", "--no-traffic", *ports],
        stdout=out.open("wb"),
        stderr=(tmp_path / "err").open("wb"),
        env=dict(os.environ, BASTION_DATA_DIR=str(tmp_path / "data")),
    )
    try:
        wait_for_port(port)
        deadline = time.monotonic() + 10
        while "Ctrl-C" not in out.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        # the line that asks for a compressed answer (a header, or curl's --compressed)
        [line] = [
            ln
            for ln in out.read_text().splitlines()
            if "Accept-Encoding" in ln or "--compressed" in ln
        ]
        header = re.search(r"-H 'Accept-Encoding: ([^']+)'", line)
        coding = header.group(1) if header else "gzip"
        url = re.search(r"(http://\S+)", line)
        assert url, line
        target = urlsplit(url.group(1))
        assert target.port == port
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", target.path, headers={"Accept-Encoding": coding})
        answer = conn.getresponse()
        body = answer.read()
        assert answer.status == 200
        assert answer.getheader("Content-Encoding") == coding == "gzip"
        plain = gzip.decompress(body)
        assert len(body) < len(plain)
        assert json.loads(plain)["count"] > 0
        # without the header: the same answer, as it is (over the 1 KiB compression minimum)
        conn.request("GET", target.path)
        unencoded = conn.getresponse()
        raw = unencoded.read()
        assert unencoded.getheader("Content-Encoding") is None
        assert raw == plain and len(raw) > 1024
        conn.close()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
