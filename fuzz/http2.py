"""Differential HTTP/2 fuzzer: raw h2 frames (the `h2` library with validation off) over
TLS through a real bastion to a recording backend; see fuzz/README.md.

    python fuzz/http2.py --seconds 120 [--seed N] [--case K]
"""

from __future__ import annotations

import contextlib
import random
import socket
import ssl
import struct
import sys
import time
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from driver import run_fuzzer
from fuzzlib import ROUTES, Oracles, Sent, new_id
from http1 import mutate_target
from processes import Bastion

Fields = list[tuple[bytes, bytes]]
METHODS_ODD = (
    b"GET /x",
    b"",
    b"trace",
    b"TRACE",
    b"get",
    b"G\xc3\x89T",
    b"GET\r\n",
    b"CONNECT",
    b"G(T",
    b"\xff",
    b"M" * 300,
    b"PROPFIND",
)
ODD_FIELDS: tuple[tuple[bytes, bytes], ...] = (
    (b"X-Upper", b"1"),
    (b"connection", b"close"),
    (b"transfer-encoding", b"chunked"),
    (b"keep-alive", b"timeout=5"),
    (b"upgrade", b"h2c"),
    (b"proxy-connection", b"keep-alive"),
    (b"te", b"gzip"),
    (b"te", b"trailers"),
    (b"x-ctl", b"a\x00b"),
    (b"x-ctl", b"a\r\nX-Injected: 1"),
    (b"x-ctl", b"a\nb"),
    (b"x-ctl", b" padded "),
    (b"x-ctl", b"a\x7fb"),
    (b"x-high", b"\xff\xfe"),
    (b"x y", b"1"),
    (b"x:y", b"1"),
    (b"x\x00", b"1"),
    (b"", b"1"),
    (b"x_forwarded_for", b"1.2.3.4"),
    (b"x_consumer", b"mallory"),
    (b"x-forwarded-for", b"1.2.3.4"),
    (b"x-remove-me", b"1"),
    (b"x-upstream-token", b"client-value"),
    (b":foo", b"bar"),
    (b":status", b"200"),
    (b":protocol", b"websocket"),
    (b"host", b"other.test"),
    (b"cookie", b"a=1"),
    (b"cookie", b"b=2"),
    (b"x-long", b"v" * 9000),
)


def build_fields(
    rng: random.Random, oracles: Oracles, case: int, key: str, clean: bool = False
) -> tuple[Fields, Fields, bytes, Sent]:
    """Header fields, trailer fields and body of one stream, and its registry entry."""
    rid = new_id(rng)
    route = rng.choice((*ROUTES, "other"))
    method = (
        rng.choice(METHODS_ODD)
        if rng.random() < 0.2
        else rng.choice((b"GET", b"GET", b"GET", b"POST", b"PUT", b"HEAD", b"OPTIONS"))
    )
    path = mutate_target(rng, route, rid)
    if rng.random() < 0.05:
        path = rng.choice((b"", b"*", b"x", b"public/x"))
    authority = b"localhost"
    if rng.random() < 0.1:
        authority = rng.choice((b"localhost:6666", b"LOCALHOST", b"victim.test", b"", b"a b"))
    fields: Fields = [
        (b":method", method),
        (b":scheme", b"https" if rng.random() > 0.03 else b"http"),
        (b":authority", authority),
        (b":path", path),
    ]
    pick = rng.random() if not clean else 1.0
    if pick < 0.04:
        fields = [f for f in fields if f[0] != b":path"]
    elif pick < 0.08:
        fields.append((b":path", b"/admin/x?fz=" + rid.encode()))
    elif pick < 0.10:
        fields = [f for f in fields if f[0] != b":authority"] + [(b"host", b"localhost")]
    elif pick < 0.12:
        fields = [f for f in fields if f[0] != b":method"]
    elif pick < 0.14:
        fields.append((b":method", b"DELETE"))
    fields.append((b"x-fuzz-id", rid.encode()))
    if route == "admin" and rng.random() < 0.6:
        fields.append((b"x-api-key", key.encode()))
    k = rng.random()
    if k < 0.05:
        fields.append((b"x-api-key", b"bk_bogus_" + rid.encode()))
    elif k < 0.08:
        fields.append((b"authorization", b"Bearer " + key.encode()))
    for _ in range(rng.choice((0, 0, 1, 2, 3)) if not clean else 0):
        name, value = rng.choice(ODD_FIELDS)
        if rng.random() < 0.5:
            fields.append((name, value))
        else:  # a regular field before a pseudo-header
            fields.insert(rng.randrange(len(fields) + 1), (name, value))
    size = rng.choice((0, 0, 0, 5, 300))
    body = bytes(rng.choice(b"abcdef0123") for _ in range(size))
    exact = True
    if body or rng.random() < 0.1:
        c = rng.random()
        if c < 0.5:
            fields.append((b"content-length", b"%d" % len(body)))
        elif c < 0.6:
            fields.append((b"content-length", b"%d" % (len(body) + rng.choice((-1, 1, 100)))))
            exact = False
        elif c < 0.65:
            fields.append((b"content-length", rng.choice((b"+5", b"-1", b"5, 5", b"x"))))
            exact = False
    trailers: Fields = []
    if rng.random() < 0.15:
        trailers.append((b"x-trailer-" + rid.encode(), b"t"))
        if rng.random() < 0.5:
            trailers.append((b"x-api-key", key.encode() if rng.random() < 0.5 else b"bogus"))
        if rng.random() < 0.2:
            trailers.append((b":path", b"/admin/x"))
    valid, conflicting = oracles.key_state(path, [f for f in fields if f[0][:1] != b":"])
    methods = [v for n, v in fields if n == b":method"]
    paths = [v for n, v in fields if n == b":path"]
    sent = Sent(
        rid=rid,
        case=case,
        method=methods[0] if methods else b"",
        target=paths[0] if paths else b"",
        body_len=len(body) if exact else None,
        valid_key=valid,
        conflicting_keys=conflicting,
        host=authority,
        trailer_names=[n for n, _ in trailers],
        header_names=[n for n, _ in fields],
    )
    return fields, trailers, body, sent


# ------------------------------------------------------------------ raw frames
def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream)
        + payload
    )


def split_headers(data: bytes, rng: random.Random) -> bytes:
    """Rewrite every HEADERS frame in `data` as HEADERS + CONTINUATION frames."""
    out = b""
    pos = 0
    while pos + 9 <= len(data):
        length = int.from_bytes(data[pos : pos + 3], "big")
        kind, flags = data[pos + 3], data[pos + 4]
        stream = int.from_bytes(data[pos + 5 : pos + 9], "big")
        payload = data[pos + 9 : pos + 9 + length]
        pos += 9 + length
        if kind != 1 or not flags & 0x4 or flags & 0x28 or len(payload) < 2:
            out += frame(kind, flags, stream, payload)
            continue
        cuts = sorted(rng.sample(range(1, len(payload)), min(len(payload) - 1, rng.randint(1, 3))))
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        out += frame(1, flags & ~0x4, stream, pieces[0])
        for i, piece in enumerate(pieces[1:], 1):
            out += frame(9, 0x4 if i == len(pieces) - 1 else 0, stream, piece)
    return out + data[pos:]


ODD_FRAMES = (
    lambda s: frame(2, 0, s, struct.pack(">IB", s, 15)),  # PRIORITY depending on itself
    lambda s: frame(2, 0, s + 100, struct.pack(">IB", 0x80000001, 200)),  # idle stream
    lambda s: frame(4, 0, 0, struct.pack(">HI", 0x4, 0)),  # INITIAL_WINDOW_SIZE 0
    lambda s: frame(4, 0, 0, struct.pack(">HI", 0x1, 0)),  # HEADER_TABLE_SIZE 0
    lambda s: frame(4, 0, 0, struct.pack(">HI", 0x99, 7)),  # unknown setting
    lambda s: frame(4, 0, 0, struct.pack(">HI", 0x2, 1)),  # ENABLE_PUSH 1
    lambda s: frame(8, 0, s, struct.pack(">I", 0)),  # WINDOW_UPDATE of 0
    lambda s: frame(3, 0, s, struct.pack(">I", 8)),  # RST_STREAM CANCEL
    lambda s: frame(6, 0, 0, b"12345678"),  # PING
    lambda s: frame(0xEE, 0, s, b"unknown"),  # unknown frame type
    lambda s: frame(0, 0, s + 2, b"data on an idle stream"),
)


# ------------------------------------------------------------------ driving
def connect(port: int, cafile: str) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=cafile)
    context.set_alpn_protocols(["h2"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock = context.wrap_socket(raw, server_hostname="localhost")
    if sock.selected_alpn_protocol() != "h2":
        raise OSError("no h2 in ALPN")
    return sock


def run_case(case: int, seed: int, gw: Bastion, oracles: Oracles, verbose: bool) -> None:
    rng = random.Random(f"h2:{seed}:{case}")
    config = h2.config.H2Configuration(
        client_side=True,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
    )
    conn = h2.connection.H2Connection(config)
    conn.initiate_connection()
    wire = conn.data_to_send()
    streams: dict[int, Sent] = {}
    count = rng.choice((1, 1, 1, 2, 3, 5, 30))
    continuation = rng.random() < 0.1
    notes: list[object] = ["CONTINUATION"] if continuation else []
    # one malformed stream may end the whole connection: many-stream runs are mostly clean
    clean = count > 5 and rng.random() < 0.7
    exact = True
    for _ in range(count):
        fields, trailers, body, sent = build_fields(rng, oracles, case, gw.key, clean)
        sid = conn.get_next_available_stream_id()
        try:
            conn.send_headers(sid, fields, end_stream=not body and not trailers)
            if body:
                conn.send_data(sid, body, end_stream=not trailers)
            if trailers:
                conn.send_headers(sid, trailers, end_stream=True)
        except (h2.exceptions.H2Error, ValueError, TypeError):
            continue
        oracles.sent[sent.rid] = sent
        oracles.requests += 1
        notes.append((fields, trailers, body))
        streams[sid] = sent
        exact = exact and sent.body_len is not None
        chunk = conn.data_to_send()
        if continuation:
            chunk = split_headers(chunk, rng)
        wire += chunk
        if rng.random() < 0.05:
            wire += frame(3, 0, sid, struct.pack(">I", 8))  # cancel at once
            notes.append(f"RST_STREAM {sid}")
            sent.body_len = None
        if rng.random() < 0.08:
            odd = rng.randrange(len(ODD_FRAMES))
            wire += ODD_FRAMES[odd](sid)
            notes.append(f"ODD_FRAMES[{odd}] on {sid}")
            exact = False
    oracles.case_bytes[case] = wire
    oracles.case_notes[case] = repr(notes)
    try:
        sock = connect(gw.tls_port, str(gw.data / "ca" / "root.crt"))
    except (OSError, ssl.SSLError) as exc:
        oracles.add("connect-failed", case, str(exc))
        return
    answers: dict[int, tuple[int, dict[bytes, bytes]]] = {}
    done: set[int] = set()
    resets: dict[int, int] = {}
    with sock:
        with contextlib.suppress(OSError):
            sock.sendall(wire)
        deadline = time.monotonic() + (6.0 if exact else 1.0)
        ended = False
        while not ended and len(done) < len(streams) and time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = sock.recv(65536)
            except (TimeoutError, OSError, ssl.SSLError):
                break
            if not data:
                break
            try:
                events = conn.receive_data(data)
            except h2.exceptions.H2Error as exc:
                oracles.add("bad-server-frames", case, f"h2 refused the gateway's frames: {exc}")
                break
            for event in events:
                ended = ended or handle(event, answers, done, resets, conn)
            try:
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)
            except OSError:
                break
    for sid, sent in streams.items():
        if sid in answers:
            status, headers = answers[sid]
            oracles.answer(sent.rid, status, headers)
    if verbose:
        print(f"case {case} sent {wire!r}\n  answers {answers}\n  resets {resets}")


def handle(
    event: Any,
    answers: dict[int, tuple[int, dict[bytes, bytes]]],
    done: set[int],
    resets: dict[int, int],
    conn: h2.connection.H2Connection,
) -> bool:
    if isinstance(event, h2.events.ResponseReceived):
        headers = {bytes(n).lower(): bytes(v) for n, v in event.headers}
        try:
            status = int(headers.get(b":status", b"0"))
        except ValueError:
            status = 0
        answers[event.stream_id] = (status, headers)
    elif isinstance(event, h2.events.DataReceived):
        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
    elif isinstance(event, h2.events.StreamEnded):
        done.add(event.stream_id)
    elif isinstance(event, h2.events.StreamReset):
        resets[event.stream_id] = int(event.error_code)
        done.add(event.stream_id)
    elif isinstance(event, h2.events.ConnectionTerminated):
        return True
    return False


def probe(gw: Bastion, oracles: Oracles, rng: random.Random, case: int) -> None:
    """A plain good h2 GET must still be answered by the backend."""
    rid = new_id(rng)
    target = b"/public/probe?fz=" + rid.encode()
    oracles.sent[rid] = Sent(rid, case, b"GET", target, 0, False, False, b"localhost")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    fields = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost")]
    conn.send_headers(1, [*fields, (b":path", target), (b"x-fuzz-id", rid.encode())], True)
    answers: dict[int, tuple[int, dict[bytes, bytes]]] = {}
    done: set[int] = set()
    try:
        with connect(gw.tls_port, str(gw.data / "ca" / "root.crt")) as sock:
            sock.sendall(conn.data_to_send())
            while 1 not in done:
                data = sock.recv(65536)
                if not data:
                    break
                for event in conn.receive_data(data):
                    handle(event, answers, done, {}, conn)
    except (OSError, ssl.SSLError, h2.exceptions.H2Error) as exc:
        oracles.add("probe-failed", case, f"plain h2 GET failed: {exc}")
        return
    got = answers.get(1)
    if got is None or got[0] != 200 or got[1].get(b"x-fuzz-echo") != rid.encode():
        oracles.add("probe-failed", case, f"plain h2 GET got {got!r}")


def main() -> int:
    return run_fuzzer("http2", __doc__, 20, True, run_case, probe)


if __name__ == "__main__":
    sys.exit(main())
