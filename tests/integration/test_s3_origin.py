"""The s3: route action against a real S3-compatible server (moto in server mode) that
enforces SigV4 signatures and IAM policies, so a wrongly signed request really fails."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from conftest import Gateway, free_port, wait_for_port

BUCKET = "site-bucket"
REGION = "eu-west-1"
OBJECTS: dict[str, tuple[bytes, str]] = {
    "hello.txt": (b"hello from the bucket\n", "text/plain"),
    "with space.txt": (b"a key with a space", "text/plain"),
    "a+b=c.txt": (b"a key with plus and equals", "text/plain"),
    "ünïcødé/ファイル.txt": (b"unicode key", "text/plain; charset=utf-8"),
    "tilde~and(parens)!.txt": (b"tilde and friends", "text/plain"),
    "docs/index.html": (b"<h1>docs index</h1>", "text/html"),
    "index.html": (b"<h1>home</h1>", "text/html"),
    "404.html": (b"<h1>not here</h1>", "text/html"),
    "big.bin": (bytes(range(256)) * 4096, "application/octet-stream"),
    "site/app.js": (b"console.log('prefixed')", "application/javascript"),
}


class Moto:
    def __init__(self, url: str, admin: dict[str, str], reader: dict[str, str]) -> None:
        self.url = url
        self.admin = admin
        self.reader = reader


def _client(service: str, url: str, creds: dict[str, str] | None = None) -> Any:
    import boto3

    creds = creds or {"aws_access_key_id": "bootstrap", "aws_secret_access_key": "bootstrap"}
    return boto3.client(service, endpoint_url=url, region_name=REGION, **creds)


def _keys(iam: Any, user: str, policy: dict[str, Any]) -> dict[str, str]:
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return {
        "aws_access_key_id": key["AccessKeyId"],
        "aws_secret_access_key": key["SecretAccessKey"],
    }


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("boto3") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("moto[server] is required for the S3 origin tests (pip install -e .[dev])")
        pytest.skip("moto[server] is not installed")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    # The first three actions (create the admin user, its policy, its key) need no
    # signature; every request after them is checked: signature and IAM policy.
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3", MOTO_PORT=str(port))
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        wait_for_port(port, timeout=60)
        url = f"http://127.0.0.1:{port}"
        admin = _keys(
            _client("iam", url),
            "admin",
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
            },
        )
        # what the docs recommend for bastion: read objects, nothing else. Real S3 authorises
        # HeadObject by s3:GetObject; moto (5.2) asks for an "s3:HeadObject" action that IAM
        # does not have, so the test server's policy names both: the test checks bastion's
        # HEAD, not moto's action table.
        reader = _keys(
            _client("iam", url, admin),
            "bastion",
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": ["s3:GetObject", "s3:HeadObject"],
                        "Resource": f"arn:aws:s3:::{BUCKET}/*",
                    }
                ],
            },
        )
        s3 = _client("s3", url, admin)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        for key, (body, ctype) in OBJECTS.items():
            s3.put_object(
                Bucket=BUCKET, Key=key, Body=body, ContentType=ctype, CacheControl="max-age=60"
            )
        yield Moto(url, admin, reader)
    finally:
        proc.terminate()
        proc.wait(10)


def s3_config(moto: Moto, creds: dict[str, str] | None = None, **s3: Any) -> dict[str, Any]:
    creds = creds or moto.reader
    base = {
        "bucket": BUCKET,
        "region": REGION,
        "endpoint": moto.url,
        "access_key_id": creds["aws_access_key_id"],
        "secret_access_key": creds["aws_secret_access_key"],
    }
    path = s3.pop("path", "/")
    strip = s3.pop("strip_prefix", False)
    route: dict[str, Any] = {"path": path, "strip_prefix": strip, "s3": {**base, **s3}}
    return {
        "listen": {"http": f"127.0.0.1:{free_port()}"},
        "access_log": {"format": "off"},
        "sites": [{"routes": [route]}],
    }


@pytest.fixture(scope="module")
def s3_gateway(moto: Moto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    import yaml

    config = s3_config(moto)
    workdir = tmp_path_factory.mktemp("s3gw")
    gw = Gateway(workdir / "bastion.yaml", int(config["listen"]["http"].rsplit(":", 1)[1]), workdir)
    (workdir / "bastion.yaml").write_text(yaml.safe_dump(config))
    gw.start()
    yield gw
    gw.stop()


def url_of(gw: Gateway, key: str) -> str:
    return gw.url + "/" + quote(key, safe="/")


@pytest.mark.parametrize("key", [k for k in OBJECTS if k != "big.bin"])
def test_objects_are_served_with_their_keys_signed_right(s3_gateway: Gateway, key: str) -> None:
    r = httpx.get(url_of(s3_gateway, key), timeout=10)

    assert r.status_code == 200, r.text
    body, ctype = OBJECTS[key]
    assert r.content == body
    assert r.headers["content-type"] == ctype
    assert r.headers["cache-control"] == "max-age=60"
    assert r.headers["etag"].startswith('"')
    assert "last-modified" in r.headers
    assert not [h for h in r.headers if h.lower().startswith("x-amz")]
    assert "server" not in {h.lower() for h in r.headers} or "amazon" not in r.headers["server"]


def test_private_objects_are_not_readable_directly(moto: Moto, s3_gateway: Gateway) -> None:
    direct = httpx.get(f"{moto.url}/{BUCKET}/hello.txt", timeout=10)
    assert direct.status_code == 403

    through = httpx.get(s3_gateway.url + "/hello.txt", timeout=10)
    assert through.status_code == 200
    assert through.content == OBJECTS["hello.txt"][0]


def test_index_document_for_paths_ending_in_slash(s3_gateway: Gateway) -> None:
    assert httpx.get(s3_gateway.url + "/docs/", timeout=10).content == b"<h1>docs index</h1>"
    assert httpx.get(s3_gateway.url + "/", timeout=10).content == b"<h1>home</h1>"


def test_missing_key_is_a_404_problem(s3_gateway: Gateway) -> None:
    r = httpx.get(s3_gateway.url + "/no/such/key.txt", timeout=10)

    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 404
    assert "x-amz" not in r.text.lower() and "127.0.0.1" not in r.text
    head = httpx.head(s3_gateway.url + "/no/such/key.txt", timeout=10)
    assert head.status_code == 404


def test_range_and_conditional_requests_pass_through(s3_gateway: Gateway) -> None:
    with httpx.Client(timeout=10) as client:
        part = client.get(s3_gateway.url + "/big.bin", headers={"Range": "bytes=256-511"})
        assert part.status_code == 206
        assert part.content == bytes(range(256))
        assert part.headers["content-range"] == f"bytes 256-511/{256 * 4096}"

        full = client.get(s3_gateway.url + "/big.bin")
        assert full.status_code == 200
        assert full.content == OBJECTS["big.bin"][0]

        etag = full.headers["etag"]
        again = client.get(s3_gateway.url + "/big.bin", headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert again.content == b""
        changed = client.get(s3_gateway.url + "/big.bin", headers={"If-Match": '"other"'})
        assert changed.status_code == 412


def test_head_and_methods(s3_gateway: Gateway) -> None:
    head = httpx.head(s3_gateway.url + "/hello.txt", timeout=10)
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(OBJECTS["hello.txt"][0]))
    assert head.content == b""

    post = httpx.post(s3_gateway.url + "/hello.txt", content=b"x", timeout=10)
    assert post.status_code == 405
    assert post.headers["allow"] == "GET, HEAD"
    # the connection still works after a HEAD answered from S3
    assert httpx.get(s3_gateway.url + "/hello.txt", timeout=10).status_code == 200


def test_not_found_object_is_served_with_404(moto: Moto, gateway: Callable[..., Gateway]) -> None:
    gw = gateway(s3_config(moto, not_found="404.html"))

    r = httpx.get(gw.url + "/missing.html", headers={"If-None-Match": "*"}, timeout=10)

    assert r.status_code == 404
    assert r.content == b"<h1>not here</h1>"
    assert r.headers["content-type"] == "text/html"


def test_prefix_and_strip_prefix_form_the_key(moto: Moto, gateway: Callable[..., Gateway]) -> None:
    gw = gateway(s3_config(moto, path="/assets/", prefix="site/", strip_prefix=True))

    assert httpx.get(gw.url + "/assets/app.js", timeout=10).content == OBJECTS["site/app.js"][0]
    assert httpx.get(gw.url + "/hello.txt", timeout=10).status_code == 404  # no route


def test_a_wrong_secret_is_rejected_by_the_server(
    moto: Moto, gateway: Callable[..., Gateway]
) -> None:
    wrong = dict(moto.reader, aws_secret_access_key="not-the-secret")
    gw = gateway(s3_config(moto, wrong))

    r = httpx.get(gw.url + "/hello.txt", timeout=10)

    assert r.status_code == 502
    assert r.headers["content-type"] == "application/problem+json"
    deadline = time.monotonic() + 10
    while "SignatureDoesNotMatch" not in gw.stderr:
        assert time.monotonic() < deadline, gw.stderr
        time.sleep(0.05)
    assert "not-the-secret" not in gw.stderr


def test_credentials_from_the_environment(
    moto: Moto, gateway: Callable[..., Gateway], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = s3_config(moto)
    del config["sites"][0]["routes"][0]["s3"]["access_key_id"]
    del config["sites"][0]["routes"][0]["s3"]["secret_access_key"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto.reader["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto.reader["aws_secret_access_key"])
    gw = gateway(config)

    assert httpx.get(gw.url + "/hello.txt", timeout=10).status_code == 200
