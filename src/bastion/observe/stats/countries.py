"""Client addresses to countries, with a MaxMind-format database (`maxminddb`).

Only when `stats.geoip` names a database (GeoLite2-Country, GeoIP2-Country or City, DB-IP's
MMDB files…). Lookups run in the statistics writer's thread, cached per address in a
bounded LRU.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["UNKNOWN", "CountryLookup"]

log = logging.getLogger("bastion.stats")

CACHE_SIZE = 50_000  # distinct client addresses remembered
UNKNOWN = "(unknown)"  # private addresses, and addresses the database does not know


def _code(record: Any) -> str:
    if not isinstance(record, dict):
        return UNKNOWN
    for key in ("country", "registered_country"):
        country = record.get(key)
        if isinstance(country, dict) and isinstance(country.get("iso_code"), str):
            return str(country["iso_code"])
    return UNKNOWN


class CountryLookup:
    """ISO country codes of client addresses from one database file."""

    def __init__(self, path: str, cache_size: int = CACHE_SIZE) -> None:
        import maxminddb

        self.path = path
        self._reader = maxminddb.open_database(path)
        self.country: Callable[[str], str] = functools.lru_cache(maxsize=cache_size)(self._lookup)

    def _lookup(self, address: str) -> str:
        try:
            return _code(self._reader.get(address))
        except ValueError:  # not an address, or IPv6 in an IPv4-only database
            return UNKNOWN
        except RuntimeError:  # maxminddb's InvalidDatabaseError: a corrupt record
            return UNKNOWN

    def count(self, clients: Mapping[str, int]) -> dict[str, int]:
        out: dict[str, int] = {}
        for address, n in clients.items():
            code = self.country(address)
            out[code] = out.get(code, 0) + n
        return out

    def close(self) -> None:
        self._reader.close()


def open_lookup(path: str | None) -> CountryLookup | None:
    """The lookup of `path`, or None (no database configured, or it cannot be read: then
    the statistics go on without countries and the log says why)."""
    if not path:
        return None
    try:
        return CountryLookup(path)
    except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: not a MaxMind DB
        log.warning("stats: cannot read the geoip database %s (%s); no countries", path, exc)
        return None
