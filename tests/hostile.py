"""A misbehaving HTTP/1.1 backend for tests: real TCP, one thread per connection, and
each request's path picks an answer that a well-behaved server never sends.

- `/ok`: a plain 200 with the connection's number in `X-Conn` (kept alive).
- `/huge-field?mb=N`: a head whose one field streams N MiB, written until the peer
  gives up (`sent` records how much got through).
- `/huge-trailer?mb=N`: a chunked 200 whose trailer field streams N MiB, the same way.
- `/field?kb=N`: a head with one field of N KiB, then a small body.
- `/fields?n=N`: a head of N fields in all (Content-Length included).
- `/status?line=099`: that status line, then a body that is itself an HTTP answer
  carrying a `Set-Cookie` (response splitting if relayed as-is); the connection closes.
- `/interim`: `100` and `103` heads, then the final 200.
- `/switch`: a 101 whether or not the request asked for an upgrade.
- `/trailer`: a chunked 200 with a trailer field `X-Trailer-Leak`.
- `/connection-length`: a 200 whose `Connection` names its own `Content-Length`, kept alive.
- `/late-body` (HEAD) and `/late-204`: a head announcing a body that is not sent
  until the next request arrives on the same connection; the "body" is a complete
  forged answer (`POISONED`), followed by the real answer to that next request.
- `/two-answers`: a 200 with its body, and the forged answer right behind it in the
  same write, before any next request.
- `/dribble`: a 103 and the final 200 (with hop-by-hop fields to drop), a byte per write.
- `/odd-spacing`: fields written ``Name:value``, ``Name:  value  ``, with a tab and empty.
- `/connection-names`: a 200 whose `Connection` names `X-Secret`, which it also sends.
- `/leading-crlf`: empty lines before the status line (which llhttp skips).
- `/rtsp`: an `RTSP/1.0 200 OK` answer (which llhttp parses as a response).
- `/ice`: an `ICE/1.0 200 OK` answer (the same).
- `/304-body`: a `304` and, in the same write, a forged answer where no body may be.
- `/many-interim?n=N`: N `102 Processing` heads, one per write, then the final 200.
- `/interim-flood?mb=N`: N MiB of `103` heads of 16 KiB in one write (the gateway's reads
  end inside them), then, once `release` is set, the final 200 (`flooded` is set between).
- `/interim-then-field?kb=N`: a `100` and the first half of a head with one field of N KiB
  in one write, the rest of the head and a small body in a later one.
- `/big-trailer?kb=N`: a chunked 200 whose trailer section (a field of N KiB) comes in a
  write of its own, the connection kept alive.
- `/split-field?kb=N`: a head with one field of N KiB in two writes, then a small body.
- `/leaky-fields`: a 200 whose fields a route's header rules may remove (`X-Powered-By`,
  `Server`, `X-Debug-*`, a name past 32 bytes, `Date`), each valued `leak`, in odd
  spellings and twice; with `?odd=1` one more written ``Name:value``.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

POISON = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Poisoned: yes\r\n\r\nPOISONED"
SPLIT_BODY = (
    b"HTTP/1.1 200 OK\r\nSet-Cookie: session=attacker; Path=/\r\nContent-Length: 8\r\n\r\ninjected"
)
MIB = 1024 * 1024
LONG_NAME = b"x-removed-" + b"long" * 10  # (a field name of more than 32 bytes)
DRIBBLED = (
    b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nX-Kept: yes\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n5\r\nfinal\r\n0\r\n\r\n"
)


class _Conn:
    def __init__(self, sock: socket.socket, number: int) -> None:
        self.sock = sock
        self.number = number
        self.buffer = b""

    def read_request(self) -> tuple[str, str] | None:
        """(method, target) of the next request, its body read and dropped; None at EOF."""
        while b"\r\n\r\n" not in self.buffer:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return None
            if not data:
                return None
            self.buffer += data
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        while len(self.buffer) < length:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buffer += data
        self.buffer = self.buffer[length:]
        return method, target


def _ok(conn: _Conn, body: bytes = b"ok") -> bytes:
    return b"HTTP/1.1 200 OK\r\nX-Conn: %d\r\nContent-Length: %d\r\n\r\n%s" % (
        conn.number,
        len(body),
        body,
    )


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: HostileBackend

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # connections the gateway cuts on purpose end here


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        owner = self.server.owner
        conn = _Conn(self.request, owner.next_number())
        stray = b""  # what a previous answer still "owes": sent before the next answer
        while True:
            request = conn.read_request()
            if request is None:
                return
            method, target = request
            owner.record(conn.number, method, target)
            url = urlsplit(target)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            path = url.path
            if stray:
                conn.sock.sendall(stray)
                stray = b""
            if path == "/huge-field":
                start = b"HTTP/1.1 200 OK\r\nX-Huge: "
                self._stream_huge_field(owner, start, int(query.get("mb", "200")))
                return
            if path == "/huge-trailer":
                start = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                start += b"2\r\nok\r\n0\r\nX-Huge: "
                self._stream_huge_field(owner, start, int(query.get("mb", "200")))
                return
            if path == "/status":
                line = query.get("line", "200").encode()
                conn.sock.sendall(b"HTTP/1.1 " + line + b" Odd\r\n\r\n" + SPLIT_BODY)
                return
            if path == "/late-body" or path == "/late-204":
                status = b"200 OK" if path == "/late-body" else b"204 No Content"
                head = b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n" % (status, len(POISON))
                conn.sock.sendall(head)
                stray = POISON  # the body, once the next request has come
                continue
            if path == "/dribble":
                for i in range(len(DRIBBLED)):
                    conn.sock.sendall(DRIBBLED[i : i + 1])
                    time.sleep(0.001)
                continue
            if path == "/interim-flood":
                hint = b"HTTP/1.1 103 Early Hints\r\nLink: " + b"l" * (16 * 1024) + b"\r\n\r\n"
                conn.sock.sendall(hint * (int(query["mb"]) * MIB // len(hint)))
                owner.flooded.set()
                owner.release.wait(60)
                conn.sock.sendall(_ok(conn, b"final"))
                continue
            if path == "/interim-then-field" or path == "/split-field":
                value = b"v" * (int(query["kb"]) * 1024)
                head = b"HTTP/1.1 200 OK\r\nX-Big: " + value + b"\r\nContent-Length: 2\r\n\r\n"
                if path == "/interim-then-field":
                    head = b"HTTP/1.1 100 Continue\r\n\r\n" + head
                half = len(head) // 2
                conn.sock.sendall(head[:half])
                time.sleep(0.2)  # (the gateway reads the first half on its own)
                conn.sock.sendall(head[half:] + b"ok")
                continue
            if path == "/big-trailer":
                start = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n"
                conn.sock.sendall(start)
                time.sleep(0.2)
                value = b"t" * (int(query["kb"]) * 1024)
                conn.sock.sendall(b"0\r\nX-Trailer: " + value + b"\r\n\r\n")
                continue
            if path == "/many-interim":
                for _ in range(int(query["n"])):
                    conn.sock.sendall(b"HTTP/1.1 102 Processing\r\n\r\n")
                conn.sock.sendall(_ok(conn, b"final"))
                continue
            conn.sock.sendall(self._answer(conn, path, query))

    def _answer(self, conn: _Conn, path: str, query: dict[str, str]) -> bytes:
        if path == "/field":
            value = b"v" * (int(query["kb"]) * 1024)
            return b"HTTP/1.1 200 OK\r\nX-Big: " + value + b"\r\nContent-Length: 2\r\n\r\nok"
        if path == "/fields":
            count = int(query["n"])
            fields = b"".join(b"X-F%d: v\r\n" % i for i in range(count - 1))
            return b"HTTP/1.1 200 OK\r\n" + fields + b"Content-Length: 2\r\n\r\nok"
        if path == "/interim":
            return (
                b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
                + _ok(conn, b"final")
            )
        if path == "/switch":
            return (
                b"HTTP/1.1 101 Switching Protocols\r\n"
                b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\nraw"
            )
        if path == "/two-answers":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + POISON
        if path == "/connection-length":
            return (
                b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello"
            )
        if path == "/odd-spacing":
            return (
                b"HTTP/1.1 200 OK\r\nX-A:tight\r\nX-B:  wide  \r\nX-C:\t tab\r\n"
                b"X-Empty:\r\nContent-Length: 2\r\n\r\nok"
            )
        if path == "/connection-names":
            return (
                b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\n"
                b"X-Kept: k\r\nContent-Length: 2\r\n\r\nok"
            )
        if path == "/leaky-fields":
            lines = [
                b"HTTP/1.1 200 OK", b"sErVeR: leak", b"X-POWERED-BY: leak", b"X-Kept: yes",
                b"x-powered-by: leak", b"X-Debug-Token: leak", b"Date: leak",
                b"x-debug-" + b"Long" * 20 + b": leak", LONG_NAME.upper() + b": leak",
                b"Content-Length: 2",
            ]  # fmt: skip
            if query.get("odd"):
                lines.append(b"X-Powered-By:leak")
            return b"\r\n".join(lines) + b"\r\n\r\nok"
        if path == "/leading-crlf":
            return b"\r\n\n" + _ok(conn)
        if path == "/rtsp":
            return b"RTSP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
        if path == "/ice":
            return b"ICE/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
        if path == "/304-body":
            return b'HTTP/1.1 304 Not Modified\r\nETag: "e"\r\n\r\n' + POISON
        if path == "/trailer":
            return (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"2\r\nok\r\n0\r\nX-Trailer-Leak: yes\r\n\r\n"
            )
        return _ok(conn)

    def _stream_huge_field(self, owner: HostileBackend, start: bytes, mib: int) -> None:
        sock: socket.socket = self.request
        block = b"a" * 65536
        sent = 0
        try:
            sock.sendall(start)
            for _ in range(mib * MIB // len(block)):
                sock.sendall(block)
                sent += len(block)
            sock.sendall(b"\r\nContent-Length: 2\r\n\r\nok")
        except OSError:
            pass
        owner.sent.append(sent)
        owner.streamed.set()


class HostileBackend:
    """The server; `requests` lists (connection number, method, target) in arrival order."""

    def __init__(self) -> None:
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.owner = self
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self._requests: list[tuple[int, str, str]] = []
        self._connections = 0
        self.sent: list[int] = []  # bytes of each huge field that got through
        self.streamed = threading.Event()
        self.flooded = threading.Event()  # /interim-flood's heads are written
        self.release = threading.Event()  # /interim-flood may send its final answer
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def next_number(self) -> int:
        with self.lock:
            self._connections += 1
            return self._connections

    def record(self, number: int, method: str, target: str) -> None:
        with self.lock:
            self._requests.append((number, method, target))

    @property
    def requests(self) -> list[tuple[int, str, str]]:
        with self.lock:
            return list(self._requests)

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
