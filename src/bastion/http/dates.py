"""HTTP dates (RFC 9110, section 5.6.7): the IMF-fixdate form a server sends.

Formatted here rather than with `email.utils.formatdate`, which would bring the whole
`email` package (about 1 MB) into every worker for its Date header. Day and month
names are fixed English, whatever the locale.
"""

from __future__ import annotations

import time

__all__ = ["imf_fixdate"]

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def imf_fixdate(seconds: float | None = None) -> str:
    """``Sun, 06 Nov 1994 08:49:37 GMT`` for `seconds` since the epoch (now if None)."""
    t = time.gmtime(seconds)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )
