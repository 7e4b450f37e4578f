"""Checks for upstream origins that need more than an address: TLS settings of https://
upstreams and the bucket, endpoint and credentials of an S3 origin.

Run at load time so that a missing CA file or missing credentials is a config error with a
line number, not a 502 at the first request. Messages never contain a secret.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from bastion.config.addresses import UpstreamAddress, parse_hostname, parse_upstream
from bastion.config.show import redact, show
from bastion.tls.client import client_context

if TYPE_CHECKING:
    from bastion.config.models import UpstreamTls

__all__ = ["check_upstream_tls", "parse_endpoint", "resolve_credentials", "validate_bucket"]

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def _reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)


def check_upstream_tls(tls: UpstreamTls) -> None:
    """Raise ``ValueError`` when the (existing) files do not load as TLS material."""
    if tls.client_key is not None and tls.client_cert is None:
        raise ValueError("client_key needs client_cert")
    if tls.server_name is not None:
        name = tls.server_name.strip().strip("[]")
        try:
            ipaddress.ip_address(name)
        except ValueError:
            parse_hostname(name)
    if tls.ca is not None:
        try:
            ssl.create_default_context(cafile=tls.ca)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(
                f"ca: cannot load {redact(tls.ca)} as a PEM CA bundle: {_reason(exc)}"
            ) from None
    try:
        client_context(tls.verify, tls.ca, tls.client_cert, tls.client_key)
    except (ssl.SSLError, OSError) as exc:
        key = "" if tls.client_key is None else f" with the key {redact(tls.client_key)}"
        raise ValueError(
            f"cannot load the client certificate {redact(tls.client_cert or '')}{key}: "
            f"{_reason(exc)}"
        ) from None


def validate_bucket(value: str) -> str:
    """S3 bucket naming rules (which also make it a valid host name label sequence)."""
    if not _BUCKET.fullmatch(value) or ".." in value:
        raise ValueError(
            "expected a bucket name of 3 to 63 lowercase letters, digits, '.' and '-', "
            f"got {show(value)}"
        )
    return value


def parse_endpoint(value: str) -> UpstreamAddress:
    """An http:// or https:// endpoint URL (no path)."""
    address = parse_upstream(value.strip().rstrip("/"))
    if address.scheme == "unix":
        raise ValueError(f"expected an http:// or https:// URL, got {show(value)}")
    return address


def resolve_credentials(
    access: str | None, secret: str | None, token: str | None
) -> tuple[str, str, str | None]:
    """Credentials given in the file, else from the AWS environment variables, else from the
    shared credentials file: the same order as the AWS CLI (minus instance roles)."""
    if access is not None or secret is not None:
        if not access or not secret:
            raise ValueError("access_key_id and secret_access_key must be given together")
        return access, secret, token or None
    env = os.environ
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env.get("AWS_SESSION_TOKEN")
    file = Path(env.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials").expanduser()
    profile = env.get("AWS_PROFILE") or "default"
    import configparser  # only S3 origins without keys in the config read this file

    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(file, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ValueError(
            f"cannot read the AWS credentials file {file}: {type(exc).__name__}"
        ) from None
    if parser.has_section(profile):
        section = parser[profile]
        access = section.get("aws_access_key_id")
        secret = section.get("aws_secret_access_key")
        if access and secret:
            return access, secret, section.get("aws_session_token")
    raise ValueError(
        "no credentials: give access_key_id and secret_access_key (for example from "
        "${AWS_ACCESS_KEY_ID}), set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or add "
        f"profile [{profile}] to {file}"
    )
