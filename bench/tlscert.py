"""The HTTPS scenarios' certificate, and a probe of what each target negotiates.

One ECDSA P-256 leaf for ``localhost`` and 127.0.0.1 is made per run and served by every
target, so the handshake work (one P-256 signature, one X25519 exchange) is the same for all.
Session resumption is off for every target (see ``docs/benchmarks.md``): wrk keeps the TLS
session of a connection and offers it again when it reconnects, so with tickets on the
"new handshake" scenario would measure resumed handshakes for some servers and full ones for
others.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import subprocess
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# OpenSSL's per-process configuration for bastion: Python's ssl module has no switch for the
# number of TLS 1.3 tickets (bastion keeps tickets on) nor for the TLS 1.3 cipher suites.
# NumTickets = 0 makes its server send no tickets, as nginx (ssl_session_tickets off) and
# HAProxy (no-tls-tickets) are told to; the suite is the one Caddy (Go) picks on its own,
# which the OpenSSL servers are told to use too.
TLS13_SUITE = "TLS_AES_128_GCM_SHA256"
OPENSSL_NO_TICKETS = f"""\
openssl_conf = bench_conf
[bench_conf]
ssl_conf = bench_ssl
[bench_ssl]
system_default = bench_system_default
[bench_system_default]
NumTickets = 0
Ciphersuites = {TLS13_SUITE}
"""


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    combined: Path  # certificate then key, for HAProxy's "crt"
    openssl_conf: Path


def make(directory: Path) -> TlsFiles:
    """Write a self-signed ECDSA P-256 certificate for localhost and 127.0.0.1."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    files = TlsFiles(directory / "cert.pem", directory / "key.pem",
                     directory / "combined.pem", directory / "openssl.cnf")
    files.cert.write_bytes(cert_pem)
    files.key.write_bytes(key_pem)
    files.key.chmod(0o600)
    files.combined.write_bytes(cert_pem + key_pem)
    files.combined.chmod(0o600)
    files.openssl_conf.write_text(OPENSSL_NO_TICKETS)
    return files


@dataclass
class Fetch:
    ok: bool  # a 2xx answer
    session: ssl.SSLSession | None = None
    reused: bool = False  # the offered session was resumed


def client_context() -> ssl.SSLContext:
    """No certificate check: the leaf is self-signed."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def https_get(port: int, path: str = "/", timeout: float = 2.0,
              session: ssl.SSLSession | None = None,
              ctx: ssl.SSLContext | None = None) -> Fetch:
    """One HTTPS GET; ``session`` (made with the same ``ctx``) is offered for resumption."""
    ctx = ctx or client_context()
    request = (f"GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\n"
               "User-Agent: bastion-bench\r\nConnection: close\r\n\r\n").encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost", session=session) as sock:
            sock.sendall(request)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            # read after the answer: TLS 1.3 tickets arrive after the handshake
            got, reused = sock.session, bool(sock.session_reused)
    except OSError:
        return Fetch(False)
    parts = data.split(b" ", 2)
    ok = len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1][:1] == b"2"
    return Fetch(ok, got, reused)


def https_get_ok(port: int, path: str = "/") -> bool:
    return https_get(port, path).ok


def probe(port: int) -> str:
    """What a default OpenSSL client (as wrk and h2load are) negotiates with the target, and
    whether a second connection resumes the first one's session."""
    parts: list[str] = []
    try:
        out = subprocess.run(
            ["openssl", "s_client", "-brief", "-connect", f"127.0.0.1:{port}",
             "-servername", "localhost", "-alpn", "h2,http/1.1"],
            input="", capture_output=True, text=True, errors="replace", timeout=10,
            check=False)
        for line in (out.stdout + out.stderr).splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Protocol version", "Ciphersuite", "Server Temp Key",
                               "Peer Temp Key", "ALPN protocol"):
                parts.append(value.strip())
    except (OSError, subprocess.TimeoutExpired) as exc:
        parts.append(f"openssl s_client failed: {exc}")
    ctx = client_context()
    first = https_get(port, ctx=ctx)
    if first.ok and first.session is not None:
        second = https_get(port, session=first.session, ctx=ctx)
        parts.append("session RESUMED" if second.reused else "no resumption")
    else:
        parts.append("resumption not checked")
    return ", ".join(parts)
