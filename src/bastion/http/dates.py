"""HTTP dates (RFC 9110, section 5.6.7): the IMF-fixdate form a server sends, and the
three forms a recipient must read.

Done here rather than with `email.utils` (`formatdate`, `parsedate_to_datetime`), which
would bring the whole `email` package (about 0.9 MB) into every worker for its Date
header, its cache's Expires and its static files' If-Modified-Since. Day and month names
are fixed English, whatever the locale.
"""

from __future__ import annotations

import datetime
import re
import time

__all__ = ["imf_fixdate", "parse_http_date"]

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def imf_fixdate(seconds: float | None = None) -> str:
    """``Sun, 06 Nov 1994 08:49:37 GMT`` for `seconds` since the epoch (now if None)."""
    t = time.gmtime(seconds)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


_MONTH_NUMBERS = {name.lower(): number for number, name in enumerate(_MONTHS, 1)}
# IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT" and the obsolete RFC 850 form
# "Sunday, 06-Nov-94 08:49:37 GMT"; a numeric zone or UT/UTC is read as email's parser
# read it (some origins send "+0000")
_DAY_FIRST = re.compile(
    r"\s*(?:[A-Za-z]+,\s*)?(\d{1,2})[ -]([A-Za-z]{3})[ -](\d{2,4})\s+"
    r"(\d{1,2}):(\d{2})(?::(\d{2}))?\s*(GMT|UTC?|[+-]\d{4})?\s*$"
)
# asctime "Sun Nov  6 08:49:37 1994"
_ASCTIME = re.compile(
    r"\s*[A-Za-z]{3}\s+([A-Za-z]{3})\s+(\d{1,2})\s+(\d{1,2}):(\d{2}):(\d{2})\s+(\d{4})\s*$"
)


def parse_http_date(value: str) -> float | None:
    """Seconds since the epoch of an HTTP date in any of its three forms; None when
    `value` is not one. A two-digit year is taken within 50 years of now (RFC 9110)."""
    found = _DAY_FIRST.match(value)
    if found is not None:
        day, month, year, hour, minute, second, zone = found.groups()
    else:
        found = _ASCTIME.match(value)
        if found is None:
            return None
        month, day, hour, minute, second, year = found.groups()
        zone = None
    number = _MONTH_NUMBERS.get(month.lower())
    if number is None:
        return None
    full_year = int(year)
    if len(year) == 2:
        this_year = time.gmtime().tm_year
        full_year += this_year - this_year % 100
        if full_year > this_year + 50:
            full_year -= 100
    elif len(year) == 3:
        return None
    offset = 0
    if zone and zone[0] in "+-":
        offset = (int(zone[1:3]) * 60 + int(zone[3:5])) * 60
        if zone[0] == "-":
            offset = -offset
    try:
        moment = datetime.datetime(
            full_year,
            number,
            int(day),
            int(hour),
            int(minute),
            int(second or 0),
            tzinfo=datetime.UTC,
        )
    except ValueError:
        return None
    return moment.timestamp() - offset
