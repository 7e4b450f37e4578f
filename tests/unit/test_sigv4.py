"""Our SigV4 signatures match botocore's (the reference implementation) byte for byte."""

from __future__ import annotations

import calendar
import time

import pytest
from botocore.auth import S3SigV4Auth  # from moto[server] in the dev extra
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from bastion.handlers.sigv4 import EMPTY_SHA256, Signer, encode_key_path

ACCESS = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
NOW = calendar.timegm((2013, 5, 24, 0, 0, 0, 0, 0, 0))


def reference(method: str, host: str, path: str, token: str | None) -> str:
    request = AWSRequest(method=method, url=f"https://{host}{path}")
    request.headers["Host"] = host
    request.headers["x-amz-content-sha256"] = EMPTY_SHA256
    request.context["timestamp"] = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(NOW))
    auth = S3SigV4Auth(Credentials(ACCESS, SECRET, token), "s3", "us-east-1")
    request.headers["X-Amz-Date"] = request.context["timestamp"]
    if token:
        request.headers["X-Amz-Security-Token"] = token
    canonical = auth.canonical_request(request)
    to_sign = auth.string_to_sign(request, canonical)
    return auth.signature(to_sign, request)


@pytest.mark.parametrize(
    "key",
    [
        "test.txt",
        "with space.txt",
        "a+b=c&d.txt",
        "ünïcødé/ファイル.txt",
        "tilde~(x)!*'.txt",
        "a/b/",
    ],
)
@pytest.mark.parametrize("token", [None, "FQoGZXIvYXdzEXAMPLETOKEN=="])
def test_signature_matches_botocore(key: str, token: str | None) -> None:
    host = "examplebucket.s3.amazonaws.com"
    path = encode_key_path("/" + key)
    lines = Signer(ACCESS, SECRET, token, "us-east-1", host).header_lines("GET", path, NOW)

    signature = lines.decode().split("Signature=")[1].strip()
    assert signature == reference("GET", host, path, token)


def test_key_encoding_follows_the_sigv4_rules() -> None:
    assert encode_key_path("/a b+c/ü~x_y-z.txt") == "/a%20b%2Bc/%C3%BC~x_y-z.txt"
    assert encode_key_path("/it's(1)*!") == "/it%27s%281%29%2A%21"


def test_header_lines_carry_the_scope_and_signed_headers() -> None:
    lines = Signer(ACCESS, SECRET, "tok", "eu-west-1", "h:9000").header_lines("HEAD", "/k", NOW)
    text = lines.decode()
    assert "Host: h:9000\r\n" in text
    assert "x-amz-date: 20130524T000000Z\r\n" in text
    assert "x-amz-security-token: tok\r\n" in text
    assert f"Credential={ACCESS}/20130524/eu-west-1/s3/aws4_request" in text
    assert "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token" in text
