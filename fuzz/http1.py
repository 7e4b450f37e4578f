"""Differential HTTP/1.1 fuzzer: raw-socket requests through a real bastion to a recording
backend; see fuzz/README.md.

    python fuzz/http1.py --seconds 120 [--seed N] [--case K]
"""

from __future__ import annotations

import random
import socket
import sys
import time
from dataclasses import dataclass, field

from driver import run_fuzzer
from fuzzlib import ROUTES, Oracles, Sent, new_id
from processes import Bastion

WORDS = ("x", "time", "items", "a.json", "secret", "index.html", "")
METHODS_ODD = (
    b"get",
    b"Get",
    b"TRACE",
    b"trace",
    b"CONNECT",
    b"PROPFIND",
    b"G(T",
    b"GE T",
    b"G\xc9T",
    b"\xff",
    b"",
    b"M" * 300,
    b"GET\x00",
    b"POST\t",
)
TE_VALUES = (
    b"chunked",
    b"Chunked",
    b" chunked",
    b"chunked, identity",
    b"identity, chunked",
    b"xchunked",
    b"chunked\x0b",
    b"gzip, chunked",
    b"chunked;q=1",
)
CL_VALUES = (b"+5", b"05", b" 5", b"5, 5", b"-1", b"0x5", b"9" * 25, b"5 5", b"")
ODD_NAMES = (
    b"X_Forwarded_For",
    b"X_Consumer",
    b"X_Real_IP",
    b"X-FORWARDED-FOR",
    b"Name With Space",
    b"Bad(Name)",
    b"X-Foo ",
    b" X-Lead",
    b"X-\xe9",
    b"",
    b"X-Fuzz\x00",
    b"X_Upstream_Token",
)


@dataclass
class Req:
    rid: str
    method: bytes = b"GET"
    target: bytes = b"/"
    version: bytes = b"HTTP/1.1"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    exact_body: bool = True  # False when the framing is deliberately ambiguous
    trailer_names: list[bytes] = field(default_factory=list)
    line: bytes = b""  # a whole raw request line that replaces method/target/version

    def encode(self) -> bytes:
        line = self.line or self.method + b" " + self.target + b" " + self.version
        lines = [line] + [n + b":" + (b" " + v if v else b"") for n, v in self.headers]
        return b"\r\n".join(lines) + b"\r\n\r\n" + self.body


def mutate_target(rng: random.Random, route: str, rid: str) -> bytes:
    # few cache keys, so that answers are stored and then served to other requests
    word = rng.choice(WORDS) if route != "cached" else rng.choice(("x", "time"))
    target = f"/{route}/{word}" if route != "other" else f"/{word}"
    query = "" if route == "cached" else f"?fz={rid}"
    t = target.encode()
    for _ in range(rng.choice((0, 1, 1, 2, 3))):
        pick = rng.randrange(23)
        if pick == 0:
            t += b"#/../../" + rng.choice(ROUTES).encode() + b"/x"
        elif pick == 1:
            t += b"/.." * rng.randint(1, 3) + b"/" + rng.choice(ROUTES).encode() + b"/x"
        elif pick == 2:
            t += b"/%2e%2e/" + rng.choice(ROUTES).encode() + b"/x"
        elif pick == 3:
            t = t.replace(b"/", b"/%2e/", 1)
        elif pick == 4:
            t += b"%2F..%2F" + rng.choice(ROUTES).encode() + b"%2Fx"
        elif pick == 5:
            t = t.replace(b"/", b"//", rng.randint(1, 2))
        elif pick == 6:
            t += b";jsessionid=1"
        elif pick == 7:
            t += bytes([rng.choice((0, 1, 9, 0x0B, 0x7F, 0x0D, 0x0A))]) + b"x"
        elif pick == 8:
            t += bytes([rng.randint(0x80, 0xFF)])
        elif pick == 9:
            t += b"/" + b"a" * rng.choice((1000, 8000, 70000))
        elif pick == 10:
            t = b"http://localhost" + t
        elif pick == 11:
            t = b"http://evil.test:8080" + t
        elif pick == 12:
            t = rng.choice((b"*", b"", b"x", b"?", b"#", b"/?#"))
        elif pick == 13:
            t = t.replace(b"/" + route.encode(), b"/" + route.upper().encode(), 1)
        elif pick == 14:
            t = b"/public/..;/admin/x"
        elif pick == 15:
            t = b"/%61dmin/x"
        elif pick == 16:
            t += b"\\..\\..\\admin\\x"
        elif pick == 17:
            t += b" x"
        elif pick == 18:
            t = b"/admin/x/../../public/x"
        elif pick == 19:
            t = b"/public/x/..%2f..%2fadmin/x"
        elif pick == 20:
            t += b"%00"
        elif pick == 21:
            t = b"/admin/x/..%2f..%2f" + rng.choice(ROUTES).encode() + b"/x"
        else:
            t += b"%"
    return t + query.encode() if b"?" not in t else t + query.replace("?", "&").encode()


def build_request(rng: random.Random, oracles: Oracles, case: int, key: str) -> tuple[Req, Sent]:
    rid = new_id(rng)
    route = rng.choice((*ROUTES, "other"))
    req = Req(rid)
    req.target = mutate_target(rng, route, rid)
    host = b"localhost"
    if rng.random() < (0.15 if route != "cached" else 0.3):
        host = rng.choice(
            (b"localhost:6666", b"LOCALHOST", b"victim.test:80", b"", b"a b", b"x\x01")
        )
    req.headers = [(b"Host", host), (b"X-Fuzz-Id", rid.encode())]
    if rng.random() < 0.2:
        req.method = rng.choice(METHODS_ODD)
    else:
        req.method = rng.choice((b"GET", b"GET", b"GET", b"POST", b"PUT", b"HEAD", b"OPTIONS"))
    if rng.random() < 0.08:
        req.version = rng.choice((b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.10", b"http/1.1", b"HTTP/1"))
    if rng.random() < 0.04:
        req.line = rng.choice(
            (b"GET", b"GET /public/x", b" GET /public/x HTTP/1.1", b"GET  /x HTTP/1.1")
        )
    # credentials: mostly right for /admin/, sometimes odd
    if route == "admin" and rng.random() < 0.6:
        req.headers.append((b"X-API-Key", key.encode()))
    k = rng.random()
    if k < 0.05:
        req.headers.append((b"X-API-Key", b"bk_bogus_" + rid.encode()))
    elif k < 0.08:
        req.headers.append((b"Authorization", b"Bearer " + key.encode()))
    elif k < 0.10:
        req.target += (b"&" if b"?" in req.target else b"?") + b"api_key=" + key.encode()
    elif k < 0.12:
        req.headers.append((b"X_API_Key", key.encode()))
    elif k < 0.14:
        req.target += (b"&" if b"?" in req.target else b"?") + b"API_KEY=" + key.encode()
    # odd fields
    for _ in range(rng.choice((0, 0, 1, 2))):
        pick = rng.randrange(12)
        if pick < 3:
            req.headers.append((rng.choice(ODD_NAMES), b"1.2.3.4"))
        elif pick == 3:
            ctl = bytes([rng.choice((0, 1, 0x0B, 0x7F, 0x0D))])
            req.headers.append((b"X-Ctl", b"a" + ctl + b"b"))
        elif pick == 4:
            req.headers.append((b"X-High", bytes([rng.randint(0x80, 0xFF)]) * 3))
        elif pick == 5:
            req.headers.append((b"Host", b"other.test"))
        elif pick == 6:
            req.headers += [(b"Connection", b"Upgrade, HTTP2-Settings"), (b"Upgrade", b"h2c")]
            req.headers.append((b"HTTP2-Settings", b"AAMAAABkAARAAAAAAAIAAAAA"))
        elif pick == 7:
            req.headers += [(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")]
            req.headers.append((b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="))
            req.headers.append((b"Sec-WebSocket-Version", b"13"))
        elif pick == 8:
            req.headers += [(b"X-Remove-Me", b"1"), (b"X-Upstream-Token", b"client-value")]
        elif pick == 9:
            req.headers.append((b"X-Folded", b"a\r\n b"))
        elif pick == 10:
            req.headers.append((b"Expect", b"100-continue"))
        else:
            req.headers.append((b"X-Long", b"v" * rng.choice((100, 9000, 70000))))
    # body framing
    size = rng.choice((0, 0, 5, 17, 300))
    if rng.random() < 0.1:
        body = bytes(rng.randrange(256) for _ in range(size))
    else:
        body = bytes(rng.choice(b"abcdefgh0123456789") for _ in range(size))
    if rng.random() < 0.15:
        sid = new_id(rng)
        oracles.smuggled_ids[sid] = case
        body = (
            b"0\r\n\r\nGET /public/smuggled?fz=" + sid.encode() + b" HTTP/1.1\r\n"
            b"Host: localhost\r\nX-Fuzz-Id: " + sid.encode() + b"\r\n\r\n"
        )
    frame = rng.random()
    if route == "cached" and rng.random() < 0.6:  # plain GETs, which the cache stores
        req.method, body, frame = b"GET", b"", 0.0
    if frame < 0.45:
        if body or req.method in (b"POST", b"PUT"):
            req.headers.append((b"Content-Length", b"%d" % len(body)))
        req.body = body
    elif frame < 0.65:
        req.headers.append((b"Transfer-Encoding", b"chunked"))
        req.body = chunked(rng, body, req, key)
    elif frame < 0.75:
        req.exact_body = False
        req.headers.append((b"Transfer-Encoding", rng.choice(TE_VALUES)))
        req.body = chunked(rng, body, req, key)
    elif frame < 0.82:
        req.exact_body = False
        req.headers += [(b"Content-Length", b"%d" % len(body)), (b"Transfer-Encoding", b"chunked")]
        req.body = chunked(rng, body, req, key) if rng.random() < 0.5 else body
    elif frame < 0.88:
        req.exact_body = False
        req.headers += [(b"Content-Length", b"%d" % len(body))]
        req.headers += [(b"Content-Length", b"%d" % (len(body) + 1))]
        req.body = body
    elif frame < 0.93:
        req.exact_body = False
        req.headers.append((b"Content-Length", rng.choice(CL_VALUES)))
        req.body = body
    else:
        req.exact_body = False
        req.headers.append((b"Transfer-Encoding", b"chunked"))
        req.body = bad_chunked(rng, body)
    if rng.random() < 0.1:
        rng.shuffle(req.headers)
    valid, conflicting = oracles.key_state(req.target, req.headers)
    if req.target[:7].lower() == b"http://" or req.target[:8].lower() == b"https://":
        # absolute form: the target's authority is the host, the Host field is ignored
        # (RFC 9112 §3.2.2)
        host = req.target.split(b"//", 1)[1].split(b"/", 1)[0]
    sent = Sent(
        rid=rid,
        case=case,
        method=req.method if not req.line else (req.line.split() or [b""])[0],
        target=req.target if not req.line else ([*req.line.split(), b"", b""])[1],
        body_len=len(body) if req.exact_body else None,
        valid_key=valid,
        conflicting_keys=conflicting,
        host=host,
        trailer_names=req.trailer_names,
        header_names=[n for n, _ in req.headers],
    )
    return req, sent


def chunked(rng: random.Random, body: bytes, req: Req, key: str) -> bytes:
    out = b""
    pos = 0
    while pos < len(body):
        n = rng.randint(1, max(1, len(body) - pos))
        ext = rng.choice((b"", b"", b";ext=1", b';a="b"'))
        out += b"%x%s\r\n%s\r\n" % (n, ext, body[pos : pos + n])
        pos += n
    out += b"0\r\n"
    if rng.random() < 0.4:
        name = b"X-Trailer-" + req.rid.encode()
        req.trailer_names.append(name)
        out += name + b": t\r\n"
        if rng.random() < 0.5:
            req.trailer_names.append(b"X-API-Key")
            out += b"X-API-Key: " + rng.choice((b"bk_bogus", key.encode())) + b"\r\n"
    return out + b"\r\n"


def bad_chunked(rng: random.Random, body: bytes) -> bytes:
    n = len(body)
    return rng.choice(
        (
            b"%x\r\n%s0\r\n\r\n" % (n, body),  # missing CRLF after data
            b"%X\n%s\n0\n\n" % (n, body),  # bare LF
            b"%x \r\n%s\r\n0\r\n\r\n" % (n, body),  # space after size
            b"0x%x\r\n%s\r\n0\r\n\r\n" % (n, body),
            b"%x\r\n%s\r\n" % (n + 3, body) + b"0\r\n\r\n",  # size too big
            b"ffffffffffffffffff\r\n" + body,
            b"-1\r\n\r\n",
            b"%x;\x01\r\n%s\r\n0\r\n\r\n" % (n, body),
        )
    )


# ------------------------------------------------------------------ reading answers
class Reader:
    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.buf = b""
        self.deadline = deadline
        self.closed = False
        self.timed_out = False

    def _more(self) -> bool:
        left = self.deadline - time.monotonic()
        if self.closed:
            return False
        if left <= 0:
            self.timed_out = True
            return False
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            self.timed_out = True
            return False
        except OSError:
            self.closed = True
            return False
        if not data:
            self.closed = True
            return False
        self.buf += data
        return True

    def until(self, sep: bytes) -> bytes | None:
        while sep not in self.buf:
            if len(self.buf) > 1 << 20 or not self._more():
                return None
        out, _, self.buf = self.buf.partition(sep)
        return out

    def exact(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            if not self._more():
                return None
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self, method: bytes) -> tuple[int, dict[bytes, bytes]] | None:
        while True:
            head = self.until(b"\r\n\r\n")
            if head is None:
                return None
            lines = head.split(b"\r\n")
            try:
                status = int(lines[0].split(b" ")[1])
            except (IndexError, ValueError):
                return 0, {b"raw": head}
            headers: dict[bytes, bytes] = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            if 100 <= status < 200 and status != 101:
                continue
            break
        if method == b"HEAD" or status in (101, 204, 304):
            return status, headers
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            while True:
                size_line = self.until(b"\r\n")
                if size_line is None:
                    return status, headers
                size = int(size_line.split(b";")[0] or b"0", 16)
                if size == 0:
                    self.until(b"\r\n")
                    return status, headers
                self.exact(size + 2)
        if b"content-length" in headers:
            self.exact(int(headers[b"content-length"]))
            return status, headers
        while self._more():
            pass
        return status, headers


# ------------------------------------------------------------------ driving
def run_case(
    case: int, seed: int, gw: Bastion, oracles: Oracles, verbose: bool
) -> list[tuple[str, int | None]]:
    rng = random.Random(f"{seed}:{case}")
    reqs: list[tuple[Req, Sent]] = []
    for _ in range(rng.choice((1, 1, 1, 1, 2, 3))):
        reqs.append(build_request(rng, oracles, case, gw.key))
    data = b"".join(r.encode() for r, _ in reqs)
    oracles.case_bytes[case] = data
    for _, sent in reqs:
        oracles.sent[sent.rid] = sent
    oracles.requests += len(reqs)
    exact = all(r.exact_body for r, _ in reqs)
    results: list[tuple[str, int | None]] = []
    try:
        sock = socket.create_connection(("127.0.0.1", gw.port), timeout=3)
    except OSError as exc:
        oracles.add("connect-failed", case, str(exc))
        return results
    with sock:
        try:
            if rng.random() < 0.2 and len(data) < 8192:  # partial sends
                pos = 0
                while pos < len(data):
                    n = rng.randint(1, 64)
                    sock.sendall(data[pos : pos + n])
                    pos += n
                    if rng.random() < 0.05:
                        time.sleep(0.01)
            else:
                sock.sendall(data)
        except OSError:
            pass
        reader = Reader(sock, time.monotonic() + (6.0 if exact else 0.6))
        smuggling = any(sid_case == case for sid_case in oracles.smuggled_ids.values())
        for _, sent in reqs:
            got = reader.response(sent.method)
            while got is not None and oracles.smuggled_answered(got[1].get(b"x-fuzz-echo")):
                got = reader.response(b"GET")
            if got is None:
                if exact and reader.timed_out and not results:
                    oracles.add("no-answer", case, f"no answer to {sent.rid} within 6 s")
                break
            status, headers = got
            results.append((sent.rid, status))
            if status == 0:
                oracles.add("bad-response", case, f"unparseable answer head {headers[b'raw']!r}")
                break
            oracles.answer(sent.rid, status, headers)
            if status == 101:
                break
        else:
            if smuggling:  # answers to bytes the gateway read as requests of their own
                reader.deadline = time.monotonic() + 0.3
                while (extra := reader.response(b"GET")) is not None:
                    if not oracles.smuggled_answered(extra[1].get(b"x-fuzz-echo")):
                        oracles.add("desync-extra-answer", case, f"unexpected answer {extra!r}")
            elif reader.buf and reqs[-1][1].method == b"HEAD":
                oracles.add("body-on-head-answer", case, f"after the answer: {reader.buf!r}")
            elif reader.buf and exact:
                oracles.add("desync-extra-answer", case, f"bytes after the answers {reader.buf!r}")
        if verbose:
            print(f"case {case} sent {data!r}\n  answers {results}")
    return results


def probe(gw: Bastion, oracles: Oracles, rng: random.Random, case: int) -> None:
    rid = new_id(rng)
    req = b"GET /public/probe?fz=%s HTTP/1.1\r\nHost: localhost\r\nX-Fuzz-Id: %s\r\n\r\n" % (
        rid.encode(),
        rid.encode(),
    )
    target = b"/public/probe?fz=" + rid.encode()
    oracles.sent[rid] = Sent(rid, case, b"GET", target, 0, False, False, b"localhost")
    try:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
            sock.sendall(req)
            got = Reader(sock, time.monotonic() + 5).response(b"GET")
    except OSError as exc:
        got = None
        oracles.add("probe-failed", case, f"plain GET failed: {exc}")
        return
    if got is None or got[0] != 200 or got[1].get(b"x-fuzz-echo") != rid.encode():
        oracles.add("probe-failed", case, f"plain GET got {got!r}")


def main() -> int:
    return run_fuzzer("http1", __doc__, 25, False, run_case, probe)


if __name__ == "__main__":
    sys.exit(main())
