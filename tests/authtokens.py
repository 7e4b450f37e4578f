"""Test support for the auth policies: JWT signing with real keys (independent of the
gateway's verifier), JWKS documents, and a small threaded HTTP server whose answers a test
scripts (a JWKS endpoint, a forward-auth service)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

HS_SECRET = "s3cret-that-is-long-enough-for-hs256-tokens!"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int(n: int) -> str:
    return b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class Keys:
    """One private key per asymmetric algorithm family, made once per test session."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.p256 = ec.generate_private_key(ec.SECP256R1())
        self.p384 = ec.generate_private_key(ec.SECP384R1())
        self.ed = ed25519.Ed25519PrivateKey.generate()

    def for_alg(self, alg: str) -> Any:
        if alg[:2] in ("RS", "PS"):
            return self.rsa
        return {"ES256": self.p256, "ES384": self.p384, "EdDSA": self.ed}[alg]

    def jwks(self, kid_prefix: str = "") -> dict[str, Any]:
        keys = []
        nums = self.rsa.public_key().public_numbers()
        keys.append({"kty": "RSA", "kid": kid_prefix + "rsa", "n": _int(nums.n), "e": _int(nums.e)})
        for kid, key, crv, size in (
            ("p256", self.p256, "P-256", 32),
            ("p384", self.p384, "P-384", 48),
        ):
            pn = key.public_key().public_numbers()
            keys.append(
                {
                    "kty": "EC",
                    "kid": kid_prefix + kid,
                    "crv": crv,
                    "x": b64(pn.x.to_bytes(size, "big")),
                    "y": b64(pn.y.to_bytes(size, "big")),
                }
            )
        raw = self.ed.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        keys.append({"kty": "OKP", "kid": kid_prefix + "ed", "crv": "Ed25519", "x": b64(raw)})
        return {"keys": keys}

    def rsa_public_pem(self) -> bytes:
        return self.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


KID = {
    "RS256": "rsa",
    "PS256": "rsa",
    "ES256": "p256",
    "ES384": "p384",
    "EdDSA": "ed",
}


def sign(
    claims: dict[str, Any],
    alg: str = "HS256",
    key: Any = HS_SECRET,
    kid: str | None = None,
    header: dict[str, Any] | None = None,
) -> str:
    head: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        head["kid"] = kid
    head.update(header or {})
    signed = (b64(json.dumps(head).encode()) + "." + b64(json.dumps(claims).encode())).encode()
    if alg == "none":
        return signed.decode() + "."
    if alg.startswith("HS"):
        digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
        secret = key.encode() if isinstance(key, str) else key
        sig = hmac.new(secret, signed, digest).digest()
    elif alg.startswith("RS"):
        sig = key.sign(signed, padding.PKCS1v15(), hashes.SHA256())
    elif alg.startswith("PS"):
        sig = key.sign(
            signed, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256()
        )
    elif alg.startswith("ES"):
        h, size = (hashes.SHA256(), 32) if alg == "ES256" else (hashes.SHA384(), 48)
        r, s = decode_dss_signature(key.sign(signed, ec.ECDSA(h)))
        sig = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    else:
        sig = key.sign(signed)
    return signed.decode() + "." + b64(sig)


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": "alice", "iat": now, "exp": now + 300}
    base.update(extra)
    return base


# ------------------------------------------------------------ scripted HTTP server
Reply = tuple[int, dict[str, str], bytes]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (a timeout under test) is expected


class ScriptedServer:
    """A threaded HTTP/1.1 server answering every GET with ``handler(path, headers)``;
    the requests it saw are kept in ``seen``."""

    def __init__(
        self,
        handler: Callable[[str, dict[str, str]], Reply],
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.handler = handler
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.connections: list[Any] = []
        outer = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                outer.connections.append(self.connection)

            def do_GET(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                outer.seen.append((self.path, headers))
                status, extra, body = outer.handler(self.path, headers)
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = _QuietServer(("127.0.0.1", port), _H)
        self.server.daemon_threads = True
        if tls is not None:  # served over TLS with this server context
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop listening and cut the kept-alive connections: the service is down."""
        self.server.shutdown()
        self.server.server_close()
        for conn in self.connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def json_reply(doc: Any) -> Reply:
    return 200, {"Content-Type": "application/json"}, json.dumps(doc).encode()


# ------------------------------------------------------------ bastion check
def check_refuses(config_path: Path) -> subprocess.CompletedProcess[str]:
    """`bastion check` of a config that must be refused: its output."""
    done = subprocess.run(
        [sys.executable, "-m", "bastion", "check", "-c", str(config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0, done.stdout
    return done


# ------------------------------------------------------------ bastion keys
def keys_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion", "keys", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "BASTION_DATA_DIR"},
    )


def create_key(data_dir: Path, consumer: str) -> str:
    done = keys_cli(data_dir, "create", "--consumer", consumer)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key.startswith("bk_")
    return key


class JwksServer:
    """A JWKS endpoint (`url`) whose document a test can change, count and take down."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.status = 200
        self.server = ScriptedServer(self._answer)
        self.url = self.server.url + "/jwks"

    def _answer(self, path: str, headers: dict[str, str]) -> Reply:
        if self.status != 200:
            return self.status, {}, b"down"
        return json_reply(self.doc)

    @property
    def fetches(self) -> int:
        return len(self.server.seen)

    def stop(self) -> None:
        self.server.stop()
