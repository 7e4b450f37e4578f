"""The JSON access log stays valid, one line per request, whatever bytes a client
(or a trusted proxy) puts in the fields it controls — through the real gateway."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from conftest import Backend, Gateway, free_port, raw_request, simple_config

# Client-chosen text with what JSON must escape: quotes, backslashes, a tab (the
# one control character HTTP/1.1 allows in a field value) and bytes above 0x7f
# (obs-text, logged as Latin-1 characters and written as \u escapes).
_AGENT = b'agent "quoted" \\back\\ \ttab caf\xe9 \xc3\xbc'
_REFERER = b'http://ref.test/?a="1"\\2\t\xff'
_REQUEST_ID = b'rid "7" \\x\t\xe9'
_TARGET = b'/p?q="x"\\y&z=%22'


def _lines(path: Path, count: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            lines = path.read_bytes().decode("ascii").splitlines()
            if len(lines) >= count:
                return lines
        time.sleep(0.05)
    raise TimeoutError(f"fewer than {count} access log lines in {path}")


def _request(gw: Gateway) -> bytes:
    return raw_request(
        gw.port,
        b"GET " + _TARGET + b" HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\n"
        b"User-Agent: " + _AGENT + b"\r\n"
        b"Referer: " + _REFERER + b"\r\n"
        b"X-Request-ID: " + _REQUEST_ID + b"\r\n"
        b"Connection: close\r\n\r\n",
    )


def test_json_log_escapes_client_text_from_a_trusted_proxy(
    gateway: Any, backend: Backend, tmp_path: Path
) -> None:
    log_path = tmp_path / "access.log"
    gw: Gateway = gateway(
        simple_config(
            backend.url,
            free_port(),
            trusted_proxies=["127.0.0.1"],
            access_log={"format": "json", "path": str(log_path)},
        )
    )
    # twice: the second line is built from the gateway's remembered pieces
    for _ in range(2):
        assert _request(gw).startswith(b"HTTP/1.1 200 ")
    for line in _lines(log_path, 2):
        record = json.loads(line)  # the file is ASCII: decoding above would fail otherwise
        assert record["target"] == _TARGET.decode("latin-1")
        assert record["user_agent"] == _AGENT.decode("latin-1")
        assert record["referer"] == _REFERER.decode("latin-1")
        assert record["request_id"] == _REQUEST_ID.decode("latin-1")
        assert record["method"] == "GET" and record["host"] == "127.0.0.1"
        assert record["status"] == 200 and record["route"] == "/"
        # exactly json.dumps's escaping of each value
        for key in ("target", "user_agent", "referer", "request_id"):
            assert f'"{key}":{json.dumps(record[key])}' in line


def test_combined_log_quotes_client_text(gateway: Any, backend: Backend, tmp_path: Path) -> None:
    log_path = tmp_path / "access.log"
    gw: Gateway = gateway(
        simple_config(
            backend.url,
            free_port(),
            access_log={"format": "combined", "path": str(log_path)},
        )
    )
    assert _request(gw).startswith(b"HTTP/1.1 200 ")
    deadline = time.monotonic() + 10
    while not (log_path.exists() and log_path.read_bytes().endswith(b"\n")):
        assert time.monotonic() < deadline, "no access log line"
        time.sleep(0.05)
    line = log_path.read_text(encoding="utf-8")
    assert line.count("\n") == 1
    assert '"GET /p?q=\\"x\\"\\\\y&z=%22 HTTP/1.1" 200 ' in line
    assert '"http://ref.test/?a=\\"1\\"\\\\2\t\xff" ' in line
    assert '"agent \\"quoted\\" \\\\back\\\\ \ttab caf\xe9 \xc3\xbc" rid=' in line
