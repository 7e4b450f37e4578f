"""The `s3:` route action: objects of an S3-compatible bucket, fetched with signed requests.

The request goes through the proxy's machinery (pooled keep-alive connections, over TLS
for https endpoints, streamed with backpressure); only the request head is ours and the
answer is filtered: S3's own headers (x-amz-*, Server) are dropped, a missing key becomes a
404 (or the configured not_found object), and errors of the gateway's own making
(bad credentials, wrong bucket or region) become a 502 with a log line that says why.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Final
from urllib.parse import unquote

from bastion.config.addresses import UpstreamAddress, parse_endpoint, parse_upstream
from bastion.handlers.sigv4 import Signer, encode_key_path
from bastion.proxy.base import ExchangeHandler
from bastion.proxy.exchange import Exchange

if TYPE_CHECKING:
    from bastion.balance.balancer import Balancer
    from bastion.config.origins import S3
    from bastion.http.downstream import Downstream
    from bastion.http.request import Request
    from bastion.proxy.pool import Pool

__all__ = ["S3Handler", "s3_endpoint"]

log = logging.getLogger("bastion.s3")

# Request fields passed on: ranges and conditionals, so that S3 answers 206/304/412.
_FORWARDED: Final = frozenset(
    (b"range", b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since")
)
# Response fields relayed; framing fields are the exchange's business. Everything else
# (x-amz-request-id, x-amz-meta-*, x-amz-server-side-encryption, Server…) stays inside.
_RELAYED: Final = frozenset(
    (
        b"content-type",
        b"content-length",
        b"content-range",
        b"accept-ranges",
        b"cache-control",
        b"etag",
        b"last-modified",
        b"expires",
        b"content-encoding",
        b"content-disposition",
        b"content-language",
        b"date",
        b"transfer-encoding",
        b"connection",
    )
)
_PASSED: Final = frozenset((200, 206, 304, 412, 416))
_CODE: Final = re.compile(rb"<Code>([^<]{1,64})</Code>")
# S3 error codes that mean "no such object" as far as a visitor is concerned: AccessDenied is
# what S3 answers for a missing key when the credentials may not list the bucket.
_MISSING: Final = frozenset((b"NoSuchKey", b"AccessDenied", b""))
_MISSING_DETAIL: Final = "No object exists at this path."
_ERROR_BODY_LIMIT: Final = 4096


def s3_endpoint(config: S3) -> tuple[UpstreamAddress, str, str]:
    """The address to connect to, the Host it is signed for, and the path before keys
    ("/bucket" for path-style addressing, else empty)."""
    if config.endpoint is None:
        endpoint = parse_endpoint(f"https://s3.{config.region}.amazonaws.com")
        path_style = bool(config.path_style)
    else:
        endpoint = parse_endpoint(config.endpoint)
        path_style = True if config.path_style is None else config.path_style
    if not path_style:
        assert endpoint.host is not None
        default = 443 if endpoint.scheme == "https" else 80
        port = "" if endpoint.port == default else f":{endpoint.port}"
        endpoint = parse_upstream(f"{endpoint.scheme}://{config.bucket}.{endpoint.host}{port}")
    return endpoint, endpoint.authority, "/" + config.bucket if path_style else ""


class S3Handler(ExchangeHandler):
    # what an Exchange reads from its handler: ExchangeHandler's defaults (one endpoint, no
    # retries on statuses, no connection limits, the default limits of an answer's head)
    def __init__(
        self, config: S3, balancer: Balancer, host: str, base: str, strip: str | None
    ) -> None:
        self.balancer = balancer
        pool = balancer.members[0].ep.pool
        self.pool = pool
        self.loop = pool.loop
        self.pools = [pool]
        self.bucket = config.bucket
        self.strip = strip
        self.base = base
        self.prefix = config.prefix
        self.index = config.index
        self.not_found = None if config.not_found is None else config.prefix + config.not_found
        assert config.access_key_id is not None and config.secret_access_key is not None
        token = config.session_token.get_secret_value() if config.session_token else None
        self.signer = Signer(
            config.access_key_id,
            config.secret_access_key.get_secret_value(),
            token,
            config.region,
            host,
        )
        self.connect_timeout = config.timeouts.connect
        self.read_timeout = config.timeouts.read
        self.send_timeout = config.timeouts.send
        self.websocket_idle_timeout = None

    def pick(self) -> Pool:
        return self.pool

    def handle(self, client: Downstream, req: Request) -> None:
        if req.method not in ("GET", "HEAD"):
            client.problem(req, 405, headers=b"Allow: GET, HEAD\r\n")
            return
        if req.has_body:
            client.problem(req, 400, "A GET or HEAD request for an object must not have a body.")
            return
        path = req.path
        if self.strip is not None:
            path = path[len(self.strip) :]
        key = unquote(path.lstrip("/"))  # the canonical path is escaped; keys are text
        if not key or key.endswith("/"):
            if self.index is None:
                client.problem(req, 404, _MISSING_DETAIL)
                return
            key += self.index
        self.fetch(client, req, self.prefix + key, forward=True)

    def fetch(self, client: Downstream, req: Request, key: str, forward: bool) -> None:
        """Ask for `key`; `forward` passes the client's range and conditional fields (not for
        the not_found object, whose 404 must not turn into a 304 or a 206)."""
        path = encode_key_path(self.base + "/" + key)
        parts = [req.method.encode(), b" ", path.encode("ascii"), b" HTTP/1.1\r\n"]
        parts.append(self.signer.header_lines(req.method, path))
        if forward:
            for lname, name, value in req.headers:
                if lname in _FORWARDED:
                    parts.append(name + b": " + value + b"\r\n")
        parts.append(b"X-Request-ID: " + req.request_id.encode("latin-1") + b"\r\n\r\n")
        S3Exchange(self, client, req, key, not forward).start(b"".join(parts))


# compiled with Exchange: a compiled class's methods take as `self` only the classes compiled
# with it (docs/compiled.md)
class S3Exchange(Exchange):
    """An exchange whose answer is filtered and, for errors, replaced."""

    reuse_after_head = True  # object stores never send a body with a HEAD answer

    def __init__(
        self,
        handler: S3Handler,
        client: Downstream,
        req: Request,
        key: str,
        is_not_found: bool,
    ) -> None:
        super().__init__(handler, client, req)
        self.s3 = handler
        self.key = key
        self.is_not_found = is_not_found
        self.error_status = 0
        self.error_body = b""

    def on_response_head(self, status: int) -> None:
        conn = self.upstream
        if conn is not None:
            conn.resp_headers = [h for h in conn.fields() if h[0].lower() in _RELAYED]
        if status < 200 or (status in _PASSED and not (self.is_not_found and status != 200)):
            super().on_response_head(404 if self.is_not_found and status == 200 else status)
            return
        # An error answer: its body is read (bounded) and replaced.
        self.error_status = status
        if self.req.method == "HEAD" and conn is not None:
            keep_alive = conn.parser.should_keep_alive()
            conn.reset_parser()  # llhttp would wait for a body a HEAD answer does not have
            self._finish(keep_alive)

    def on_response_body(self, data: bytes) -> None:
        if not self.error_status:
            super().on_response_body(data)
        elif len(self.error_body) < _ERROR_BODY_LIMIT:
            self.error_body += data[: _ERROR_BODY_LIMIT - len(self.error_body)]

    def end_client(self) -> None:
        status = self.error_status
        if not status:
            self.client.end_response()
            return
        found = _CODE.search(self.error_body)
        code = found.group(1) if found else b""
        if status in (403, 404) and code in _MISSING:
            if code == b"AccessDenied":
                log.debug("s3 bucket %s: access denied to %r: 404", self.s3.bucket, self.key)
            not_found = self.s3.not_found
            if not_found is not None and not self.is_not_found:
                self.s3.fetch(self.client, self.req, not_found, forward=False)
                return
            self.client.problem(self.req, 404, _MISSING_DETAIL)
            return
        log.warning(
            "s3 bucket %s: the endpoint answered %d %s for %r",
            self.s3.bucket,
            status,
            code.decode("latin-1") or "(no error code)",
            self.key,
        )
        self.client.problem(self.req, 502, "The storage backend refused the request.")
