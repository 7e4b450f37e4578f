"""The TLS side of an https:// upstream pool, resolved when the plan is compiled."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from bastion.keymaterial.tls_client import client_context

if TYPE_CHECKING:
    from bastion.config import UpstreamAddress
    from bastion.config.upstream import UpstreamTls

__all__ = ["upstream_tls"]


def upstream_tls(
    tls: UpstreamTls | None, address: UpstreamAddress
) -> tuple[object, ssl.SSLContext, str | None] | None:
    """(settings key, context, server name) for an https:// address, None for the others.

    The name defaults to the URL's host; Python checks an IP address against the
    certificate's IP SANs and sends no SNI for it (RFC 6066 allows names only).
    """
    if address.scheme != "https":
        return None
    if tls is None:
        return (None, client_context(), address.host)
    context = client_context(tls.verify, tls.ca, tls.client_cert, tls.client_key)
    name = tls.server_name.strip().strip("[]") if tls.server_name else address.host
    return (tls, context, name)
