"""What went wrong in a TLS handshake with an upstream, worded for the log.

The client contexts themselves are built by `bastion.keymaterial.tls_client`.
"""

from __future__ import annotations

import ssl

__all__ = ["describe_tls_error"]

# OpenSSL X509_V_ERR_* codes that a configuration key can fix, and the key to point at.
_CA_CODES = frozenset((2, 18, 19, 20, 21))  # unknown issuer, self-signed, incomplete chain
_EXPIRED_CODES = frozenset((9, 10))  # not yet valid, expired
_NAME_MISMATCH = frozenset((62, 64))  # host name, IP address


def describe_tls_error(
    exc: ssl.SSLError, setting: str = "proxy.tls", peer: str = "upstream"
) -> str:
    """What failed in a handshake with an upstream (or an auth service: ``setting`` is the
    config key of its TLS options, ``peer`` what to call it), and which key fixes it, for
    the log.

    Never shown to clients: it names certificates and settings of the backend side.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or exc.reason or "rejected"
        code = exc.verify_code
        message = f"TLS certificate verify failed: {reason}"
        if code in _CA_CODES:
            return message + f" — set {setting}.ca to the CA that issued the {peer}'s certificate"
        if code in _NAME_MISMATCH:
            if setting == "proxy.tls":
                return (
                    message + " — set proxy.tls.server_name to a name in the upstream's certificate"
                )
            return message + f" — the {peer}'s certificate does not name the URL's host"
        if code in _EXPIRED_CODES:
            return message + f" — the {peer}'s certificate is outside its validity period"
        return message
    reason = exc.reason or str(exc)
    message = f"TLS handshake failed: {reason}"
    lowered = reason.lower()
    if setting == "proxy.tls" and (
        "certificate_required" in lowered or "handshake_failure" in lowered
    ):
        return message + " — the upstream may require a client certificate (proxy.tls.client_cert)"
    if "wrong_version_number" in lowered or "record_layer_failure" in lowered:
        return message + f" — the {peer} may not speak TLS on this port (use http://)"
    return message
