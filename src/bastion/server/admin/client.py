"""The CLI's side of the admin API: `bastion status`, `bastion certs list` and
`bastion cache purge` ask the running gateway through it when `admin.listen` is set, and
fall back to reading (or writing) the data dir when it does not answer.

The token is the config's own (`admin.token`, from the environment the CLI runs in; only
the admin section's placeholders are resolved, so no other secret of the file is needed). The
listener's certificate under TLS is pinned: only a chain of the configured `admin.tls.cert`
file is trusted, so the token is never sent to anyone else.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import logging
import socket
import ssl
from typing import TYPE_CHECKING, Any

from bastion.config.addresses import UnixAddress

if TYPE_CHECKING:
    from bastion.config.admin_models import Admin
    from bastion.tls.certs import CertRow

__all__ = ["AdminClient", "admin_call", "cert_rows_from"]

log = logging.getLogger("bastion")

TIMEOUT = 5.0
_WILDCARD = {None: "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


class AdminError(Exception):
    """The admin API answered, with an error."""


class _Connection(http.client.HTTPConnection):
    """HTTP/1.1 to the admin listener: a TCP address or a Unix socket, TLS or not."""

    def __init__(
        self,
        target: tuple[str, int] | str,
        context: ssl.SSLContext | None,
        timeout: float,
    ) -> None:
        host, port = target if isinstance(target, tuple) else ("localhost", 80)
        super().__init__(host, port, timeout=timeout)
        self.target = target
        self.context = context

    def connect(self) -> None:
        if isinstance(self.target, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(self.target)
        else:
            sock = socket.create_connection(self.target, self.timeout)
        if self.context is not None:
            sock = self.context.wrap_socket(sock, server_hostname=None)
        self.sock = sock


def _pinned(cert_file: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # the certificate itself is the trust anchor
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.load_verify_locations(cafile=cert_file)
    return context


class AdminClient:
    def __init__(self, settings: Admin, timeout: float = TIMEOUT) -> None:
        address = settings.listen
        assert address is not None and settings.token is not None
        self.token = settings.token.get_secret_value()
        self.context = _pinned(settings.tls.cert) if settings.tls is not None else None
        self.timeout = timeout
        self.target: tuple[str, int] | str
        if isinstance(address, UnixAddress):
            self.target = address.path
            self.host = "localhost"
        else:
            host = _WILDCARD.get(address.host, address.host)
            assert host is not None
            self.target = (host, address.port)
            self.host = f"[{host}]:{address.port}" if ":" in host else f"{host}:{address.port}"

    def call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        """The JSON answer. Raises OSError when nothing answers, AdminError when the API
        refuses."""
        conn = _Connection(self.target, self.context, self.timeout)
        headers = {"Host": self.host, "Authorization": f"Bearer {self.token}"}
        body = None
        if payload is not None:
            body = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body, headers)
            response = conn.getresponse()
            data = response.read()
        except http.client.HTTPException as exc:
            raise OSError(f"the admin listener did not answer in HTTP: {exc}") from None
        finally:
            conn.close()
        try:
            decoded = json.loads(data) if data else None
        except ValueError:
            decoded = None
        if response.status >= 300:
            detail = decoded.get("detail") if isinstance(decoded, dict) else None
            raise AdminError(f"{response.status} {detail or response.reason}")
        return decoded


def admin_call(
    settings: Admin | None, method: str, path: str, payload: dict[str, Any] | None = None
) -> Any | None:
    """The admin API's answer, or None when there is none to have (no admin listener
    configured, the gateway not running, or an error, which is logged): the caller then
    does without. ``settings`` are the config's ``admin`` section (read alone by
    ``config.partial``: the CLI needs no other secret of the file)."""
    if settings is None or settings.listen is None or settings.token is None:
        return None
    try:
        return AdminClient(settings).call(method, path, payload)
    except AdminError as exc:
        log.warning("the admin API refused %s %s (%s): using the data dir", method, path, exc)
    except (OSError, ssl.SSLError):
        pass  # not running: the data dir it is
    return None


def cert_rows_from(data: dict[str, Any]) -> list[CertRow]:
    """`/api/certificates`' answer as `bastion certs list` prints rows."""
    from bastion.tls.certs import CertRow

    def moment(epoch: float | None) -> dt.datetime | None:
        return None if epoch is None else dt.datetime.fromtimestamp(epoch, dt.UTC)

    rows = []
    for item in data.get("certificates", []):
        renewal = moment(item.get("next_renewal"))
        rows.append(
            CertRow(
                tuple(item["names"]),
                item["source"],
                item.get("issuer") or "-",
                moment(item.get("not_after")),
                renewal.isoformat(timespec="seconds") if renewal else "-",
                item.get("last_error") or "-",
            )
        )
    return rows
