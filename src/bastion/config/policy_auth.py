"""Config models of the authentication policies: API keys, JWT, Basic auth, forward auth.

A route has at most one ``auth:`` section, holding exactly one method. Everything that can be
checked without I/O is checked here (key files parse, algorithms fit the key source), so that a
broken setup is a config error with its line, not a 500 at the first request.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
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

from bastion.config.material import client_context_problem, public_key_problem
from bastion.config.passwords import check_hash, read_users_file
from bastion.config.plain import AuthMethods
from bastion.config.show import redact, show
from bastion.config.types import Duration, RelativePath, one_or_many

__all__ = [
    "HMAC_ALGORITHMS",
    "JWT_ALGORITHMS",
    "ApiKeysAuth",
    "Auth",
    "BasicAuth",
    "ForwardAuth",
    "JwtAuth",
]

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
JWT_ALGORITHMS = (
    *HMAC_ALGORITHMS,
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
JwtAlgorithm = Literal[
    "HS256",
    "HS384",
    "HS512",
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
]

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_REALM = re.compile(r'[^"\\\x00-\x1f\x7f]*')


# Fields the gateway computes itself: adding or sending them would break the framing.
_RESERVED = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te",
     "trailer", "host", "proxy-connection"}
)  # fmt: skip


def _header_name(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        if not _TOKEN.fullmatch(value):
            raise ValueError(f"expected a header field name like X-Consumer, got {show(value)}")
        if value.lower() in _RESERVED:
            raise ValueError(f"{value} is set by the gateway itself and cannot be used here")
    return value


HeaderName = Annotated[str, BeforeValidator(_header_name)]


def _realm(value: str) -> str:
    if not _REALM.fullmatch(value):
        raise ValueError(
            f"a realm cannot hold quotes, backslashes or control characters, got {show(value)}"
        )
    return value


def _ca_bundle(value: str | None, url: str | None, url_key: str) -> None:
    """``ca`` (a PEM bundle trusted for an https:// URL) must load, and have such a URL."""
    if value is None:
        return
    if url is None or urlsplit(url).scheme != "https":
        raise ValueError(f"ca applies to an https:// {url_key} only")
    if not Path(value).is_file():
        raise ValueError(f"ca file {redact(value)} does not exist")
    try:
        loads = client_context_problem(True, value) is None
    except ValueError:
        loads = False
    if not loads:
        raise ValueError(f"ca {redact(value)} holds no PEM CA certificate that loads")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class ApiKeysAuth(_Model):
    """Require an API key created with ``bastion keys create``."""

    header: HeaderName | None = Field(
        default="X-API-Key",
        description="Request header carrying the key; null accepts it in no header field.",
    )
    bearer: bool = Field(
        default=True, description="Also accept the key as 'Authorization: Bearer KEY'."
    )
    query: str | None = Field(
        default=None,
        min_length=1,
        description="Query parameter carrying the key (e.g. api_key); null (the default) "
        "accepts none, since URLs end up in browser histories and third-party logs.",
    )
    consumers: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Consumers allowed on this route; a valid key of another consumer gets "
        "403. Null allows every consumer with a valid key.",
    )
    hide_credentials: bool = Field(
        default=True,
        description="Remove the key (header, bearer field or query parameter) from the "
        "request sent upstream.",
    )

    @field_validator("query")
    @classmethod
    def _query_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_.~-]+", value):
            raise ValueError(f"expected a query parameter name like api_key, got {show(value)}")
        return value

    @model_validator(mode="after")
    def _somewhere(self) -> ApiKeysAuth:
        if self.header is None and not self.bearer and self.query is None:
            raise ValueError("the key is accepted nowhere: set header, bearer or query")
        return self


class JwtAuth(_Model):
    """Verify a signed JSON Web Token (JWS compact form) sent as 'Authorization: Bearer'."""

    algorithms: Annotated[list[JwtAlgorithm], BeforeValidator(one_or_many)] = Field(
        min_length=1,
        description="Accepted signature algorithms ('none' is never accepted). HS* need "
        "secret; the others need key_file or jwks_url.",
    )
    secret: SecretStr | None = Field(
        default=None,
        description="Shared secret of the HS256/384/512 algorithms; write it as ${ENV_VAR} "
        "or ${file:path}. At least 32 bytes.",
    )
    key_file: RelativePath | None = Field(
        default=None,
        description="PEM public key (RSA, EC, Ed25519/Ed448) or a JWKS JSON document, read "
        "at load and reload.",
    )
    jwks_url: str | None = Field(
        default=None,
        description="http(s) URL of a JWKS document, fetched in the background and cached; "
        "never fetched per request.",
    )
    jwks_refresh: Duration = Field(
        default=3600.0,
        gt=0,
        description="How often the JWKS document is fetched again while in use.",
    )
    jwks_min_interval: Duration = Field(
        default=30.0,
        ge=0,
        description="Shortest time between two fetches caused by a token with an unknown "
        "kid (key rotation), so that made-up kids cannot flood the JWKS server.",
    )
    jwks_timeout: Duration = Field(
        default=5.0, gt=0, description="Time allowed for one JWKS fetch."
    )
    ca: RelativePath | None = Field(
        default=None,
        description="PEM bundle of the CA certificates trusted for an https:// jwks_url "
        "(an identity provider with a private CA); null uses the system's trust store.",
    )
    issuer: Annotated[list[str] | None, BeforeValidator(one_or_many)] = Field(
        default=None, description="Accepted 'iss' values (one or a list); null checks none."
    )
    audience: Annotated[list[str] | None, BeforeValidator(one_or_many)] = Field(
        default=None,
        description="Accepted 'aud' values (one or a list); the token must name one of "
        "them. Null checks none.",
    )
    leeway: Duration = Field(
        default=30.0, ge=0, description="Clock skew allowed on exp, nbf and iat."
    )
    required_claims: list[str] = Field(
        default_factory=lambda: ["exp"],
        description="Claims every token must carry; exp by default, [] for none.",
    )
    scopes: list[str] = Field(
        default_factory=list,
        description="Scopes the token must all hold (from the 'scope' string or 'scp' "
        "list claim); a token without them gets 403 insufficient_scope.",
    )
    consumer_claim: str | None = Field(
        default="sub",
        description="Claim whose value is the consumer name (access log, consumer header); "
        "null sets none.",
    )
    claims_to_headers: dict[str, HeaderName] = Field(
        default_factory=dict,
        description="Claim name -> request header sent upstream with its value (lists are "
        "comma-joined, objects JSON); client-sent fields of these names are removed.",
    )
    realm: str = Field(
        default="bastion", description="realm of the WWW-Authenticate: Bearer challenge."
    )

    @field_validator("realm")
    @classmethod
    def _realm(cls, value: str) -> str:
        return _realm(value)

    @field_validator("jwks_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {show(value)}")
        return value.strip()

    @field_validator("key_file")
    @classmethod
    def _exists(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(f"file {redact(value)} does not exist")
        return value

    @model_validator(mode="after")
    def _keys_fit(self) -> JwtAuth:
        _ca_bundle(self.ca, self.jwks_url, "jwks_url")
        sources = [k for k in ("secret", "key_file", "jwks_url") if getattr(self, k) is not None]
        if len(sources) != 1:
            raise ValueError("give exactly one of secret, key_file or jwks_url")
        hmac = [a for a in self.algorithms if a in HMAC_ALGORITHMS]
        if self.secret is not None:
            if len(hmac) != len(self.algorithms):
                raise ValueError("a secret verifies only HS256/HS384/HS512 tokens")
            if len(self.secret.get_secret_value().encode()) < 32:
                raise ValueError("the HS secret must be at least 32 bytes (the value is hidden)")
        elif hmac:
            # an HS token checked with a public key as its "secret" is the classic
            # algorithm-confusion forgery: public-key sources never accept HS algorithms
            raise ValueError(f"{', '.join(hmac)} need a secret, not a public key or JWKS")
        if self.key_file is not None:
            problem = public_key_problem(self.key_file, self.algorithms)
            if problem is not None:
                raise ValueError(f"key_file {redact(self.key_file)}: {problem}")
        return self


class BasicAuth(_Model):
    """HTTP Basic authentication (RFC 7617) against bcrypt or argon2 password hashes."""

    users: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="User name -> bcrypt ($2b$...) or argon2 ($argon2id$...) hash of the password.",
    )
    users_file: RelativePath | None = Field(
        default=None,
        description="File of 'name:hash' lines (htpasswd style, bcrypt or argon2 only), read "
        "at load and reload.",
    )
    realm: str = Field(
        default="bastion", description="realm of the WWW-Authenticate: Basic challenge."
    )
    cache: Duration = Field(
        default=300.0,
        ge=0,
        description="How long a verified name and password are remembered (as a keyed "
        "hash), so that the slow password hash is not recomputed per request; 0 disables.",
    )

    @field_validator("realm")
    @classmethod
    def _realm(cls, value: str) -> str:
        return _realm(value)

    @model_validator(mode="after")
    def _hashes(self) -> BasicAuth:
        if not self.users and self.users_file is None:
            raise ValueError("give users or users_file")
        for name, value in self.users.items():
            if not name or ":" in name:
                raise ValueError(f"user name {show(name)} must be non-empty without ':'")
            problem = check_hash(value.get_secret_value())
            if problem:
                raise ValueError(f"users.{name}: {problem}")
        if self.users_file is not None:
            read_users_file(self.users_file)
        return self


class ForwardAuth(_Model):
    """Ask an external service whether the request may pass (like nginx auth_request)."""

    url: str = Field(
        description="http:// URL of the auth service; it gets a GET with the chosen "
        "client headers and X-Forwarded-Method/-Proto/-Host/-Uri/-For."
    )
    timeout: Duration = Field(
        default=5.0, gt=0, description="Time allowed for the auth service's answer."
    )
    request_headers: list[HeaderName] = Field(
        default_factory=lambda: ["Authorization", "Cookie"],
        description="Client request headers sent to the auth service.",
    )
    copy_headers: list[HeaderName] = Field(
        default_factory=list,
        description="Headers of the service's 2xx answer added to the upstream request "
        "(client-sent fields of these names are removed).",
    )
    consumer_from: HeaderName | None = Field(
        default=None,
        description="Header of the service's 2xx answer naming the consumer; null sets none.",
    )
    ca: RelativePath | None = Field(
        default=None,
        description="PEM bundle of the CA certificates trusted for an https:// url (an auth "
        "service with a private CA); null uses the system's trust store.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {show(value)}")
        return value.strip()

    @model_validator(mode="after")
    def _ca_fits(self) -> ForwardAuth:
        _ca_bundle(self.ca, self.url, "url")
        return self


class Auth(_Model, AuthMethods):
    """Who may use a route: one authentication method, or several with ``satisfy: any``."""

    api_keys: ApiKeysAuth | None = Field(
        default=None, description="Require an API key managed with 'bastion keys'."
    )
    jwt: JwtAuth | None = Field(default=None, description="Require a valid JWT bearer token.")
    basic: BasicAuth | None = Field(default=None, description="Require HTTP Basic credentials.")
    forward: ForwardAuth | None = Field(default=None, description="Ask an external auth service.")
    satisfy: Literal["any"] | None = Field(
        default=None,
        description="With several methods: 'any' lets a request pass with any one of them "
        "(tried in the order api_keys, jwt, basic, forward, those whose credentials the "
        "request surely carries first). Requiring all of them is not supported.",
    )
    consumer_header: HeaderName | None = Field(
        default="X-Consumer",
        description="Request header carrying the consumer name upstream (a client-sent one "
        "is always removed); null sends none.",
    )

    @model_validator(mode="after")
    def _methods(self) -> Auth:
        chosen = self.methods()
        if not chosen:
            raise ValueError("give one of api_keys, jwt, basic or forward")
        if len(chosen) > 1 and self.satisfy != "any":
            raise ValueError(
                f"several methods are set ({', '.join(chosen)}): add satisfy: any to let a "
                "request pass with any one of them (requiring all of them is not supported)"
            )
        return self
