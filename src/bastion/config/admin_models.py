"""The admin listener's settings: where it listens (an address or a Unix socket), the token
every request needs, the Host names it answers to, who may connect, and its TLS.

The rules that read other keys (the admin address may be no site's or metrics' address) are
``admin_rules``, run with the whole file's rules so that the error names ``admin.listen``.
"""

from __future__ import annotations

from ipaddress import ip_network
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    SecretStr,
    WithJsonSchema,
    model_validator,
)

from bastion.config.addresses import (
    UNIX_PREFIX,
    Address,
    AdminAddressValue,
    UnixAddress,
    is_local,
    parse_address,
    parse_hostname,
)
from bastion.config.show import show
from bastion.config.tls_models import TlsFiles
from bastion.config.types import Duration, Network, RelativePath

__all__ = ["MIN_TOKEN_LENGTH", "Admin", "AdminAddress", "UnixAddress", "admin_rules", "is_local"]

MIN_TOKEN_LENGTH = 16
def parse_admin_address(value: object) -> AdminAddressValue:
    """``127.0.0.1:9180``, ``[::1]:9180``, ``:9180`` or ``unix:/absolute/path.sock``."""
    if isinstance(value, Address | UnixAddress):
        return value
    if isinstance(value, str) and value.strip().startswith(UNIX_PREFIX):
        path = value.strip()[len(UNIX_PREFIX) :]
        if not path.startswith("/") or path.endswith("/") or "\0" in path:
            raise ValueError(f"expected unix:/absolute/path.sock, got {show(value)}")
        if len(path.encode()) > 100:  # sun_path holds 108 bytes with its terminator
            raise ValueError(f"the Unix socket path is too long (over 100 bytes): {show(value)}")
        return UnixAddress(path)
    return parse_address(value)


AdminAddress = Annotated[
    AdminAddressValue,
    PlainValidator(parse_admin_address),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "examples": ["127.0.0.1:9180", "unix:/run/bastion.sock"]}),
]


def _host_name(value: Any) -> Any:
    """A Host value the admin accepts: a name or address, with an optional port."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    host, port = text, ""
    if text.startswith("["):
        end = text.find("]")
        host, port = text[: end + 1], text[end + 2 :] if end > 0 else ""
    elif text.count(":") == 1:
        host, port = text.split(":")
    if port and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"port must be a number from 1 to 65535, got {show(value)}")
    if not host.startswith("["):
        parse_hostname(host)
    return text


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class Admin(_Model):
    """The admin listener: the dashboard and the JSON API."""

    listen: AdminAddress | None = Field(
        default=None,
        description="Address of the admin listener (host:port or unix:/path.sock); null: no "
        "admin listener. Anything but a loopback address or a Unix socket needs admin.tls.",
    )
    token: SecretStr | None = Field(
        default=None,
        description=f"The admin token (at least {MIN_TOKEN_LENGTH} characters), required "
        "with listen; write it as ${ENV} or ${file:path}, never in the file itself. Changing "
        "it ends every login session.",
    )
    hosts: list[Annotated[str, BeforeValidator(_host_name)]] = Field(
        default_factory=list,
        description="Host header values accepted besides the listen address and localhost "
        "names (the name the admin is reached under through a tunnel or proxy); a name "
        "without a port matches any port.",
    )
    allow: list[Network] = Field(
        default_factory=lambda: [ip_network("127.0.0.1/32"), ip_network("::1/128")],
        description="Client addresses or CIDRs that may connect (TCP listeners); others get "
        "403 before any authentication.",
    )
    tls: TlsFiles | None = Field(
        default=None,
        description="Certificate and key files of the admin listener (HTTPS); required "
        "unless it listens on a loopback address or a Unix socket.",
    )
    session_lifetime: Duration = Field(
        default=12 * 3600.0,
        gt=0,
        description="How long a login session (the dashboard's cookie) lasts.",
    )

    dashboard: RelativePath | None = Field(
        default=None,
        description="Directory of the dashboard's files (index.html and what it loads); "
        "null: the dashboard shipped with bastion.",
    )

    @model_validator(mode="after")
    def _safe(self) -> Admin:
        if self.listen is None:
            return self
        token = self.token.get_secret_value() if self.token is not None else ""
        if not token:
            raise ValueError("admin.token is required with admin.listen (write it as ${ENV})")
        if len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"admin.token is too short: it needs at least {MIN_TOKEN_LENGTH} characters"
            )
        if self.tls is None and not is_local(self.listen):
            raise ValueError(
                f"admin.tls is required: admin.listen {show(str(self.listen))} is reachable "
                "from other machines, and the token would cross the network in clear text "
                "(set admin.tls: {cert: FILE, key: FILE}, or listen on 127.0.0.1 or a "
                "unix: socket)"
            )
        return self


def _addresses(value: Any) -> list[str]:
    found = []
    for item in value if isinstance(value, list) else [value]:
        try:
            found.append(str(parse_admin_address(item)))
        except ValueError:
            continue  # reported by the field's own check
    return found


def admin_rules(config: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """The admin listener has an address of its own: on a site's or the metrics', one of
    them would not be served, or the admin would be served as a site."""
    admin = config.get("admin")
    if not isinstance(admin, dict) or admin.get("listen") is None:
        return []
    own = _addresses(admin["listen"])
    if not own:
        return []
    listen = config.get("listen")
    listen = listen if isinstance(listen, dict) else {}
    metrics = config.get("metrics")
    taken = {
        "listen.http": _addresses(listen.get("http", "127.0.0.1:8080")),
        "listen.https": _addresses(listen.get("https", [])),
        "metrics.listen": _addresses(metrics.get("listen")) if isinstance(metrics, dict) else [],
    }
    for key, addresses in taken.items():
        if own[0] in addresses:
            return [
                (
                    ("admin", "listen"),
                    f"{show(own[0])} is also {key}: the admin listener needs an address of its own",
                )
            ]
    return []
