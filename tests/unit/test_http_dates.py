"""HTTP dates (http/dates.py): the Date header's IMF-fixdate, and the three forms of
RFC 9110 §5.6.7 read without the `email` package, with the same answers as
`email.utils.parsedate_to_datetime` for what origins send."""

from __future__ import annotations

import locale
import time
from email.utils import formatdate, parsedate_to_datetime

import pytest

from bastion.http.dates import imf_fixdate, parse_http_date


def test_the_rfc_example() -> None:
    assert imf_fixdate(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT"


def test_the_same_as_the_standard_library_across_days_months_and_leap_years() -> None:
    for seconds in (0, 951782400, 951868800, 1700000000.75, 4102444799, time.time()):
        assert imf_fixdate(seconds) == formatdate(seconds, usegmt=True)


def test_english_names_whatever_the_locale() -> None:
    before = locale.setlocale(locale.LC_TIME)
    try:
        for name in ("de_DE.UTF-8", "fr_FR.UTF-8"):
            try:
                locale.setlocale(locale.LC_TIME, name)
            except locale.Error:
                continue
            assert imf_fixdate(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT"
    finally:
        locale.setlocale(locale.LC_TIME, before)


SAME_INSTANT = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:49:37 GMT",  # RFC 850
        "Sun Nov  6 08:49:37 1994",  # asctime
        "  Sun, 06 Nov 1994 08:49:37 GMT  ",
        "sun, 06 nov 1994 08:49:37 gmt".replace("gmt", "GMT"),
        "Sun, 06 Nov 1994 09:49:37 +0100",
        "Sun, 06 Nov 1994 08:49:37 UTC",
    ],
)
def test_the_three_forms_and_the_zones_origins_send(value: str) -> None:
    assert parse_http_date(value) == SAME_INSTANT
    assert parsedate_to_datetime(value).timestamp() == SAME_INSTANT


@pytest.mark.parametrize(
    "value",
    ["", "garbage", "0", "-1", "Mon, 32 Jan 2020 00:00:00 GMT", "Sun, 06 Foo 1994 08:49:37 GMT",
     "Sun, 06 Nov 994 08:49:37 GMT", "Sun, 06 Nov 1994 25:00:00 GMT", "Sun Nov  6 08:49:37"],
)  # fmt: skip
def test_anything_else_is_no_date(value: str) -> None:
    assert parse_http_date(value) is None


def test_a_two_digit_year_is_within_fifty_years_of_now() -> None:
    this_year = time.gmtime().tm_year
    soon = (this_year + 10) % 100
    late = (this_year + 60) % 100
    assert time.gmtime(parse_http_date(f"Monday, 01-Jan-{soon:02d} 00:00:00 GMT")).tm_year == (
        this_year + 10
    )
    assert time.gmtime(parse_http_date(f"Monday, 01-Jan-{late:02d} 00:00:00 GMT")).tm_year == (
        this_year + 60 - 100
    )


def test_what_is_sent_reads_back() -> None:
    now = int(time.time())
    assert parse_http_date(imf_fixdate(now)) == now
