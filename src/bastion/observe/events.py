"""Counts of what goes wrong, as opposed to the traffic: upstream errors by kind, auth and
rate-limit refusals, ACME orders and config reloads.

One `EventCounters` per worker process. It reaches the places that count through what
already flows to them: the proxy's `PoolRegistry` carries it (its pools hand it to their
exchanges' error paths), the plan's `BuildContext` passes it to the auth and rate-limit
policies, the worker gives it to its certificate manager and counts its reloads. Every
count is made on a failure path only: a request that goes well never touches it.

Labels are bounded: pool and endpoint names come from the config, the error kinds, auth
schemes and reasons are the fixed sets below (a refusal's detail text never becomes a
label), so the number of series does not grow with traffic.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

__all__ = [
    "AUTH_REASONS",
    "UPSTREAM_ERROR_KINDS",
    "EventCounters",
    "auth_reason",
    "merge",
]

# connect: the connection was refused or not made within timeouts.connect;
# timeout: the upstream did not answer (read, send or total timeout);
# reset: the connection was lost before the answer was complete;
# invalid: the upstream's answer could not be parsed; 5xx: it answered with a 5xx.
UPSTREAM_ERROR_KINDS = ("connect", "timeout", "reset", "invalid", "5xx")

# missing: no credential of the route's kind; invalid: unknown, revoked or badly signed;
# expired: a token past its exp; malformed: an unreadable or ambiguous credential (400);
# forbidden: a known client not allowed on the route (403); unavailable: the check itself
# could not be made (JWKS, forward-auth service down: 5xx).
AUTH_REASONS = ("missing", "invalid", "expired", "malformed", "forbidden", "unavailable")


def auth_reason(status: int, reason: str) -> str:
    """The reason label of an auth refusal: the one its policy named, else its status's."""
    if reason in AUTH_REASONS:
        return reason
    if status == 403:
        return "forbidden"
    if status == 400:
        return "malformed"
    if status >= 500:
        return "unavailable"
    return "invalid"


class EventCounters:
    """This worker's event counts. Plain dicts of label tuples: bumped on failure paths,
    read once a second (`snapshot`) and at each scrape."""

    def __init__(self) -> None:
        self.upstream_errors: Counter[tuple[str, str, str]] = Counter()
        self.auth_failures: Counter[tuple[str, str, str]] = Counter()
        self.rate_limit_refusals: Counter[tuple[str, str]] = Counter()
        self.acme_orders: Counter[str] = Counter()
        self.reloads: Counter[str] = Counter()
        self.last_reload_success: float | None = None
        # the shared limit store (Redis): what requests did while it was unavailable
        # (deny, allow, local, local_refused), and whether it is unavailable now (0 or 1)
        self.store_fallbacks: Counter[str] = Counter()
        self.store_unavailable = 0

    # ------------------------------------------------------------------ counting
    def upstream_error(self, pool: str, endpoint: str, kind: str) -> None:
        self.upstream_errors[(pool, endpoint, kind)] += 1

    def auth_failure(self, route: str, scheme: str, status: int, reason: str) -> None:
        self.auth_failures[(route, scheme, auth_reason(status, reason))] += 1

    def rate_limit_refusal(self, route: str, limit: str) -> None:
        self.rate_limit_refusals[(route, "quota" if limit == "quota" else "rate")] += 1

    def store_fallback(self, decision: str) -> None:
        self.store_fallbacks[decision] += 1

    def store_state(self, unavailable: bool) -> None:
        """Told by the limit store's breaker when it opens (True) and closes (False)."""
        self.store_unavailable = int(unavailable)

    def acme_order(self, issued: bool) -> None:
        self.acme_orders["issued" if issued else "failed"] += 1

    def reload(self, success: bool, when: float) -> None:
        self.reloads["success" if success else "failure"] += 1
        if success:
            self.last_reload_success = when

    # ------------------------------------------------------------------ reading
    def snapshot(self) -> dict[str, Any]:
        """The counts as plain JSON (label tuples become lists)."""
        return {
            "upstream_errors": [[*k, n] for k, n in self.upstream_errors.items()],
            "auth_failures": [[*k, n] for k, n in self.auth_failures.items()],
            "rate_limit_refusals": [[*k, n] for k, n in self.rate_limit_refusals.items()],
            "acme_orders": dict(self.acme_orders),
            "reloads": dict(self.reloads),
            "last_reload_success": self.last_reload_success,
            "store_fallbacks": dict(self.store_fallbacks),
            "store_unavailable": self.store_unavailable,
        }


def merge(snapshots: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The sum of several workers' snapshots (the latest reload success: the latest of
    theirs). A malformed snapshot (another version's file) is skipped, not fatal."""
    errors: Counter[tuple[str, ...]] = Counter()
    auth: Counter[tuple[str, ...]] = Counter()
    limits: Counter[tuple[str, ...]] = Counter()
    acme: Counter[str] = Counter()
    reloads: Counter[str] = Counter()
    last: float | None = None
    fallbacks: Counter[str] = Counter()
    unavailable = 0
    for snap in snapshots:
        try:
            for into, rows in (
                (errors, snap["upstream_errors"]),
                (auth, snap["auth_failures"]),
                (limits, snap["rate_limit_refusals"]),
            ):
                for row in rows:
                    into[tuple(str(v) for v in row[:-1])] += int(row[-1])
            acme.update({str(k): int(v) for k, v in snap["acme_orders"].items()})
            reloads.update({str(k): int(v) for k, v in snap["reloads"].items()})
            theirs = snap["last_reload_success"]
            # (absent from the snapshots of a version before them)
            fallbacks.update({str(k): int(v) for k, v in snap.get("store_fallbacks", {}).items()})
            unavailable += int(snap.get("store_unavailable", 0))
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        if isinstance(theirs, int | float) and (last is None or theirs > last):
            last = float(theirs)
    return {
        "upstream_errors": errors,
        "auth_failures": auth,
        "rate_limit_refusals": limits,
        "acme_orders": acme,
        "reloads": reloads,
        "last_reload_success": last,
        "store_fallbacks": fallbacks,
        "store_unavailable": unavailable,
    }
