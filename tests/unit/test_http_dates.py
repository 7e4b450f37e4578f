"""The Date header's format (http/dates.py): the IMF-fixdate of RFC 9110."""

from __future__ import annotations

import locale
import time
from email.utils import formatdate

from bastion.http.dates import imf_fixdate


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
