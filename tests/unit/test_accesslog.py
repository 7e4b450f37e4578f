"""Access log lines are valid JSON / combined lines whatever the client sent."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

from bastion.http.request import Request
from bastion.observe.accesslog import AccessLog, redact_query


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
        req.ended = 10.25
        log.write(req)
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
    assert record["upstream"] is None and record["cache"] is None and record["refused_by"] is None


def test_combined_line_quotes_client_text(tmp_path: Path) -> None:
    line = _write(tmp_path, "combined", _request())
    assert line.startswith("203.0.113.7 - - [")
    assert '"GET /p?q=\\"x\\"\\\\y HTTP/1.1" 200 123 "http://ref.test/"' in line
    assert "rid=" in line and "urt=0.002" in line


def _write_all(tmp_path: Path, fmt: str, writes: list[tuple[Request, float]]) -> list[str]:
    loop = asyncio.new_event_loop()
    try:
        path = tmp_path / f"access-{fmt}.log"
        log = AccessLog(loop, fmt, str(path))
        for req, now in writes:
            req.ended = now
            log.write(req)
        log.close()
        return path.read_text(encoding="utf-8").splitlines()
    finally:
        loop.close()


def test_json_line_escapes_control_characters_and_every_string_field(tmp_path: Path) -> None:
    hostile = 'q"b\\s/\x00\x01\x1f\x7f\t\xe9\xff'
    req = _request()
    req.method = 'M"X'  # HTTP/2 does not restrict :method to token characters
    req.target = ("/t" + hostile).encode("latin-1")
    req.xrid = hostile.encode("latin-1")
    req.request_id = hostile
    req.headers = [
        (b"user-agent", b"User-Agent", hostile.encode("latin-1")),
        (b"referer", b"Referer", hostile.encode("latin-1")),
    ]
    req.route_name = "r" + hostile
    req.consumer = "c" + hostile
    req.upstream = "u" + hostile
    (line,) = _write_all(tmp_path, "json", [(req, 10.25)])
    assert line.isascii() and line.isprintable()
    record = json.loads(line)
    expected = {
        "request_id": hostile,
        "method": 'M"X',
        "target": "/t" + hostile,
        "route": "r" + hostile,
        "consumer": "c" + hostile,
        "upstream": "u" + hostile,
        "user_agent": hostile,
        "referer": hostile,
    }
    for key, value in expected.items():
        assert record[key] == value
        assert f'"{key}":{json.dumps(value)}' in line  # json.dumps's own escaping


def test_lines_built_from_remembered_pieces_keep_each_requests_values(tmp_path: Path) -> None:
    """Many requests alike, a few different: every line carries its own values."""
    writes = []
    for i in range(300):
        req = _request()
        req.status = (200, 404, 502)[i % 3]
        req.bytes_out = 100 + i % 7
        req.body_bytes = i % 2
        req.route_name = ("/a/", "/b/")[i % 2]
        req.consumer = ("", "alice")[i % 5 == 0]
        req.upstream_time = -1.0 if i % 4 == 0 else 0.001 * (i % 9)
        req.headers = [] if i % 6 == 0 else [(b"user-agent", b"User-Agent", b"ua/%d" % (i % 4))]
        writes.append((req, 10.0 + 0.001 * (i % 11)))
    lines = _write_all(tmp_path, "json", writes)
    assert len(lines) == 300
    for (req, now), line in zip(writes, lines, strict=True):
        record = json.loads(line)
        assert record["status"] == req.status
        assert record["bytes_out"] == req.bytes_out and record["bytes_in"] == req.body_bytes
        assert record["route"] == req.route_name
        assert record["consumer"] == (req.consumer or None)
        assert line.count('"duration_ms":' + f"{(now - req.start) * 1000:.3f},") == 1
        if req.upstream_time < 0:
            assert record["upstream_ms"] is None
        else:
            assert f'"upstream_ms":{req.upstream_time * 1000:.3f},' in line
        agent = req.header(b"user-agent")
        assert record["user_agent"] == (agent.decode() if agent else None)


def test_combined_line_fields_and_empty_agent(tmp_path: Path) -> None:
    req = _request()
    req.headers = [(b"user-agent", b"User-Agent", b"")]
    req.consumer = 'al"ice'
    (line,) = _write_all(tmp_path, "combined", [(req, 10.25)])
    assert line.startswith('203.0.113.7 - al\\"ice [')
    assert line.endswith(
        f'" 200 123 "-" "-" rid={req.request_id} route="~ ^/v[0-9]+/" '
        "upstream=http://127.0.0.1:8000 rt=0.250 urt=0.002"
    )


def test_redact_query_masks_every_value_of_a_secret_parameter() -> None:
    names = frozenset({"api_key"})
    assert redact_query(b"/a?x=1&api_key=bk_1&api_key=bk_2", names) == (
        b"/a?x=1&api_key=REDACTED&api_key=REDACTED"
    )
    # the name as the key check reads it: percent- and plus-decoded
    assert redact_query(b"/a?%61pi_key=bk_1&x=api_key", names) == b"/a?%61pi_key=REDACTED&x=api_key"
    # a bare name holds no value; other names and an empty query are left alone
    assert redact_query(b"/a?api_key&b=2", names) == b"/a?api_key&b=2"
    assert redact_query(b"/a?", names) == b"/a?"


def test_times_are_written_as_python_formats_them_with_three_decimals() -> None:
    """The durations of a line (`duration_ms`, `upstream_ms`, combined's seconds) are formatted
    from whole thousandths, not by float formatting: the text must be the same, but for a
    tie at the fourth decimal, where either neighbour is as right."""
    from bastion.observe.accesslog import _fixed3

    rng = random.Random(20261206)
    values = [0.0, 0.0004, 0.0005, 0.0015, 1.5, 999.9995, 12345.678, 1e9 + 0.25, 2.0**52]
    values += [rng.random() * rng.choice((1e-3, 1.0, 1e3, 1e6)) for _ in range(50_000)]
    for value in values:
        expected = f"{value:.3f}"
        got = _fixed3(value)
        if got != expected:
            fourth = value * 1000 - int(value * 1000)
            assert abs(fourth - 0.5) < 1e-6, (value, got, expected)
        assert _fixed3(-value) == ("-" + got if value else got)
