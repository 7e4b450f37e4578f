"""The key exchange groups a server context offers: Mozilla's "intermediate" list.

OpenSSL's default list also has secp521r1, X448 and ffdhe groups; the Mozilla profiles
(intermediate and modern alike) list X25519, prime256v1 and secp384r1 only, and scanners
that check a server against them (``sslyze --mozilla_config``) fail it otherwise.

Python's ``ssl`` module up to 3.14 sets one curve at a time (``set_ecdh_curve``);
``SSLContext.set_groups`` (CPython issue 136306) is used where it exists. Elsewhere the list
is set with OpenSSL's own ``SSL_CTX_set1_groups_list`` on the context's ``SSL_CTX``, reached
through the ``_ssl`` extension, so it is the very library Python's ``ssl`` runs on. The
pointer is checked first (OpenSSL must report the options Python reports for that context); when
anything does not fit, the context keeps OpenSSL's defaults and a warning says so.
"""

from __future__ import annotations

import logging
import ssl
import sys
from functools import cache
from typing import Any

__all__ = ["INTERMEDIATE_GROUPS", "set_groups"]

log = logging.getLogger("bastion.tls")

# Mozilla server side TLS, "intermediate" (and "modern") supported groups, in preference order.
INTERMEDIATE_GROUPS = "X25519:prime256v1:secp384r1"

_SSL_CTRL_SET_GROUPS_LIST = 92  # openssl/ssl.h; SSL_CTX_set1_groups_list is a macro over it


@cache
def _openssl() -> Any:
    """libssl's functions, as loaded by the ``_ssl`` extension; None when out of reach."""
    import ctypes  # here: only a TLS context needs it

    try:
        import _ssl

        lib = ctypes.CDLL(_ssl.__file__)
        ctrl = lib.SSL_CTX_ctrl
        get_options = lib.SSL_CTX_get_options
    except (ImportError, OSError, AttributeError):
        return None
    ctrl.restype = ctypes.c_long
    ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_char_p]
    get_options.restype = ctypes.c_uint64
    get_options.argtypes = [ctypes.c_void_p]
    return lib


def _ssl_ctx(context: ssl.SSLContext, lib: Any) -> int | None:
    """The ``SSL_CTX *`` of ``context``: the first field after the object header of
    ``_ssl._SSLContext``; None unless OpenSSL confirms it."""
    import ctypes

    pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not pointer or lib.SSL_CTX_get_options(pointer) != int(context.options):
        return None
    return int(pointer)


def set_groups(context: ssl.SSLContext, groups: str = INTERMEDIATE_GROUPS) -> bool:
    """Offer only ``groups`` (OpenSSL names, ``:``-separated) on ``context``; whether it
    could be done."""
    native = getattr(context, "set_groups", None)
    if native is not None:
        native(groups)
        return True
    # the object layout read below is CPython's up to 3.14 (3.15 has set_groups): on any
    # other interpreter the pointer is not even looked at
    known_layout = sys.implementation.name == "cpython" and sys.version_info < (3, 15)
    lib = _openssl() if known_layout else None
    pointer = None if lib is None else _ssl_ctx(context, lib)
    if lib is None or pointer is None:
        log.warning("tls: cannot restrict the key exchange groups; OpenSSL's defaults stay")
        return False
    if lib.SSL_CTX_ctrl(pointer, _SSL_CTRL_SET_GROUPS_LIST, 0, groups.encode("ascii")) != 1:
        raise ssl.SSLError(f"OpenSSL refused the key exchange groups {groups}")
    return True
