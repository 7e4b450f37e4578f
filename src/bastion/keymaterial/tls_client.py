"""Client-side TLS contexts for https:// upstreams, S3 endpoints and auth services.

One context per upstream pool, built when the plan is compiled, never per request (and
once when the config is loaded, to check its files). The policy matches the listener side:
TLS 1.2 or newer, ALPN ``http/1.1`` (the upstream protocol is HTTP/1.1), certificate and
host name verification on unless switched off.
"""

from __future__ import annotations

import ssl

__all__ = ["client_context"]


def client_context(
    verify: bool = True,
    ca: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
) -> ssl.SSLContext:
    """A client context; raises ``ssl.SSLError`` / ``OSError`` when a file does not load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    if verify:
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        if ca is not None:
            context.load_verify_locations(cafile=ca)
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if client_cert is not None:
        context.load_cert_chain(client_cert, client_key)
    return context
