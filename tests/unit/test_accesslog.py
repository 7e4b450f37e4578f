"""Access log lines are valid JSON / combined lines whatever the client sent."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bastion.http1.request import Request
from bastion.observe.accesslog import AccessLog


def _request() -> Request:
    req = Request()
    req.method = "GET"
    req.target = b'/p?q="x"\\y'
    req.host = "api.example.test"
    req.client_ip = "203.0.113.7"
    # as the protocols set it when a trusted proxy sent X-Request-ID
    req.xrid = b'id"with\\quote'
    req.request_id = req.xrid.decode("latin-1")
    req.headers = [
        (b"user-agent", b"User-Agent", 'agent "ü" \\ \x7f'.encode("latin-1")),
        (b"referer", b"Referer", b"http://ref.test/"),
    ]
    req.status = 200
    req.bytes_out = 123
    req.body_bytes = 4
    req.route_name = "~ ^/v[0-9]+/"
    req.upstream = "http://127.0.0.1:8000"
    req.upstream_time = 0.0015
    req.start = 10.0
    return req


def _write(tmp_path: Path, fmt: str, req: Request) -> str:
    loop = asyncio.new_event_loop()
    try:
        path = tmp_path / "access.log"
        log = AccessLog(loop, fmt, str(path))
        log.write(req, 10.25)
        log.close()
        return path.read_text(encoding="utf-8")
    finally:
        loop.close()


def test_json_line_escapes_everything_the_client_controls(tmp_path: Path) -> None:
    req = _request()
    record = json.loads(_write(tmp_path, "json", req))
    assert record["target"] == '/p?q="x"\\y'
    assert record["request_id"] == 'id"with\\quote'
    assert record["user_agent"] == 'agent "ü" \\ \x7f'
    assert record["route"] == "~ ^/v[0-9]+/"
    assert record["status"] == 200 and record["bytes_in"] == 4 and record["bytes_out"] == 123
    assert record["duration_ms"] == 250.0 and record["upstream_ms"] == 1.5
    assert record["referer"] == "http://ref.test/"


def test_json_line_without_upstream_or_agent(tmp_path: Path) -> None:
    req = _request()
    req.headers = []
    req.upstream = ""
    req.upstream_time = -1.0
    record = json.loads(_write(tmp_path, "json", req))
    assert record["upstream_ms"] is None and record["user_agent"] is None
    assert record["upstream"] == ""


def test_combined_line_quotes_client_text(tmp_path: Path) -> None:
    line = _write(tmp_path, "combined", _request())
    assert line.startswith('203.0.113.7 - - [')
    assert '"GET /p?q=\\"x\\"\\\\y HTTP/1.1" 200 123 "http://ref.test/"' in line
    assert "rid=" in line and "urt=0.002" in line
