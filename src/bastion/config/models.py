"""The configuration as typed, frozen pydantic models.

Every field carries a description: it is the reference documentation (``bastion schema`` and
docs/configuration.md). Values are stored parsed: durations in seconds, sizes in bytes,
addresses and route paths as dataclasses, relative paths made absolute.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from bastion.config.addresses import Address
from bastion.config.balancing import (
    ActiveHealth,
    HashKey,
    PassiveHealth,
    Retries,
    Sticky,
    UpstreamEndpoint,
    endpoint_short_form,
)
from bastion.config.origins import (
    check_upstream_tls,
    parse_endpoint,
    resolve_credentials,
    validate_bucket,
)
from bastion.config.policy_auth import Auth
from bastion.config.policy_body import CompressSetting, Validation
from bastion.config.policy_traffic import (
    Cors,
    Headers,
    IpRules,
    Quota,
    RateLimit,
    SecurityHeaders,
    security_headers_value,
)
from bastion.config.rules import config_rules, route_rules, site_rules, validate_with_rules
from bastion.config.show import redact, show
from bastion.config.types import (
    Duration,
    HeaderValue,
    HostPattern,
    IndexName,
    ListenAddress,
    Method,
    Network,
    RelativePath,
    RoutePathType,
    Size,
    WorkerCount,
    base_dir,
    one_or_many,
    string_or_list_schema,
)

__all__ = [
    "LETSENCRYPT_DIRECTORY",
    "S3",
    "AccessLog",
    "Acme",
    "AcmeDnsHook",
    "AcmeEab",
    "ActiveHealth",
    "Cache",
    "CacheKey",
    "Config",
    "HashKey",
    "Hsts",
    "Http2",
    "Limits",
    "Listen",
    "PassiveHealth",
    "Proxy",
    "ProxyTimeouts",
    "Redirect",
    "Respond",
    "Retries",
    "Route",
    "RouteCache",
    "ServerTimeouts",
    "Site",
    "Static",
    "Sticky",
    "TlsFiles",
    "TlsPolicy",
    "UpstreamEndpoint",
    "UpstreamTls",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listen(_Model):
    """Where bastion accepts connections."""

    http: Annotated[
        list[ListenAddress],
        BeforeValidator(one_or_many),
        string_or_list_schema({"type": "string"}),
    ] = Field(
        default_factory=lambda: [Address("127.0.0.1", 8080)],
        description="Plain-HTTP listen address, or a list of them: host:port, [ipv6]:port, "
        "or :port for every interface; [] for none (HTTPS only: ACME then uses tls-alpn-01).",
    )
    https: Annotated[
        list[ListenAddress],
        BeforeValidator(one_or_many),
        string_or_list_schema({"type": "string"}),
    ] = Field(
        default_factory=list,
        description="HTTPS listen address, or a list of them (same forms as http); none by "
        "default. With one, sites get TLS unless they say tls: off.",
    )

    @model_validator(mode="after")
    def _some(self) -> Listen:
        if not self.http and not self.https:
            raise ValueError("no listener: give listen.http or listen.https an address")
        return self


class ProxyTimeouts(_Model):
    """Time limits for talking to an upstream."""

    connect: Duration = Field(default=5.0, gt=0, description="Time allowed to open a connection.")
    read: Duration = Field(
        default=60.0, gt=0, description="Longest gap allowed between two reads from the upstream."
    )
    send: Duration = Field(
        default=60.0, gt=0, description="Longest time a write to the upstream may stay blocked."
    )
    total: Duration = Field(
        default=0.0,
        ge=0,
        description="Longest time for a whole exchange, retries included, until the response "
        "head arrives; 0 for no limit.",
    )


class UpstreamTls(_Model):
    """How bastion connects to https:// upstreams (TLS 1.2 or newer, ALPN http/1.1)."""

    verify: bool = Field(
        default=True,
        description="Verify the upstream's certificate chain and name; false accepts any "
        "certificate (testing only).",
    )
    ca: RelativePath | None = Field(
        default=None,
        description="PEM bundle of the CA certificates trusted for the upstream; null uses "
        "the system's trust store.",
    )
    server_name: str | None = Field(
        default=None,
        description="Name sent in SNI and checked against the certificate; null uses the "
        "upstream URL's host (an IP address is checked against the IP SANs).",
    )
    client_cert: RelativePath | None = Field(
        default=None,
        description="PEM file with the client certificate (and its intermediates) presented "
        "to the upstream (mutual TLS).",
    )
    client_key: RelativePath | None = Field(
        default=None,
        description="PEM file with the client certificate's private key; null when "
        "client_cert holds the key too.",
    )

    @field_validator("ca", "client_cert", "client_key")
    @classmethod
    def _exists(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(f"file {redact(value)} does not exist")
        return value

    @model_validator(mode="after")
    def _loads(self) -> UpstreamTls:
        check_upstream_tls(self)
        return self


def _upgrade_protocol(value: str) -> str:
    name = value.strip().lower()
    if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9a-z-]+", name):
        raise ValueError(f"{show(value)} is not an Upgrade protocol name")
    if name == "h2c":
        # after a 101 the connection would carry HTTP/2 requests the gateway never routes
        raise ValueError(
            "h2c is never forwarded: after the switch, the backend would take requests "
            "that bypass routing and every policy"
        )
    return name


class Proxy(_Model):
    """Forward the request to an upstream server."""

    upstreams: list[Annotated[UpstreamEndpoint, BeforeValidator(endpoint_short_form)]] = Field(
        min_length=1,
        description="Upstream endpoints: http://host[:port] (port 80 by default), "
        "https://host[:port] (port 443), unix:/absolute/path.sock, or {url, weight, zone, "
        "backup}.",
    )
    tls: UpstreamTls | None = Field(
        default=None,
        description="TLS settings for the https:// upstreams; null verifies them against "
        "the system's trust store.",
    )
    balance: (
        Literal["round_robin", "least_requests", "random_two", "peak_ewma", "hash", "sticky"]
        | None
    ) = Field(
        default=None,
        description="Load-balancing policy; round_robin, or peak_ewma when the endpoints "
        "have more than one zone.",
    )
    hash: HashKey = Field(
        default_factory=lambda: HashKey(), description="Key of the hash policy."
    )
    sticky: Sticky = Field(
        default_factory=lambda: Sticky(), description="Cookie of the sticky policy."
    )
    health: ActiveHealth | None = Field(
        default=None, description="Active health checks; none by default."
    )
    passive: PassiveHealth = Field(
        default_factory=lambda: PassiveHealth(),
        description="Ejection of endpoints that fail real requests.",
    )
    retries: Retries = Field(
        default_factory=lambda: Retries(), description="Retries on another endpoint."
    )
    max_connections: int = Field(
        default=0,
        ge=0,
        description="Requests in flight per endpoint (each holds one connection); 0 for no "
        "limit.",
    )
    max_pending: int = Field(
        default=0,
        ge=0,
        description="Requests allowed to wait for a free connection per endpoint when "
        "max_connections is reached; beyond that, 503.",
    )

    @field_validator("max_pending")
    @classmethod
    def _pending_needs_a_limit(cls, value: int, info: ValidationInfo) -> int:
        if value and not info.data.get("max_connections"):
            raise ValueError(
                "max_pending needs max_connections: requests wait for a connection only "
                "when the number of connections is limited"
            )
        return value

    slow_start: Duration = Field(
        default=0.0,
        ge=0,
        description="Time over which an endpoint that comes back ramps up to its full weight.",
    )
    resolve_ttl: Duration = Field(
        default=30.0,
        gt=0,
        description="How long the addresses of an upstream host name are used before it is "
        "resolved again.",
    )
    timeouts: ProxyTimeouts = Field(
        default_factory=lambda: ProxyTimeouts(), description="Upstream time limits."
    )
    preserve_host: bool | None = Field(
        default=None,
        description="Send the client's Host header upstream; false sends the upstream's "
        "host[:port] instead. Default: true for http:// and unix: upstreams, false for "
        "https:// ones.",
    )
    websocket_idle_timeout: Duration | None = Field(
        default=3600.0,
        gt=0,
        description="Close an upgraded (WebSocket) tunnel with no byte in either direction "
        "for this long; null never does.",
    )
    upgrade: list[Annotated[str, AfterValidator(_upgrade_protocol)]] = Field(
        default_factory=lambda: ["websocket"],
        description="Upgrade protocols forwarded to the upstream (names compared "
        "case-insensitively); the Upgrade field of any other request is removed and the "
        "request forwarded as a plain one. h2c is never forwarded; [] forwards none.",
    )
    underscores_in_headers: bool = Field(
        default=False,
        description="Forward request header fields whose names contain '_'; by default they "
        "are dropped (CGI/WSGI backends read X_Real_IP as X-Real-IP), as nginx does.",
    )
    max_idle_connections: int = Field(
        default=64,
        ge=0,
        description="Idle keep-alive connections kept per upstream endpoint; more released "
        "together in a burst are kept for up to a second for the next burst. 0 keeps none.",
    )
    idle_timeout: Duration = Field(
        default=4.0,
        gt=0,
        description="How long an idle pooled upstream connection is kept; shorter than the "
        "5s keep-alive of common app servers so that they never close it first.",
    )

    max_response_header_bytes: Size = Field(
        default=64 * 1024,
        gt=0,
        description="Largest response head accepted from an upstream (status line and header "
        "fields; each interim 1xx head and the trailer section are held to it too); beyond it "
        "the client gets 502 and the upstream connection is closed.",
    )
    max_response_header_fields: int = Field(
        default=100,
        ge=1,
        description="Most header fields in one upstream response head; beyond it the client "
        "gets 502 and the upstream connection is closed.",
    )

    @model_validator(mode="after")
    def _tls_needs_https(self) -> Proxy:
        if self.tls is not None and not any(u.url.scheme == "https" for u in self.upstreams):
            raise ValueError("tls only applies to https:// upstreams, and this proxy has none")
        return self


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
    timeouts: ProxyTimeouts = Field(
        default_factory=lambda: ProxyTimeouts(), description="Time limits for the endpoint."
    )

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


class Redirect(_Model):
    """Answer with a redirect."""

    to: HeaderValue = Field(
        min_length=1,
        description="Target URL or path. On a prefix route, a target ending in '/' gets the "
        "rest of the path after the prefix appended; the query string is kept.",
    )
    status: Literal[301, 302, 303, 307, 308] = Field(
        default=302, description="Redirect status code."
    )


class Static(_Model):
    """Serve files from a directory."""

    root: Path = Field(
        description="Directory to serve; relative paths resolve against the config file's "
        "directory. It must exist."
    )
    index: Annotated[
        list[IndexName], BeforeValidator(one_or_many), string_or_list_schema({"type": "string"})
    ] = Field(
        default_factory=lambda: ["index.html"],
        description="File names tried, in order, when a directory is requested.",
    )
    cache_control: HeaderValue | None = Field(
        default=None, description="Cache-Control header value for served files; null sends none."
    )

    @field_validator("root", mode="before")
    @classmethod
    def _resolve_root(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, str | Path):
            return value  # pydantic reports the wrong type
        if not str(value).strip():
            raise ValueError("must not be empty")
        path = Path(str(value).strip()).expanduser()
        resolved = (path if path.is_absolute() else base_dir(info) / path).resolve()
        if not resolved.exists():
            raise ValueError(f"static root {redact(str(value))} does not exist")
        if not resolved.is_dir():
            raise ValueError(f"static root {redact(str(value))} is not a directory")
        return resolved


class Respond(_Model):
    """Answer directly with a fixed response."""

    status: int = Field(default=200, ge=200, le=599, description="Status code (200-599).")
    body: str = Field(default="", description="Response body.")
    content_type: HeaderValue = Field(
        default="text/plain; charset=utf-8", description="Content-Type of the body."
    )


def _header_name(value: str) -> str:
    if not value or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", value):
        raise ValueError(f"{show(value)} is not a header field name")
    return value.lower()


class CacheKey(_Model):
    """What makes two requests the same cache entry (besides scheme, host and path)."""

    query: Literal["all", "ignore"] | list[str] = Field(
        default="all",
        description="Query parameters in the key: 'all' (sorted, so order does not "
        "matter), 'ignore', or the list of parameter names kept.",
    )
    headers: list[Annotated[str, AfterValidator(_header_name)]] = Field(
        default_factory=list,
        description="Request header fields whose values are added to the key (as if the "
        "backend always sent them in Vary).",
    )
    consumer: bool = Field(
        default=False,
        description="On a route with auth, keep every answer per consumer, even one that "
        "says public or s-maxage (answers are per consumer by default on such a route; "
        "no effect without auth).",
    )


class RouteCache(_Model):
    """Caching of a proxy route's responses (RFC 9111 shared-cache rules)."""

    ttl: Duration | None = Field(
        default=None,
        gt=0,
        description="Freshness lifetime that overrides the backend's Cache-Control/Expires; "
        "null follows the backend. no-store, private, Set-Cookie and Vary: * are still "
        "never stored.",
    )
    stale_while_revalidate: Duration = Field(
        default=0.0,
        ge=0,
        description="Default window after expiry in which a stale response is served at "
        "once while one background request refreshes it (the response's own "
        "stale-while-revalidate wins).",
    )
    stale_if_error: Duration = Field(
        default=0.0,
        ge=0,
        description="Default window after expiry in which a stale response is served when "
        "the backend fails or times out (the response's own stale-if-error wins).",
    )
    key: CacheKey = Field(
        default_factory=lambda: CacheKey(), description="What the cache key is made of."
    )
    heuristic: bool = Field(
        default=False,
        description="Allow heuristic freshness (10% of the age of Last-Modified) for "
        "responses without max-age, s-maxage or Expires.",
    )
    allow_authorization: bool = Field(
        default=False,
        description="On a route without auth: store responses to requests with "
        "Authorization even without public, s-maxage or must-revalidate (only when the "
        "answer is the same for everyone).",
    )
    shared: bool = Field(
        default=False,
        description="On a route with auth: the answers are the same for every consumer, "
        "so each is stored once for all of them (as if it said public). By default they "
        "are stored per consumer unless the response says public or s-maxage.",
    )
    statuses: list[Annotated[int, Field(ge=200, le=599)]] | None = Field(
        default=None,
        description="Cacheable status codes; null means 200, 203, 204, 300, 301, 308, 404, "
        "405, 410, 414, 501.",
    )

    @model_validator(mode="after")
    def _sharing(self) -> RouteCache:
        if self.shared and self.key.consumer:
            raise ValueError(
                "shared: true stores answers once for every consumer and key.consumer: true "
                "keeps them per consumer: choose one"
            )
        return self


class Cache(_Model):
    """The response cache shared by the routes that have `cache:` (one per worker)."""

    max_size: Size = Field(
        default=256 * 1024 * 1024,
        gt=0,
        description="Memory for cached responses (heads, bodies, bookkeeping); least "
        "recently used entries are evicted past it.",
    )
    max_object_size: Size = Field(
        default=8 * 1024 * 1024,
        gt=0,
        description="Responses with larger bodies are streamed through and not stored.",
    )
    lock_timeout: Duration = Field(
        default=5.0,
        gt=0,
        description="How long concurrent misses for one key wait for the single backend "
        "request before going to the backend themselves.",
    )
    purge_from: list[Network] = Field(
        default_factory=list,
        description="Client addresses or CIDRs allowed to send PURGE requests on cached "
        "routes; empty disables the PURGE method.",
    )


class Route(_Model):
    """A path (and optionally methods) within a site, and the one action taken for it."""

    path: RoutePathType = Field(
        description="'/api/' matches by prefix, '= /health' exactly, '~ ^/v[0-9]+/' by "
        "regular expression."
    )
    methods: list[Method] | None = Field(
        default=None,
        min_length=1,
        description="Allowed methods; others get 405. Omit to allow every method.",
    )
    strip_prefix: bool = Field(
        default=False,
        description="Remove the matched prefix from the path sent upstream or used as the "
        "object key (prefix routes with proxy or s3 only).",
    )
    path_normalisation: Literal["forward", "reject", "redirect"] = Field(
        default="forward",
        description="A request whose path is not in canonical form ('//', '.', '..', "
        "needless escapes): 'forward' its canonical form, 'reject' it (400) or 'redirect' "
        "it (308) to the canonical form.",
    )
    encoded_slashes: Literal["reject", "keep"] = Field(
        default="reject",
        description="A path with %2F or %5C: 'reject' it (400), or 'keep' it encoded as "
        "part of its segment (only for backends that do not decode it to a separator).",
    )
    path_parameters: Literal["reject", "keep"] = Field(
        default="reject",
        description="A path with ';' or '%3B' (a path parameter, '/a;v=1/b'): 'reject' it "
        "(400), or 'keep' it as part of its segment (only for backends that take ';' as "
        "data; Java servlet containers cut ';params' off before matching).",
    )
    proxy: Proxy | None = Field(default=None, description="Forward to upstream servers.")
    redirect: Redirect | None = Field(default=None, description="Answer with a redirect.")
    static: Static | None = Field(default=None, description="Serve files from a directory.")
    respond: Respond | None = Field(default=None, description="Answer with a fixed response.")
    s3: S3 | None = Field(default=None, description="Serve objects from an S3-compatible bucket.")
    cache: RouteCache | None = Field(
        default=None, description="Cache responses of this proxy route (see docs/caching.md)."
    )
    # traffic policies (docs/policies.md)
    ip_rules: IpRules | None = Field(
        default=None,
        description="Client networks allowed or denied; replaces the site's ip_rules.",
    )
    cors: Cors | None = Field(
        default=None, description="CORS for browsers on other origins; replaces the site's cors."
    )
    rate_limits: list[RateLimit] = Field(
        default_factory=list, description="Rate limits; a request must pass every one."
    )
    quotas: list[Quota] = Field(
        default_factory=list, description="Per-day or per-month request quotas."
    )
    headers: Headers | None = Field(
        default=None,
        description="Header rules and secret injection, applied after the site's headers.",
    )
    security_headers: Annotated[
        SecurityHeaders | None, BeforeValidator(security_headers_value)
    ] = Field(
        default=None,
        description="Browser security fields preset (true for the defaults); replaces the "
        "site's security_headers.",
    )
    # authentication (docs/policies.md)
    auth: Auth | None = Field(
        default=None,
        description="Who may use the route: api_keys, jwt, basic or forward (one of them).",
    )
    # body policies (docs/policies.md)
    max_body: Size | None = Field(
        default=None,
        gt=0,
        description="Largest request body on this route (413 beyond); can only be lower "
        "than limits.max_body_bytes, which still applies.",
    )
    validation: Validation | None = Field(
        default=None,
        description="Check requests against an OpenAPI document or a JSON Schema.",
    )
    compress: CompressSetting = Field(
        default=None,
        description="Compress answers (true for the defaults, false for none); replaces the "
        "site's compress.",
    )

    @field_validator("methods")
    @classmethod
    def _dedupe_methods(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else list(dict.fromkeys(value))

    @model_validator(mode="wrap")
    @classmethod
    def _rules(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return validate_with_rules(cls.__name__, data, handler, route_rules)


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
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.cert, self.key)
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
            raise ValueError(
                f"cannot load the certificate {redact(self.cert)} with the key "
                f"{redact(self.key)}: {reason}"
            ) from None
        return self


class Hsts(_Model):
    """Strict-Transport-Security sent over HTTPS."""

    max_age: Duration = Field(
        default=365 * 86400.0, gt=0, description="How long browsers remember to use HTTPS only."
    )
    include_subdomains: bool = Field(
        default=False, description="Apply to every subdomain of the site's hosts as well."
    )
    preload: bool = Field(
        default=False,
        description="Ask for inclusion in browsers' preload lists (needs max_age >= 1y and "
        "include_subdomains).",
    )


_TLS_HINT = "expected off, internal, auto or {cert: FILE, key: FILE}"


class Site(_Model):
    """A set of host names and the routes served for them."""

    hosts: Annotated[list[HostPattern], BeforeValidator(one_or_many)] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        description="Host names served by this site: an exact name or IP, '*.example.test' "
        "for any name ending in '.example.test', or '*' for any host.",
    )
    routes: list[Route] = Field(
        min_length=1,
        description="Routes; exact paths win, then the longest prefix, then "
        "regular expressions in file order.",
    )
    tls: Literal["off", "internal", "auto"] | TlsFiles | None = Field(
        default=None,
        description="'internal' (local CA), {cert: FILE, key: FILE}, 'auto' (ACME for public "
        "names, the local CA for local ones) or 'off'. Default: 'auto' when an https "
        "listener exists, else 'off'.",
    )
    hsts: bool | Hsts = Field(
        default=False,
        description="Send Strict-Transport-Security over HTTPS; true means max-age one year.",
    )
    # traffic policies: defaults for the site's routes (docs/policies.md)
    ip_rules: IpRules | None = Field(
        default=None, description="Client networks allowed or denied on every route."
    )
    cors: Cors | None = Field(default=None, description="CORS for every route.")
    headers: Headers | None = Field(
        default=None, description="Header rules applied on every route, before the route's."
    )
    security_headers: Annotated[
        SecurityHeaders | None, BeforeValidator(security_headers_value)
    ] = Field(
        default=None, description="Browser security fields preset for every route."
    )
    compress: CompressSetting = Field(
        default=None, description="Compress answers on every route (true for the defaults)."
    )

    @field_validator("tls", mode="wrap")
    @classmethod
    def _tls(cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        # one clear message instead of one per member of the union
        if value is None:
            return None
        if value is False:
            return "off"  # YAML 1.1 reads a bare `off` as false
        if isinstance(value, str):
            mode = value.strip().lower()
            if mode not in ("off", "internal", "auto"):
                raise ValueError(f"{_TLS_HINT}, got {show(value)}")
            return mode
        if isinstance(value, dict | TlsFiles):
            return TlsFiles.model_validate(value, context=info.context)
        raise ValueError(f"{_TLS_HINT}, got {show(value)}")

    @model_validator(mode="wrap")
    @classmethod
    def _rules(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return validate_with_rules(cls.__name__, data, handler, site_rules)


class Limits(_Model):
    """Request size and connection limits."""

    max_header_bytes: Size = Field(
        default=16 * 1024,
        gt=0,
        description="Largest request head (request line and headers); "
        "beyond it the client gets 431.",
    )
    max_uri_bytes: Size = Field(
        default=8 * 1024, gt=0, description="Longest request target; beyond it the client gets 414."
    )
    max_body_bytes: Size = Field(
        default=10 * 1024 * 1024,
        ge=0,
        description="Largest request body; beyond it the client gets 413. 0 means unlimited.",
    )
    max_connections: int = Field(
        default=10000, ge=1, description="Simultaneous client connections per worker."
    )


class ServerTimeouts(_Model):
    """Time limits for clients."""

    header: Duration = Field(
        default=10.0,
        gt=0,
        description="Time allowed to receive a request's head (slowloris defence).",
    )
    body: Duration = Field(
        default=60.0, gt=0, description="Longest gap allowed between two reads of a request body."
    )
    keepalive: Duration = Field(
        default=75.0,
        gt=0,
        description="How long an idle client keep-alive connection is kept open.",
    )
    send: Duration = Field(
        default=60.0,
        gt=0,
        description="Longest time a client may read nothing of a response it is owed "
        "(while the gateway waits for it to make room); past it the connection is closed.",
    )


class Http2(_Model):
    """HTTP/2 on the HTTPS listeners (negotiated with ALPN; no cleartext h2c)."""

    enabled: bool = Field(
        default=True,
        description="Offer h2 in ALPN on HTTPS listeners; false serves HTTP/1.1 only.",
    )
    max_concurrent_streams: int = Field(
        default=100,
        ge=1,
        le=10000,
        description="Streams a client may have open at once on one connection "
        "(SETTINGS_MAX_CONCURRENT_STREAMS).",
    )
    max_requests: int = Field(
        default=10000,
        ge=1,
        description="Streams served on one connection before a graceful GOAWAY asks the "
        "client to open a new one.",
    )
    initial_window: Size = Field(
        default=256 * 1024,
        ge=65535,
        le=2**31 - 1,
        description="Per-stream receive window for request bodies: how much a client may "
        "send before the gateway has passed it on upstream.",
    )
    max_resets: int = Field(
        default=200,
        ge=1,
        description="Streams a client may cancel before they are answered within 10 seconds; "
        "beyond it the connection is closed with GOAWAY(ENHANCE_YOUR_CALM) "
        "(rapid reset defence).",
    )
    max_uploads: int = Field(
        default=16,
        ge=1,
        le=10000,
        description="Streams of one connection whose request body is still arriving that "
        "are forwarded at once (each holds an upstream connection); the others wait, their "
        "bodies held within their flow-control windows, until one of these completes.",
    )


def _off_from_yaml(value: Any) -> Any:
    # YAML 1.1 reads a bare `off` as false.
    return "off" if value is False else value


class AccessLog(_Model):
    """One line per request."""

    format: Annotated[Literal["json", "combined", "off"], BeforeValidator(_off_from_yaml)] = Field(
        default="json",
        description="'json' (one object per line), 'combined' (Apache style) or 'off'.",
    )
    path: str = Field(
        default="stdout",
        min_length=1,
        description="'stdout', 'stderr' or a file path (relative paths resolve against the "
        "config file's directory).",
    )

    @field_validator("path")
    @classmethod
    def _resolve_path(cls, value: str, info: ValidationInfo) -> str:
        if value in ("stdout", "stderr"):
            return value
        path = Path(value).expanduser()
        return str((path if path.is_absolute() else base_dir(info) / path).resolve())


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


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


class Config(_Model):
    """A whole bastion configuration file."""

    listen: Listen = Field(default_factory=lambda: Listen(), description="Listen addresses.")
    sites: list[Site] = Field(
        min_length=1,
        description="Sites, chosen by the request's host: an exact name first, then the "
        "longest matching '*.suffix', then '*'.",
    )
    limits: Limits = Field(default_factory=lambda: Limits(), description="Request size limits.")
    timeouts: ServerTimeouts = Field(
        default_factory=lambda: ServerTimeouts(), description="Client time limits."
    )
    access_log: AccessLog = Field(default_factory=lambda: AccessLog(), description="Access log.")
    http2: Http2 = Field(
        default_factory=lambda: Http2(), description="HTTP/2 on the HTTPS listeners."
    )
    trusted_proxies: list[Network] = Field(
        default_factory=list,
        description="Addresses or CIDRs of proxies in front of bastion whose "
        "X-Forwarded-For is believed.",
    )
    workers: WorkerCount = Field(
        default=1, ge=1, description="Worker processes; 'auto' means one per CPU."
    )
    shutdown_timeout: Duration = Field(
        default=30.0, description="On shutdown, how long in-flight requests may take to finish."
    )
    pid_file: RelativePath | None = Field(
        default=None, description="Write the process id to this file; null writes none."
    )
    watch: bool = Field(default=False, description="Reload when the config file changes.")
    data_dir: RelativePath | None = Field(
        default=None,
        description="Where the local CA and certificates are kept; null means "
        "$BASTION_DATA_DIR, else /var/lib/bastion for root, else ~/.local/share/bastion.",
    )
    acme: Acme = Field(
        default_factory=lambda: Acme(),
        description="ACME settings for certificates of public names (tls: auto).",
    )
    tls: TlsPolicy = Field(
        default_factory=lambda: TlsPolicy(),
        description="TLS policy of the https listeners (profile, certificate file watching).",
    )
    cache: Cache = Field(
        default_factory=lambda: Cache(),
        description="The response cache used by routes with `cache:`.",
    )
    log_level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)] = (
        Field(default="info", description="Lowest level of the server's own log messages.")
    )

    @model_validator(mode="wrap")
    @classmethod
    def _rules(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return validate_with_rules(cls.__name__, data, handler, config_rules)
