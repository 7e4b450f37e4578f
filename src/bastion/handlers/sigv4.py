"""AWS Signature Version 4 for the S3 origin's GET and HEAD requests.

Written here rather than taken from botocore: signing runs once per request on the hot
path and needs a few HMACs, while botocore is a large dependency with a slow import and a
per-request object model. Only what bodiless GET/HEAD requests need: no query string, the
empty-body payload hash, the signing key cached for the day.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import quote

__all__ = ["EMPTY_SHA256", "Signer", "encode_key_path"]

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_ALGORITHM = "AWS4-HMAC-SHA256"


def encode_key_path(path: str) -> str:
    """The URI path of an object, as S3 signs it: every byte but the unreserved characters
    (``A-Z a-z 0-9 - . _ ~``) percent-encoded in UTF-8, ``/`` kept; encoded once (S3, unlike
    other services, does not double-encode)."""
    return quote(path, safe="/~")


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


class Signer:
    """Signs requests for one set of credentials, region and host."""

    __slots__ = ("_access", "_day", "_key", "_region", "_secret", "_signed", "_token_line", "host")

    def __init__(
        self, access_key: str, secret_key: str, token: str | None, region: str, host: str
    ) -> None:
        self._access = access_key
        self._secret = secret_key
        self._region = region
        self.host = host
        self._day = ""
        self._key = b""
        # temporary credentials: the token is sent and, like every x-amz-* header, signed
        self._token_line = f"x-amz-security-token:{token}\n" if token else ""
        self._signed = "host;x-amz-content-sha256;x-amz-date" + (
            ";x-amz-security-token" if token else ""
        )

    def _signing_key(self, day: str) -> bytes:
        if day != self._day:
            key = _hmac(("AWS4" + self._secret).encode(), day)
            key = _hmac(key, self._region)
            key = _hmac(key, "s3")
            self._key = _hmac(key, "aws4_request")
            self._day = day
        return self._key

    def header_lines(self, method: str, path: str, now: float | None = None) -> bytes:
        """``x-amz-*`` and ``Authorization`` header lines for ``method`` on the encoded
        ``path`` (no query), including Host."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
        day = stamp[:8]
        scope = f"{day}/{self._region}/s3/aws4_request"
        canonical = (
            f"{method}\n{path}\n\nhost:{self.host}\nx-amz-content-sha256:{EMPTY_SHA256}\n"
            f"x-amz-date:{stamp}\n{self._token_line}\n{self._signed}\n{EMPTY_SHA256}"
        )
        to_sign = (
            f"{_ALGORITHM}\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        )
        signature = hmac.new(self._signing_key(day), to_sign.encode(), hashlib.sha256).hexdigest()
        lines = (
            f"Host: {self.host}\r\nx-amz-date: {stamp}\r\nx-amz-content-sha256: {EMPTY_SHA256}\r\n"
        )
        if self._token_line:
            lines += self._token_line.replace(":", ": ", 1).replace("\n", "\r\n")
        lines += (
            f"Authorization: {_ALGORITHM} Credential={self._access}/{scope}, "
            f"SignedHeaders={self._signed}, Signature={signature}\r\n"
        )
        return lines.encode("utf-8")
