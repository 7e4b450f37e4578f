"""Config models of TLS: a site's certificate files and HSTS, the ACME CA that issues
certificates for public names (tls: auto), and the TLS policy of the https listeners.

Certificate files are loaded once at load time (through ``material``), so that a pair that
does not load is a config error with its line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from bastion.config.defaults import HSTS_MAX_AGE
from bastion.config.material import server_pair_problem
from bastion.config.show import redact, show
from bastion.config.types import Duration, RelativePath, one_or_many

__all__ = [
    "LETSENCRYPT_DIRECTORY",
    "Acme",
    "AcmeDnsHook",
    "AcmeEab",
    "ChallengeType",
    "Hsts",
    "TlsFiles",
    "TlsPolicy",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class TlsFiles(_Model):
    """A certificate and key read from files."""

    cert: RelativePath = Field(
        description="PEM file with the certificate, followed by its intermediates."
    )
    key: RelativePath = Field(description="PEM file with the certificate's private key.")

    @field_validator("cert", "key")
    @classmethod
    def _exists(cls, value: str) -> str:
        if not Path(value).is_file():
            raise ValueError(f"file {redact(value)} does not exist")
        return value

    @model_validator(mode="after")
    def _loads(self) -> TlsFiles:
        reason = server_pair_problem(self.cert, self.key)
        if reason is not None:
            raise ValueError(
                f"cannot load the certificate {redact(self.cert)} with the key "
                f"{redact(self.key)}: {reason}"
            )
        return self


class Hsts(_Model):
    """Strict-Transport-Security sent over HTTPS."""

    max_age: Duration = Field(
        default=HSTS_MAX_AGE, gt=0, description="How long browsers remember to use HTTPS only."
    )
    include_subdomains: bool = Field(
        default=False, description="Apply to every subdomain of the site's hosts as well."
    )
    preload: bool = Field(
        default=False,
        description="Ask for inclusion in browsers' preload lists (needs max_age >= 1y and "
        "include_subdomains).",
    )


LETSENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"


ChallengeType = Literal["http-01", "tls-alpn-01", "dns-01"]


_B64URL = re.compile(r"[A-Za-z0-9_-]+=*")


class AcmeEab(_Model):
    """External Account Binding (RFC 8555 section 7.3.4), required by ZeroSSL and some
    commercial CAs."""

    key_id: str = Field(min_length=1, description="The EAB key identifier given by the CA.")
    hmac_key: SecretStr = Field(
        description="The EAB HMAC key given by the CA (base64url); a secret: write it as "
        "${ENV_VAR} or ${file:path}. Never logged."
    )

    @field_validator("hmac_key")
    @classmethod
    def _b64(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value().strip()
        if len(raw) < 16 or not _B64URL.fullmatch(raw):
            raise ValueError("expected the CA's base64url HMAC key (the value is hidden)")
        return SecretStr(raw)


class AcmeDnsHook(_Model):
    """A command that publishes and removes the TXT records of the DNS-01 challenge."""

    command: Annotated[list[str], BeforeValidator(one_or_many)] = Field(
        min_length=1,
        description="The program and its first arguments (a string is one program path); "
        "bastion appends the action (present or cleanup), the record name "
        "(_acme-challenge.<domain>) and the TXT value.",
    )
    timeout: Duration = Field(
        default=60.0, gt=0, description="How long one run of the command may take."
    )
    propagation: Duration = Field(
        default=0.0,
        ge=0,
        description="How long to wait after a successful present before asking the CA to "
        "validate (time for the record to reach every authoritative DNS server).",
    )


class Acme(_Model):
    """Where certificates for public names (tls: auto) come from: an RFC 8555 CA."""

    email: str | None = Field(
        default=None,
        description="Contact address given to the CA (expiry and policy mail); optional.",
    )
    directory: str = Field(
        default=LETSENCRYPT_DIRECTORY,
        description="The CA's ACME directory URL. Let's Encrypt production by default; "
        "staging is https://acme-staging-v02.api.letsencrypt.org/directory.",
    )
    trusted_roots: RelativePath | None = Field(
        default=None,
        description="PEM bundle of CA certificates trusted when connecting to the ACME "
        "server (for a private CA such as Pebble); null uses the system's roots.",
    )

    challenges: list[ChallengeType] | None = Field(
        default=None,
        min_length=1,
        description="Challenge types to use, in order of preference. Default: http-01 when "
        "an http listener exists, else tls-alpn-01; dns-01 for wildcard names (needs dns_hook).",
    )
    dns_hook: AcmeDnsHook | None = Field(
        default=None, description="Command that publishes DNS-01 TXT records; needed for wildcards."
    )
    eab: AcmeEab | None = Field(
        default=None, description="External Account Binding credentials (ZeroSSL and others)."
    )
    key_type: Literal["ecdsa-p256", "rsa2048", "rsa3072"] = Field(
        default="ecdsa-p256", description="Key type of the certificates ordered."
    )

    @model_validator(mode="after")
    def _dns_needs_hook(self) -> Acme:
        if self.challenges and "dns-01" in self.challenges and self.dns_hook is None:
            raise ValueError("challenges lists dns-01, which needs acme.dns_hook")
        return self

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        local, at, domain = value.partition("@")
        if not at or not local or "." not in domain or any(c in value for c in " ,<>\r\n"):
            raise ValueError(f"expected an email address like ops@example.com, got {show(value)}")
        return value

    @field_validator("directory")
    @classmethod
    def _directory(cls, value: str) -> str:
        value = value.strip()
        parsed = urlsplit(value)
        if parsed.scheme not in ("https", "http") or not parsed.netloc:
            raise ValueError(
                f"expected the CA's directory URL like {LETSENCRYPT_DIRECTORY}, got {show(value)}"
            )
        return value

    @field_validator("trusted_roots")
    @classmethod
    def _roots_exist(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(f"file {redact(value)} does not exist")
        return value


class TlsPolicy(_Model):
    """TLS settings shared by every https listener."""

    profile: Literal["intermediate", "modern"] = Field(
        default="intermediate",
        description="'intermediate' (TLS 1.2 with Mozilla's intermediate ciphers, and TLS 1.3) "
        "or 'modern' (TLS 1.3 only).",
    )
    watch_interval: Duration = Field(
        default=5.0,
        gt=0,
        description="How often certificate files (tls: {cert, key} and the certificate "
        "store) are checked for changes; a changed pair is loaded for new handshakes.",
    )
