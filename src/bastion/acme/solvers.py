"""Challenge solvers: how each ACME challenge type is made answerable.

- ``http-01``: the key authorization is published to ``ChallengeTokens``
  (``bastion.state.challenges``), which the plain-HTTP listener of every worker answers from.
- ``tls-alpn-01`` (RFC 8737): a self-signed certificate for the name, carrying the critical
  acmeIdentifier extension, is written under ``<data dir>/acme/alpn/``; https listeners
  notice the directory change and serve it to connections offering ALPN ``acme-tls/1``
  (see ``bastion.tls.alpn``).
- ``dns-01``: the operator's hook command publishes ``_acme-challenge.<domain>`` TXT.

Blocking code: solvers run in the ACME thread.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import logging
import os
import subprocess
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

from bastion.acme.problems import AcmeProblem
from bastion.state.challenges import ChallengeCertificates, ChallengeTokens
from bastion.state.files import atomic_write, ensure_dir

__all__ = [
    "ACME_IDENTIFIER_OID",
    "ALPN_POLL",
    "Dns01Solver",
    "DnsHook",
    "Http01Solver",
    "TlsAlpn01Solver",
    "alpn_dir",
    "dns_txt_value",
]

log = logging.getLogger("bastion.acme")

ACME_IDENTIFIER_OID = ObjectIdentifier("1.3.6.1.5.5.7.1.31")  # id-pe-acmeIdentifier
ALPN_POLL = 0.25  # how often https listeners look for TLS-ALPN-01 challenges (seconds)
ALPN_SHARED_DELAY = 1.5  # more, for workers mirroring them from Redis (every 0.5 s)


def alpn_dir(data_dir: Path) -> Path:
    return data_dir / "acme" / "alpn"


def dns_txt_value(key_authorization: str) -> str:
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class Http01Solver:
    type = "http-01"

    def __init__(self, store: ChallengeTokens) -> None:
        self.store = store

    def present(self, domain: str, token: str, key_authorization: str) -> None:
        self.store.publish(token, key_authorization)

    def cleanup(self, domain: str, token: str, key_authorization: str) -> None:
        self.store.unpublish(token)


class TlsAlpn01Solver:
    type = "tls-alpn-01"

    def __init__(self, data_dir: Path, shared: ChallengeCertificates | None = None) -> None:
        self.dir = alpn_dir(data_dir)
        self.shared = shared  # other instances' listeners answer too (Redis)

    def present(self, domain: str, token: str, key_authorization: str) -> None:
        ensure_dir(self.dir)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain[:64])])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
            # RFC 8737 3: critical, value is the DER OCTET STRING of the SHA-256 digest
            .add_extension(
                x509.UnrecognizedExtension(ACME_IDENTIFIER_OID, b"\x04\x20" + digest),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        atomic_write(self.dir / f"{domain.lower()}.pem", pem, 0o600)
        if self.shared is not None:
            self.shared.publish_certificate(domain.lower(), pem)
        # every worker's listener polls the directory: give them time to switch (other
        # instances' workers first copy the certificate from the shared store)
        time.sleep(ALPN_POLL * 3 + (ALPN_SHARED_DELAY if self.shared is not None else 0.0))

    def cleanup(self, domain: str, token: str, key_authorization: str) -> None:
        with contextlib.suppress(OSError):
            (self.dir / f"{domain.lower()}.pem").unlink()
        if self.shared is not None:
            self.shared.unpublish_certificate(domain.lower())


class DnsHook:
    """The operator's command for DNS-01 (see docs/https.md, "DNS-01 hook")."""

    def __init__(self, command: list[str], timeout: float, propagation: float) -> None:
        self.command = command
        self.timeout = timeout
        self.propagation = propagation

    def run(self, action: str, record: str, value: str) -> None:
        env = dict(
            os.environ,
            ACME_ACTION=action,
            ACME_RECORD=record,
            ACME_TXT_VALUE=value,
            ACME_DOMAIN=record.removeprefix("_acme-challenge."),
        )
        argv = [*self.command, action, record, value]
        try:
            done = subprocess.run(
                argv,
                env=env,
                capture_output=True,
                timeout=self.timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise AcmeProblem(
                "urn:ietf:params:acme:error:dnsHook",
                f"the DNS-01 hook {self.command[0]} {action} {record} did not finish within "
                f"{self.timeout:.0f}s",
            ) from None
        except OSError as exc:
            raise AcmeProblem(
                "urn:ietf:params:acme:error:dnsHook",
                f"cannot run the DNS-01 hook {self.command[0]}: {exc.strerror or exc}",
            ) from None
        if done.returncode != 0:
            output = (done.stderr or done.stdout).decode(errors="replace").strip()[-500:]
            raise AcmeProblem(
                "urn:ietf:params:acme:error:dnsHook",
                f"the DNS-01 hook {self.command[0]} {action} {record} exited with status "
                f"{done.returncode}: {output or '(no output)'}",
            )


class Dns01Solver:
    type = "dns-01"

    def __init__(self, hook: DnsHook) -> None:
        self.hook = hook

    def present(self, domain: str, token: str, key_authorization: str) -> None:
        record = f"_acme-challenge.{domain.removeprefix('*.')}"
        self.hook.run("present", record, dns_txt_value(key_authorization))
        if self.hook.propagation > 0:
            log.info("acme: waiting %.0fs for %s to propagate", self.hook.propagation, record)
            time.sleep(self.hook.propagation)

    def cleanup(self, domain: str, token: str, key_authorization: str) -> None:
        record = f"_acme-challenge.{domain.removeprefix('*.')}"
        self.hook.run("cleanup", record, dns_txt_value(key_authorization))
