"""`join_bytes(parts)`: ``b"".join(parts)``, the way the heads are assembled on the request
path (the upstream request head, the response head, a corked batch of writes).

The compiled build has it in C (`http/_join.c`, which says why); the pure build, and any
build without that module, uses ``b"".join`` itself, the twin the tests compare it with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

_join: Callable[[list[bytes]], bytes]
try:
    from bastion.http._join import join as _join
except ImportError:  # the pure build
    _join = b"".join

join_bytes: Final = _join
