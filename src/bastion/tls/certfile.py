"""What a certificate file says, read with the `ssl` module instead of cryptography.

A worker with local-CA certificates checks at start, and then every few hours, whether
each leaf is still fresh. With cryptography that check alone would bring its bindings
(about 7 MiB) into every such worker, for certificates that are re-issued once in a few
days. The facts the check needs (validity, issuer, whether the key is the certificate's)
are read here with OpenSSL through `ssl`; cryptography is imported only to issue.

`ssl` has no public function that decodes a certificate file: `_ssl._test_decode_cert`
(the one `ssl`'s own tests use, in CPython since 3.2) does it. Where it is missing,
`leaf_is_fresh` says so (None) and the caller checks with cryptography as before.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

__all__ = ["leaf_is_fresh"]


def _decoder() -> Any:
    import _ssl

    return getattr(_ssl, "_test_decode_cert", None)


def leaf_is_fresh(cert: Path, key: Path, root_cert: Path, now: float) -> bool | None:
    """Whether the leaf in `cert` (its first certificate) and `key` can still be served
    at `now` (epoch seconds): the key is the certificate's, `root_cert` issued it, and
    less than two thirds of its lifetime have passed. False when either file is missing
    or unreadable (it is then issued again); None when this cannot be checked here."""
    decode = _decoder()
    if decode is None or not root_cert.exists():
        return None  # the caller's check also creates a missing root
    try:
        leaf = decode(str(cert))
        root = decode(str(root_cert))
        # OpenSSL refuses a key that is not the certificate's (KEY_VALUES_MISMATCH): a
        # crash between writing the key and the certificate
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(cert), str(key))
        start = ssl.cert_time_to_seconds(leaf["notBefore"])
        end = ssl.cert_time_to_seconds(leaf["notAfter"])
    except (OSError, ValueError, KeyError):  # ssl.SSLError is an OSError
        return False
    if leaf.get("issuer") != root.get("subject"):
        return False  # issued by a root that has since been replaced
    # re-issued within the last third of the lifetime
    return now < end - (end - start) / 3
