"""Config of origins that need more than an address: the ``s3:`` action (an S3-compatible
bucket), with the checks of its bucket name, endpoint and credentials.

Run at load time so that missing credentials are a config error with a line number, not a
502 at the first request. Messages never contain a secret.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from bastion.config.addresses import parse_endpoint
from bastion.config.show import show
from bastion.config.types import IndexName, section
from bastion.config.upstream import ProxyTimeouts, UpstreamTls

__all__ = ["S3", "parse_endpoint", "resolve_credentials", "validate_bucket"]

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def validate_bucket(value: str) -> str:
    """S3 bucket naming rules (which also make it a valid host name label sequence)."""
    if not _BUCKET.fullmatch(value) or ".." in value:
        raise ValueError(
            "expected a bucket name of 3 to 63 lowercase letters, digits, '.' and '-', "
            f"got {show(value)}"
        )
    return value


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


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class S3(_Model):
    """Serve objects of an S3-compatible bucket (GET and HEAD, SigV4-signed)."""

    bucket: str = Field(description="Bucket name.")
    region: str = Field(
        default="us-east-1", min_length=1, description="Region used in the request signature."
    )
    endpoint: str | None = Field(
        default=None,
        description="http:// or https:// URL of an S3-compatible service; null means AWS "
        "(https://s3.REGION.amazonaws.com).",
    )
    path_style: bool | None = Field(
        default=None,
        description="Address the bucket in the path (ENDPOINT/BUCKET/KEY) instead of the host "
        "name (BUCKET.ENDPOINT/KEY). Default: false for AWS, true for a custom endpoint.",
    )
    access_key_id: str | None = Field(
        default=None,
        description="Access key id; null takes AWS_ACCESS_KEY_ID, else the shared credentials "
        "file (~/.aws/credentials, profile AWS_PROFILE or default).",
    )
    secret_access_key: SecretStr | None = Field(
        default=None,
        description="Secret access key; given together with access_key_id.",
    )
    session_token: SecretStr | None = Field(
        default=None,
        description="Session token of temporary credentials (optional).",
    )
    prefix: str = Field(
        default="", description="Prepended to the request path to form the object key."
    )
    index: IndexName | None = Field(
        default="index.html",
        description="Object name appended to paths ending in '/'; null answers 404 for them.",
    )
    not_found: str | None = Field(
        default=None,
        description="Key (below prefix) of an object served with status 404 when the "
        "requested one does not exist; null answers a problem+json 404.",
    )
    tls: UpstreamTls | None = Field(
        default=None, description="TLS settings for an https endpoint (custom CA, etc.)."
    )
    timeouts: ProxyTimeouts = section("Time limits for the endpoint.")

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return validate_bucket(value)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else parse_endpoint(value).text

    @field_validator("prefix", "not_found")
    @classmethod
    def _key_part(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("/") or "\x00" in value):
            raise ValueError(f"must be an object key without a leading '/', got {show(value)}")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> S3:
        access, secret, token = resolve_credentials(
            self.access_key_id,
            None if self.secret_access_key is None else self.secret_access_key.get_secret_value(),
            None if self.session_token is None else self.session_token.get_secret_value(),
        )
        # frozen model: the resolved credentials are stored through object.__setattr__
        object.__setattr__(self, "access_key_id", access)
        object.__setattr__(self, "secret_access_key", SecretStr(secret))
        object.__setattr__(self, "session_token", None if token is None else SecretStr(token))
        return self
