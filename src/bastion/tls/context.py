"""SSLContext construction: the TLS policy in one place.

- TLS 1.2 and 1.3 only; TLS 1.2 uses the Mozilla "intermediate" cipher list (forward-secret
  ECDHE key exchange with AES-GCM or ChaCha20-Poly1305; TLS 1.3 suites are OpenSSL's
  defaults, which are exactly those of the same profile).
- Key exchange groups: X25519, P-256 and P-384, the same profile's list (OpenSSL would
  also offer P-521, X448 and finite-field groups); see `bastion.tls.groups`.
- ALPN offers ``h2`` then ``http/1.1``; with ``http2.enabled: false`` the worker narrows a
  certificate context to ``http/1.1`` when a handshake picks it (`HTTP1_ONLY`).
- Session tickets stay on (OpenSSL's default), so returning clients resume without a full
  handshake.

A listener has one *dispatch* context without a certificate. Its ``sni_callback`` asks a
lookup function for the certificate context of the requested name and switches the
connection to it; an unknown name ends the handshake with ``unrecognized_name``. The lookup
function reads the worker's current plan, so a reload changes the certificates of new
handshakes without touching the listening socket.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

from bastion.tls.groups import set_groups

__all__ = [
    "ALPN",
    "HTTP1_ONLY",
    "INTERMEDIATE_CIPHERS",
    "apply_profile",
    "certificate_context",
    "dispatch_context",
]

# Mozilla server side TLS, "intermediate" configuration, TLS 1.2 part (version 5.7).
INTERMEDIATE_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
# Server preference order: a client offering both gets h2. WebSocket clients offer
# http/1.1 only and keep their Upgrade on the same listener.
ALPN = ["h2", "http/1.1"]
HTTP1_ONLY = ["http/1.1"]

Lookup = Callable[[str | None], ssl.SSLContext | None]


def _policy(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(INTERMEDIATE_CIPHERS)
    # on every context: a handshake keeps the groups of the listener's context it began
    # on, and a certificate context may serve one directly
    set_groups(context)
    context.set_alpn_protocols(ALPN)
    # no renegotiation, server picks the cipher order, fresh ECDHE key per handshake
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= ssl.OP_SINGLE_ECDH_USE
    context.options &= ~ssl.OP_NO_TICKET
    return context


def apply_profile(context: ssl.SSLContext, profile: str) -> ssl.SSLContext:
    """'modern' is TLS 1.3 only; 'intermediate' (the default) also allows TLS 1.2."""
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if profile == "modern" else ssl.TLSVersion.TLSv1_2
    )
    return context


def certificate_context(
    cert_file: str, key_file: str, profile: str = "intermediate"
) -> ssl.SSLContext:
    """A server context holding one certificate chain and its key.

    Raises ``ssl.SSLError`` / ``OSError`` when the files do not load or do not match.
    """
    context = apply_profile(_policy(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)), profile)
    context.load_cert_chain(cert_file, key_file)
    return context


def dispatch_context(lookup: Lookup) -> ssl.SSLContext:
    """The listener's context: picks the certificate context per handshake by SNI."""
    context = _policy(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))

    def on_sni(
        sock: ssl.SSLObject, server_name: str | None, _context: ssl.SSLContext
    ) -> int | None:
        chosen = lookup(server_name)
        if chosen is None:
            # never a wrong certificate: the client gets a clean alert instead
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sock.context = chosen
        return None

    context.sni_callback = on_sni
    return context
