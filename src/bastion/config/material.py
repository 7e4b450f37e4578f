"""Whether the key material a config names loads: certificate and key pairs, CA bundles,
public key files.

Checked at load time so that a file that does not load is a config error with its line,
not a failed start or a 500 at the first request. Each function only reads files (no
socket is opened) and returns what is wrong, or None; the caller words the message.

This is the one module of the package that touches ``ssl`` and the key loaders the runtime
builds from (``bastion.keymaterial``, the layer beside config/: files in, key objects out,
no socket).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence

__all__ = [
    "ca_bundle_problem",
    "client_context_problem",
    "public_key_problem",
    "server_pair_problem",
]


def _reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)


def server_pair_problem(cert: str, key: str) -> str | None:
    """Why a listener's certificate chain and key do not load together, or None."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        return _reason(exc)
    return None


def ca_bundle_problem(path: str) -> str | None:
    """Why a PEM bundle of trusted CA certificates does not load, or None."""
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, OSError) as exc:
        return _reason(exc)
    return None


def client_context_problem(
    verify: bool, ca: str | None, client_cert: str | None = None, client_key: str | None = None
) -> str | None:
    """Why the client TLS context of an upstream (or an auth service) cannot be built from
    these files, or None. A ``ValueError`` of the loader passes through."""
    from bastion.keymaterial.tls_client import client_context

    try:
        client_context(verify, ca, client_cert, client_key)
    except (ssl.SSLError, OSError) as exc:
        return _reason(exc)
    return None


def public_key_problem(path: str, algorithms: Sequence[str]) -> str | None:
    """Why a JWT key file (PEM public key, certificate or JWKS document) holds no key that
    fits one of ``algorithms``, or None."""
    from bastion.keymaterial.jwk import load_key_file

    try:
        load_key_file(path, algorithms)
    except ValueError as exc:
        return str(exc)
    return None
