"""A request waiting on its Redis rate-limit check, through real sockets, over HTTP/1.1
and HTTP/2 (the policy chain's future path, `policies/chain.py`): a client that leaves
meanwhile sends nothing to the backend and costs no traceback; a body sent meanwhile
reaches the backend intact; a server frozen (SIGSTOP) under traffic sends the requests
to the fallback within the timeout. Redis is a real redis-server, paused to hold the
checks."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h2.events
import httpx
import pytest
from test_http2 import RawH2, client, h2_config, https_port, root_ca, start

from conftest import Backend, Gateway, pattern_digest
from rediskit import RedisServer
from rediskit import redis_server as redis_server  # the fixture

pytestmark = pytest.mark.timeout(120)

BODY = 1024 * 1024  # over the 256 KiB an HTTP/1.1 connection buffers before pausing


def limited(tmp_path: Path, backend: Backend, redis: RedisServer, **state: Any) -> dict[str, Any]:
    """h2_config's gateway (http and https listeners), its proxied route rate-limited in
    Redis (never refused: the check is what is tested, not refusals)."""
    config = h2_config(tmp_path, backend)
    config["state"] = {"redis": redis.unix_url, "timeout": "3s", **state}
    site = config["sites"][0]
    site["routes"][1]["rate_limits"] = [{"rate": "100000/s", "on_store_down": "allow"}]
    # the same routes in plain HTTP/1.1 (localhost has TLS: its http listener redirects)
    config["sites"].append({**site, "hosts": ["plain.test"], "tls": "off"})
    return config


def http_port(config: dict[str, Any]) -> int:
    return int(config["listen"]["http"].rsplit(":", 1)[1])


def get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": "plain.test"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def paths(backend: Backend, prefix: str) -> list[str]:
    return sorted(r["path"] for r in backend.requests if r["path"].startswith(prefix))


def pattern(n: int) -> bytes:
    return (bytes(range(256)) * (n // 256 + 1))[:n]


def no_trace(gw: Gateway) -> None:
    log = gw.stderr
    assert "Traceback" not in log, log
    assert "failed in" not in log, log


def test_a_client_that_leaves_while_the_check_waits_reaches_no_backend(
    tmp_path: Path,
    backend: Backend,
    gateway: Callable[..., Gateway],
    redis_server: Callable[[], RedisServer],
) -> None:
    redis = redis_server()
    config = limited(tmp_path, backend, redis)
    gw = start(gateway, config)
    port = http_port(config)
    assert get(port, "/warm") == 200  # connected, script loaded: the steady path

    redis.pause()
    try:
        # HTTP/1.1: a GET (no body: nothing held for it) and a POST whose body is
        # still coming (held: the client's producer), each cut off mid-check
        bare = socket.create_connection(("127.0.0.1", port), timeout=10)
        bare.sendall(b"GET /gone/h1 HTTP/1.1\r\nHost: plain.test\r\n\r\n")
        upload = socket.create_connection(("127.0.0.1", port), timeout=10)
        upload.sendall(
            b"POST /gone/h1-body HTTP/1.1\r\nHost: plain.test\r\nContent-Length: 1000\r\n\r\n"
            + b"x" * 100
        )
        # HTTP/2: one stream reset on a connection that stays, one connection closed
        raw = RawH2(https_port(config), root_ca(tmp_path))
        raw.conn.send_headers(1, raw.request_headers("/gone/h2-reset"), end_stream=True)
        raw.flush()
        h2_closed = RawH2(https_port(config), root_ca(tmp_path))
        h2_closed.conn.send_headers(1, h2_closed.request_headers("/gone/h2-closed"),
                                    end_stream=True)  # fmt: skip
        h2_closed.flush()
        time.sleep(0.4)
        for sock in (bare, upload):  # gone: reset, not half-closed (which still reads)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        raw.conn.reset_stream(1)
        raw.flush()
        h2_closed.close()
        time.sleep(0.4)
    finally:
        redis.resume()
    # the replies come now, for requests nobody waits for
    time.sleep(1.0)
    # the connection with the reset stream still serves
    raw.conn.send_headers(3, raw.request_headers("/after/h2"), end_stream=True)
    raw.flush()
    status = None
    for event in raw.events(timeout=10):
        if isinstance(event, h2.events.ResponseReceived) and event.stream_id == 3:
            status = dict(event.headers).get(b":status")
        if isinstance(event, h2.events.StreamEnded) and event.stream_id == 3:
            break
    raw.close()
    assert status == b"200"
    assert get(port, "/after/h1") == 200
    assert paths(backend, "/gone/") == []
    assert paths(backend, "/after/") == ["/after/h1", "/after/h2"]
    no_trace(gw)


def test_a_body_sent_while_the_check_waits_reaches_the_backend_intact(
    tmp_path: Path,
    backend: Backend,
    gateway: Callable[..., Gateway],
    redis_server: Callable[[], RedisServer],
) -> None:
    redis = redis_server()
    config = limited(tmp_path, backend, redis)
    gw = start(gateway, config)
    port = http_port(config)
    assert get(port, "/warm") == 200
    answers: dict[str, Any] = {}

    def h1_length() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(
                b"POST /body/h1 HTTP/1.1\r\nHost: plain.test\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n" % BODY
            )
            sock.sendall(pattern(BODY))  # blocks while the gateway stops reading
            answers["h1"] = _read_all(sock)

    def h1_chunked() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(
                b"POST /body/h1-chunked HTTP/1.1\r\nHost: plain.test\r\n"
                b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            )
            data = pattern(BODY)
            for at in range(0, BODY, 64 * 1024):
                part = data[at : at + 64 * 1024]
                sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
            sock.sendall(b"0\r\n\r\n")
            answers["h1-chunked"] = _read_all(sock)

    def h2_upload() -> None:
        def parts() -> Any:
            data = pattern(BODY)
            for at in range(0, BODY, 64 * 1024):
                yield data[at : at + 64 * 1024]

        with client(tmp_path) as c:
            r = c.post(f"https://localhost:{https_port(config)}/body/h2", content=parts())
            answers["h2"] = (r.http_version, r.status_code)

    redis.pause()
    try:
        threads = [threading.Thread(target=t) for t in (h1_length, h1_chunked, h2_upload)]
        for thread in threads:
            thread.start()
        time.sleep(0.8)  # the bodies arrive (as far as the gateway reads) meanwhile
        assert paths(backend, "/body/") == []  # still waiting on the check
    finally:
        redis.resume()
    for thread in threads:
        thread.join(30)
    assert answers["h1"].startswith(b"HTTP/1.1 200"), answers["h1"][:200]
    assert answers["h1-chunked"].startswith(b"HTTP/1.1 200"), answers["h1-chunked"][:200]
    assert answers["h2"] == ("HTTP/2", 200)
    received = {r["path"]: r for r in backend.requests if r["path"].startswith("/body/")}
    assert sorted(received) == ["/body/h1", "/body/h1-chunked", "/body/h2"]
    for entry in received.values():
        assert entry["body_len"] == BODY, entry["path"]
        assert entry["sha256"] == pattern_digest(BODY), entry["path"]
    no_trace(gw)


def _read_all(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def test_redis_frozen_under_traffic_falls_back_within_the_timeout(
    tmp_path: Path,
    backend: Backend,
    gateway: Callable[..., Gateway],
    redis_server: Callable[[], RedisServer],
) -> None:
    """Keep-alive HTTP/1.1 clients and HTTP/2 streams in flight when Redis freezes: every
    request is answered (the route's fallback: allow) within the timeout plus slack, the
    breaker opens once, and counting in Redis resumes after."""
    redis = redis_server()
    timeout = 0.3
    config = limited(tmp_path, backend, redis, timeout="300ms",
                     breaker={"failures": 3, "open_for": "1s"})  # fmt: skip
    gw = start(gateway, config)
    port = http_port(config)
    assert get(port, "/warm") == 200
    stop = threading.Event()
    results: list[tuple[str, int, float]] = []
    lock = threading.Lock()

    def h1_client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        i = 0
        while not stop.is_set():
            start_at = time.monotonic()
            conn.request("GET", f"/traffic/h1/{n}/{i}", headers={"Host": "plain.test"})
            resp = conn.getresponse()
            resp.read()
            with lock:
                results.append(("h1", resp.status, time.monotonic() - start_at))
            i += 1
        conn.close()

    def h2_client() -> None:
        base = f"https://localhost:{https_port(config)}"
        with client(tmp_path) as c:
            i = 0
            while not stop.is_set():
                start_at = time.monotonic()
                r = c.get(f"{base}/traffic/h2/{i}")
                with lock:
                    results.append((r.http_version, r.status_code, time.monotonic() - start_at))
                i += 1

    threads = [threading.Thread(target=h1_client, args=(n,)) for n in range(4)]
    threads.append(threading.Thread(target=h2_client))
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        redis.pause()
        time.sleep(1.5)
    finally:
        redis.resume()
    time.sleep(1.5)  # open_for passes: a probe, then Redis again
    stop.set()
    for thread in threads:
        thread.join(20)

    assert len(results) > 20, results
    assert {status for _, status, _ in results} == {200}, results
    assert {version for version, _, _ in results} >= {"h1", "HTTP/2"}
    slowest = max(took for _, _, took in results)
    assert slowest < timeout + 1.5, slowest  # (slack for a loaded test machine)
    log = gw.stderr
    assert log.count("unavailable after") == 1, log
    assert log.count("limits are shared again") == 1, log
    no_trace(gw)
    after = [get(port, f"/traffic/after/{i}") for i in range(3)]
    assert after == [200] * 3
    # counted in Redis again: the limit's key exists there
    assert redis.keys("*") >= 1


def test_refusals_while_waiting_are_recorded_and_answered(
    tmp_path: Path,
    backend: Backend,
    gateway: Callable[..., Gateway],
    redis_server: Callable[[], RedisServer],
) -> None:
    """A refusal decided by Redis's reply (the future path) is a 429 with its fields over
    both protocols, and the access log names the policy that refused."""
    redis = redis_server()
    config = limited(tmp_path, backend, redis)
    for site in config["sites"]:  # (one limit per route: the two sites count apart)
        site["routes"][1]["rate_limits"] = [{"rate": "2/m", "name": "small"}]
    gw = start(gateway, config)
    port = http_port(config)
    h1 = [get(port, f"/r/h1/{i}") for i in range(3)]
    context = ssl.create_default_context(cafile=str(root_ca(tmp_path)))
    with httpx.Client(http1=False, http2=True, verify=context, timeout=10) as c:
        h2 = [c.get(f"https://localhost:{https_port(config)}/r/h2/{i}") for i in range(3)]
    r = h2[-1]
    assert h1 == [200, 200, 429]
    assert [(r.http_version, r.status_code) for r in h2] == [("HTTP/2", 200)] * 2 + [
        ("HTTP/2", 429)
    ]
    assert '"small";r=0;' in r.headers["ratelimit"]
    assert int(r.headers["retry-after"]) >= 1
    assert paths(backend, "/r/") == ["/r/h1/0", "/r/h1/1", "/r/h2/0", "/r/h2/1"]
    refused: list[dict[str, Any]] = []
    deadline = time.monotonic() + 5  # (the access log is written off the request path)
    while len(refused) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
        log = tmp_path / "access.log"
        lines = log.read_text().splitlines() if log.exists() else []
        refused = [e for e in map(json.loads, lines) if e.get("refused_by")]
    assert [(e["refused_by"], e["status"]) for e in refused] == [("rate_limits", 429)] * 2
    no_trace(gw)


def test_a_server_that_forgot_the_script_gets_it_whole_on_the_same_path(
    tmp_path: Path,
    backend: Backend,
    gateway: Callable[..., Gateway],
    redis_server: Callable[[], RedisServer],
) -> None:
    """SCRIPT FLUSH on a connection in use: the next check's EVALSHA is answered NOSCRIPT,
    the script goes whole (EVAL) on the same connection, and the count goes on in Redis
    without a fallback."""
    redis = redis_server()
    config = limited(tmp_path, backend, redis)
    for site in config["sites"]:
        site["routes"][1]["rate_limits"] = [{"rate": "3/m", "name": "few"}]
    gw = start(gateway, config)
    port = http_port(config)
    assert get(port, "/s/0") == 200  # connected, the script known
    evals = _evals(redis)
    assert redis.command("SCRIPT", "FLUSH") == "+OK"
    statuses = [get(port, f"/s/{i}") for i in range(1, 4)]
    assert statuses == [200, 200, 429]  # the flush lost no count: 3 admitted in all
    assert _evals(redis) == evals + 1  # sent whole once, then known again
    assert "unavailable" not in gw.stderr
    no_trace(gw)


def _evals(redis: RedisServer) -> int:
    for line in redis.info("commandstats").splitlines():
        if line.startswith("cmdstat_eval:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0
