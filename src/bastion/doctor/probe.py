"""A listener that lives only while the doctor probes: it answers the HTTP-01 path of one
random token (or, on the TLS port, sends the token as soon as a connection opens), and the
client side that connects to a name's address and reads what comes back."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bastion.config import Address

__all__ = ["Reply", "connect", "http_get_raw", "probe_listener", "read_greeting"]

CHALLENGE_PATH = "/.well-known/acme-challenge/"


def _bind(address: Address) -> socket.socket:
    """A socket bound to ``address`` (not listening yet)."""
    host = address.host
    if host == "localhost":
        host = "127.0.0.1"
    if host is None:
        try:  # every interface, both families
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            host = "::"
        except OSError:
            sock, host = socket.socket(socket.AF_INET, socket.SOCK_STREAM), "0.0.0.0"
    else:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # as bastion itself does: a probe's closed connections must not hold the port
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, address.port))
    except OSError:
        sock.close()
        raise
    return sock


def http_answer(token: str) -> Callable[[socket.socket], None]:
    """Answer ``GET /.well-known/acme-challenge/<token>`` with the token, anything else 404."""

    def serve(conn: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 8192:
            chunk = conn.recv(4096)
            if not chunk:
                break
            head += chunk
        parts = head.split(b"\r\n", 1)[0].split()
        wanted = (CHALLENGE_PATH + token).encode()
        ok = len(parts) >= 2 and parts[1] == wanted
        body = token.encode() if ok else b"not found\n"
        status = b"200 OK" if ok else b"404 Not Found"
        conn.sendall(
            b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
        )  # fmt: skip

    return serve


def greeting(token: str) -> Callable[[socket.socket], None]:
    """Send the token at once (the TLS port: proves the TCP path, not TLS)."""
    return lambda conn: conn.sendall(token.encode())


@contextlib.contextmanager
def probe_listener(
    address: Address,
    serve: Callable[[socket.socket], None],
    timeout: float,
    bound: Callable[[int], None] = lambda inode: None,
) -> Iterator[None]:
    """Listen on ``address`` while the block runs (``bound`` is told the socket's inode, so
    that the other checks know this listener is the doctor's); raises OSError when it
    cannot bind."""
    sock = _bind(address)
    # known as the doctor's before it shows in /proc/net/tcp as listening
    bound(os.fstat(sock.fileno()).st_ino)
    try:
        sock.listen(16)
    except OSError:
        sock.close()
        raise
    sock.settimeout(0.1)
    stop = threading.Event()

    def handle(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(timeout)
            with contextlib.suppress(OSError):
                serve(conn)

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept_loop, name="doctor-probe", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        sock.close()


@dataclass(frozen=True)
class Reply:
    status: int  # 0 when the answer is not HTTP
    headers: dict[str, str]
    body: bytes


def connect(ip: str, port: int, timeout: float) -> socket.socket:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((ip, port))
    except OSError:
        sock.close()
        raise
    return sock


def _read_all(sock: socket.socket, limit: int = 65536) -> bytes:
    data = b""
    with contextlib.suppress(TimeoutError):
        while len(data) < limit:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data


def http_get_raw(ip: str, port: int, host: str, path: str, timeout: float) -> Reply:
    """GET ``path`` from ``ip:port`` with ``Host: host``, as the CA would; OSError when the
    connection fails."""
    with connect(ip, port, timeout) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: bastion-doctor\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        data = _read_all(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    first = lines[0].split()
    if len(first) < 2 or not first[0].startswith("HTTP/") or not first[1].isdigit():
        return Reply(0, {}, data)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Reply(int(first[1]), headers, body)


def read_greeting(ip: str, port: int, timeout: float, size: int) -> bytes:
    """What ``ip:port`` sends first, up to ``size`` bytes (b"" when it sends nothing)."""
    with connect(ip, port, timeout) as sock:
        data = b""
        with contextlib.suppress(TimeoutError):
            while len(data) < size:
                chunk = sock.recv(size - len(data))
                if not chunk:
                    break
                data += chunk
        return data
