"""Answers a well-behaved backend never sends, from a real misbehaving server
(tests/hostile.py), through HTTP/1.1 and HTTP/2 clients: heads too large or with too many
fields, statuses out of range, 1xx heads, a 101 nobody asked for, bodies where none may
be and trailers. Each must end as a 502 (or a clean answer) without the backend's bytes
reaching the client as a response of their own, and without desynchronising the pooled
upstream connection for the next client."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Gateway, free_port, wait_for_port
from hostile import LONG_NAME, MIB, HostileBackend

PROTOCOLS = ["http1", "http2"]
PLAIN_HOST = "plain.test"  # the site served over plain HTTP/1.1


class Front:
    """A gateway with an HTTP and an HTTPS listener for `localhost`, everything proxied
    to the hostile backend; `get` goes through the listener of the protocol asked for."""

    def __init__(self, gw: Gateway, http: int, https: int, ca: Path) -> None:
        self.gw = gw
        self.http = http
        self.https = https
        self.ca = ca

    def client(self, protocol: str) -> httpx.Client:
        if protocol == "http2":
            return httpx.Client(
                http1=False,
                http2=True,
                verify=ssl.create_default_context(cafile=str(self.ca)),
                base_url=f"https://localhost:{self.https}",
                timeout=30,
            )
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.http}", headers={"Host": PLAIN_HOST}, timeout=30
        )

    def request(self, protocol: str, method: str, path: str) -> httpx.Response:
        with self.client(protocol) as c:
            r = c.request(method, path)
        assert r.http_version == ("HTTP/2" if protocol == "http2" else "HTTP/1.1")
        return r

    def raw(self, data: bytes) -> bytes:
        """HTTP/1.1 bytes in, everything the gateway answers until it closes."""
        with socket.create_connection(("127.0.0.1", self.http), timeout=10) as s:
            s.sendall(data)
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


@pytest.fixture
def hostile() -> Iterator[HostileBackend]:
    backend = HostileBackend()
    yield backend
    backend.stop()


@pytest.fixture
def front_factory(
    tmp_path: Path, gateway: Callable[..., Gateway], hostile: HostileBackend
) -> Callable[..., Front]:
    def make(route: dict[str, Any] | None = None, **proxy: Any) -> Front:
        http, https = free_port(), free_port()
        routes = [{"path": "/", "proxy": {"upstreams": [hostile.url], **proxy}, **(route or {})}]
        config = {
            "listen": {"http": f"127.0.0.1:{http}", "https": f"127.0.0.1:{https}"},
            "data_dir": str(tmp_path / "data"),
            "access_log": {"format": "off"},
            "sites": [
                {"hosts": ["localhost"], "routes": routes},
                {"hosts": [PLAIN_HOST], "tls": "off", "routes": routes},
            ],
        }
        gw = gateway(config)
        wait_for_port(https)
        return Front(gw, http, https, tmp_path / "data" / "ca" / "root.crt")

    return make


@pytest.fixture
def front(front_factory: Callable[..., Front]) -> Front:
    return front_factory()


def assert_502(r: httpx.Response) -> None:
    assert r.status_code == 502, (r.status_code, r.headers, r.text[:200])
    assert r.headers["content-type"] == "application/problem+json"
    assert json.loads(r.content)["status"] == 502
    assert "set-cookie" not in r.headers
    assert b"injected" not in r.content and b"POISONED" not in r.content


def conn_of(hostile: HostileBackend, target: str) -> int:
    """The backend connection that carried the last request for `target`."""
    return [number for number, _, t in hostile.requests if t == target][-1]


def no_tracebacks(front: Front) -> None:
    assert "Traceback" not in front.gw.stderr, front.gw.stderr


# ------------------------------------------------------------------ head limits
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_header_field_of_many_megabytes_is_cut_off_with_502(
    front: Front, hostile: HostileBackend, protocol: str
) -> None:
    assert_502(front.request(protocol, "GET", "/huge-field?mb=64"))
    assert hostile.streamed.wait(30)
    # the gateway stopped reading at the limit: most of the field never left the backend
    # (what got through is what the sockets' buffers hold)
    assert hostile.sent[-1] < 32 * MIB
    r = front.request(protocol, "GET", "/ok")
    assert r.status_code == 200 and r.text == "ok"
    assert "upstream sent too big header" in front.gw.stderr
    assert front.gw.proc is not None and front.gw.proc.poll() is None
    no_tracebacks(front)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_trailer_of_many_megabytes_cuts_the_answer_off(
    front: Front, hostile: HostileBackend, protocol: str
) -> None:
    # the head and the first chunk are out: the only honest signal left is the cut
    with pytest.raises(httpx.HTTPError):
        front.request(protocol, "GET", "/huge-trailer?mb=64")
    assert hostile.streamed.wait(30)
    assert hostile.sent[-1] < 32 * MIB
    r = front.request(protocol, "GET", "/ok")
    assert r.status_code == 200 and r.text == "ok"
    no_tracebacks(front)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_70kb_head_is_502_by_default(
    front: Front, hostile: HostileBackend, protocol: str
) -> None:
    assert_502(front.request(protocol, "GET", "/field?kb=70"))
    # that connection is dropped: the next request gets one of its own
    r = front.request(protocol, "GET", "/ok")
    assert r.status_code == 200
    assert conn_of(hostile, "/ok") != conn_of(hostile, "/field?kb=70")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_head_limit_is_configurable(
    front_factory: Callable[..., Front], hostile: HostileBackend, protocol: str
) -> None:
    front = front_factory(max_response_header_bytes="8KiB", max_response_header_fields=10)
    r = front.request(protocol, "GET", "/field?kb=6")
    assert r.status_code == 200 and len(r.headers["x-big"]) == 6 * 1024
    assert_502(front.request(protocol, "GET", "/field?kb=9"))
    assert front.request(protocol, "GET", "/fields?n=10").status_code == 200
    assert_502(front.request(protocol, "GET", "/fields?n=11"))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_more_than_100_fields_is_502(front: Front, hostile: HostileBackend, protocol: str) -> None:
    r = front.request(protocol, "GET", "/fields?n=100")
    assert r.status_code == 200 and r.headers["x-f98"] == "v"
    assert_502(front.request(protocol, "GET", "/fields?n=101"))
    r = front.request(protocol, "GET", "/ok")
    assert r.status_code == 200
    assert conn_of(hostile, "/ok") != conn_of(hostile, "/fields?n=101")
    no_tracebacks(front)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_content_length_named_in_connection_still_frames_the_answer(
    front: Front, hostile: HostileBackend, protocol: str
) -> None:
    r = front.request(protocol, "GET", "/connection-length")
    assert r.status_code == 200 and r.text == "hello"
    if protocol == "http1":  # exactly what an HTTP/1.1 client reads
        request = f"GET /connection-length HTTP/1.1\r\nHost: {PLAIN_HOST}\r\n"
        raw = front.raw(request.encode() + b"Connection: close\r\n\r\n")
        assert b"\r\nContent-Length: 5\r\n" in raw and raw.endswith(b"\r\n\r\nhello")
    # the next request on the same client connection is answered normally
    assert front.request(protocol, "GET", "/ok").status_code == 200
    no_tracebacks(front)


# ---------------------------------------------------------------------- statuses
@pytest.mark.parametrize("line", ["099", "000", "600", "999"])
def test_a_status_out_of_range_is_502_and_its_body_never_reaches_the_client(
    front: Front, line: str
) -> None:
    # over a raw HTTP/1.1 connection: exactly what the client reads
    request = f"GET /status?line={line} HTTP/1.1\r\nHost: {PLAIN_HOST}\r\nConnection: close\r\n\r\n"
    answer = front.raw(request.encode())
    assert answer.startswith(b"HTTP/1.1 502 "), answer[:200]
    assert answer.count(b"HTTP/1.1") == 1
    assert b"attacker" not in answer and b"injected" not in answer
    assert_502(front.request("http2", "GET", f"/status?line={line}"))
    assert front.request("http2", "GET", "/ok").status_code == 200
    no_tracebacks(front)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_interim_heads_are_skipped_and_the_final_answer_relayed(
    front: Front, protocol: str
) -> None:
    r = front.request(protocol, "GET", "/interim")
    assert r.status_code == 200 and r.text == "final"
    assert "link" not in r.headers  # a 103's fields are not the final answer's


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_101_to_a_request_without_upgrade_is_502(front: Front, protocol: str) -> None:
    assert_502(front.request(protocol, "GET", "/switch"))
    assert front.request(protocol, "GET", "/ok").status_code == 200


# ------------------------------------------------- framing of the pooled connection
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_head_answer_with_a_late_body_does_not_poison_the_next_request(
    front: Front, hostile: HostileBackend, protocol: str
) -> None:
    r = front.request(protocol, "HEAD", "/late-body")
    assert r.status_code == 200 and r.content == b""
    # The backend sends the HEAD's body only once the next request arrives on that
    # connection; that body is a forged answer. The next client gets its own answer.
    r = front.request(protocol, "GET", "/ok")
    assert r.status_code == 200 and r.text == "ok", r.text
    assert "x-poisoned" not in r.headers
    assert conn_of(hostile, "/ok") != conn_of(hostile, "/late-body")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_204_announcing_a_body_does_not_poison_the_next_request(
    front: Front, hostile: HostileBackend, protocol: str
) -> None:
    r = front.request(protocol, "GET", "/late-204")
    assert r.status_code == 204 and r.content == b""
    r = front.request(protocol, "GET", "/ok")
    assert r.status_code == 200 and r.text == "ok", r.text
    assert "x-poisoned" not in r.headers
    assert conn_of(hostile, "/ok") != conn_of(hostile, "/late-204")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_answer_right_behind_the_last_one_retires_the_connection(
    front: Front, hostile: HostileBackend, protocol: str
) -> None:
    # the second answer begins in the same read as the first one ends: nobody asked
    # for it, so the connection cannot be trusted to frame the next one
    r = front.request(protocol, "GET", "/two-answers")
    assert r.status_code == 200 and r.text == "ok"
    r = front.request(protocol, "GET", "/ok")
    assert r.status_code == 200 and "x-poisoned" not in r.headers
    assert conn_of(hostile, "/ok") != conn_of(hostile, "/two-answers")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_trailers_are_not_relayed_nor_left_for_the_next_answer(
    front: Front, hostile: HostileBackend, protocol: str
) -> None:
    r = front.request(protocol, "GET", "/trailer")
    assert r.status_code == 200 and r.text == "ok"
    r = front.request(protocol, "GET", "/ok")
    assert r.status_code == 200
    assert "x-trailer-leak" not in r.headers
    # a clean chunked answer leaves its connection reusable
    assert conn_of(hostile, "/ok") == conn_of(hostile, "/trailer")


# ------------------------------------- heads read from their bytes (proxy/raw_head.py)
def raw_answer(front: Front, path: str) -> bytes:
    request = f"GET {path} HTTP/1.1\r\nHost: {PLAIN_HOST}\r\nConnection: close\r\n\r\n"
    return front.raw(request.encode())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_head_dribbled_a_byte_per_write_is_relayed_once_and_whole(
    front: Front, hostile: HostileBackend, protocol: str
) -> None:
    r = front.request(protocol, "GET", "/dribble")
    assert r.status_code == 200 and r.text == "final"
    assert r.headers["x-kept"] == "yes"
    assert "link" not in r.headers and "keep-alive" not in r.headers
    if protocol == "http1":
        answer = raw_answer(front, "/dribble")
        head = answer.split(b"\r\n\r\n", 1)[0]
        assert answer.count(b"HTTP/1.1 ") == 1 and b"103" not in head
        assert b"\r\nX-Kept: yes\r\n" in head and b"Keep-Alive" not in head
    # the chunked answer ended cleanly: its connection serves the next request
    assert front.request(protocol, "GET", "/ok").status_code == 200
    assert conn_of(hostile, "/ok") == conn_of(hostile, "/dribble")


def test_fields_not_written_name_colon_space_value_are_relayed_in_that_form(
    front: Front,
) -> None:
    head = raw_answer(front, "/odd-spacing").split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    for line in (b"X-A: tight", b"X-B: wide  ", b"X-C: tab", b"X-Empty: "):
        assert b"\r\n" + line + b"\r\n" in head + b"\r\n", (line, head)
    r = front.request("http2", "GET", "/odd-spacing")
    assert (r.headers["x-a"], r.headers["x-b"], r.headers["x-c"]) == ("tight", "wide", "tab")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_field_named_in_the_answers_connection_field_is_not_relayed(
    front: Front, protocol: str
) -> None:
    r = front.request(protocol, "GET", "/connection-names")
    assert r.status_code == 200 and r.text == "ok"
    assert "x-secret" not in r.headers and r.headers["x-kept"] == "k"
    if protocol == "http1":
        answer = raw_answer(front, "/connection-names")
        assert b"X-Secret" not in answer and b"\r\nX-Kept: k\r\n" in answer


@pytest.mark.parametrize("odd", [False, True])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_fields_the_routes_rules_remove_never_reach_the_client_in_any_spelling(
    front_factory: Callable[..., Front], protocol: str, odd: bool
) -> None:
    """The compiled build removes them in its scan of the answer's bytes, or (a line not
    written "Name: value", `odd`) in the per-field rewrite; the pure build in the latter."""
    rules = {
        "remove": ["X-Powered-By", "Server", "X-Debug-*", "Date", LONG_NAME.decode()],
        "set": {"X-Served-By": "edge"},
    }
    front = front_factory(route={"headers": {"response": rules}})
    path = "/leaky-fields?odd=1" if odd else "/leaky-fields"
    r = front.request(protocol, "GET", path)
    assert r.status_code == 200 and r.text == "ok"
    assert "leak" not in str(r.headers.raw), r.headers
    assert "date" not in r.headers  # neither the backend's nor one the gateway adds
    assert r.headers["x-kept"] == "yes" and r.headers["x-served-by"] == "edge"
    if protocol == "http1":
        answer = raw_answer(front, path)
        assert b"leak" not in answer and b"\r\nX-Kept: yes\r\n" in answer, answer


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_empty_lines_before_the_status_line_are_skipped(
    front: Front, hostile: HostileBackend, protocol: str
) -> None:
    r = front.request(protocol, "GET", "/leading-crlf")
    assert r.status_code == 200 and r.text == "ok"
    assert r.headers["x-conn"] == str(conn_of(hostile, "/leading-crlf"))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_answer_that_is_not_http_is_502(
    front: Front, hostile: HostileBackend, protocol: str
) -> None:
    assert_502(front.request(protocol, "GET", "/rtsp"))
    r = front.request(protocol, "GET", "/ok")
    assert r.status_code == 200
    assert conn_of(hostile, "/ok") != conn_of(hostile, "/rtsp")
    no_tracebacks(front)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_hundreds_of_interim_heads_then_the_final_answer(
    front: Front, hostile: HostileBackend, protocol: str
) -> None:
    r = front.request(protocol, "GET", "/many-interim?n=500")
    assert r.status_code == 200 and r.text == "final"
    assert front.request(protocol, "GET", "/ok").status_code == 200
    assert conn_of(hostile, "/ok") == conn_of(hostile, "/many-interim?n=500")


def test_a_flood_of_interim_heads_is_not_kept_in_memory(
    front: Front, hostile: HostileBackend
) -> None:
    # 32 MiB of 103 heads, the gateway's reads ending inside them: each head is done with
    # once read, so what the gateway holds stays about one read, not the whole flood
    assert front.request("http1", "GET", "/ok").status_code == 200
    baseline = front.gw.rss_kb()
    result: list[httpx.Response] = []
    thread = threading.Thread(
        target=lambda: result.append(front.request("http1", "GET", "/interim-flood?mb=32"))
    )
    thread.start()
    try:
        assert hostile.flooded.wait(60)
        peak = 0
        for _ in range(10):  # (what the sockets still held reaches the gateway meanwhile)
            peak = max(peak, front.gw.rss_kb())
            time.sleep(0.05)
    finally:
        hostile.release.set()
        thread.join(60)
    assert result and result[0].status_code == 200 and result[0].text == "final"
    assert peak - baseline < 16 * 1024, (baseline, peak)
    no_tracebacks(front)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_head_after_an_interim_one_is_held_to_the_limit_in_every_build(
    front_factory: Callable[..., Front], protocol: str
) -> None:
    # the 100 and the first half of the final head arrive in one read, the rest in the
    # next: the head's whole size counts, not only what was read after the 100
    front = front_factory(max_response_header_bytes="8KiB")
    r = front.request(protocol, "GET", "/interim-then-field?kb=6")
    assert r.status_code == 200 and len(r.headers["x-big"]) == 6 * 1024
    assert_502(front.request(protocol, "GET", "/interim-then-field?kb=9"))
    assert "upstream sent too big header" in front.gw.stderr
    no_tracebacks(front)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_trailer_section_does_not_count_against_the_next_answers_head(
    front: Front, hostile: HostileBackend, protocol: str
) -> None:
    # a trailer section near the limit, in a read of its own, then on the same pooled
    # connection a head of 8 KiB in two reads: well within the limit
    r = front.request(protocol, "GET", "/big-trailer?kb=60")
    assert r.status_code == 200 and r.text == "ok"
    r = front.request(protocol, "GET", "/split-field?kb=8")
    assert r.status_code == 200 and len(r.headers["x-big"]) == 8 * 1024
    assert conn_of(hostile, "/split-field?kb=8") == conn_of(hostile, "/big-trailer?kb=60")
    no_tracebacks(front)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_ice_answer_is_502(front: Front, hostile: HostileBackend, protocol: str) -> None:
    assert_502(front.request(protocol, "GET", "/ice"))
    assert front.request(protocol, "GET", "/ok").status_code == 200
    assert conn_of(hostile, "/ok") != conn_of(hostile, "/ice")
    no_tracebacks(front)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_answer_behind_a_304_is_not_taken_for_the_next_one(
    front: Front, hostile: HostileBackend, protocol: str
) -> None:
    r = front.request(protocol, "GET", "/304-body")
    assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == '"e"'
    r = front.request(protocol, "GET", "/ok")
    assert r.status_code == 200 and r.text == "ok" and "x-poisoned" not in r.headers
    assert conn_of(hostile, "/ok") != conn_of(hostile, "/304-body")
    no_tracebacks(front)
