"""A rule's state from its recent datapoints, as CloudWatch alarms work it out.

The rule looks at its last M periods (``evaluation_periods``) and fires when N of them
(``datapoints_to_alarm``) breach. A period without data is counted by the rule's
``missing_data`` policy:

- ``missing``: not counted; when all M are missing the state is INSUFFICIENT_DATA;
- ``ok``: counted as not breaching;
- ``breaching``: counted as breaching;
- ``ignore``: skipped: the last M periods *with* data are looked at, and a period without
  data leaves the state as it is.

While fewer periods than needed are known either way (a young rule, missing periods), the
state is kept: FIRING needs N breaching periods, OK needs more than M - N clear ones.

A notification is owed when the state enters FIRING ("firing") and when it goes from FIRING
back to OK ("resolved"); notifications strictly alternate, so a rule that went FIRING ->
INSUFFICIENT_DATA -> FIRING is not announced twice, and one that went FIRING ->
INSUFFICIENT_DATA -> OK is resolved then.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["FIRING", "INSUFFICIENT_DATA", "OK", "RuleState", "decide"]

State = Literal["OK", "FIRING", "INSUFFICIENT_DATA"]
OK: State = "OK"
FIRING: State = "FIRING"
INSUFFICIENT_DATA: State = "INSUFFICIENT_DATA"

Outcome = bool | None
"""A period's datapoint: breaching, not breaching, or None (no data)."""


def decide(window: list[Outcome], periods: int, needed: int, policy: str, current: State) -> State:
    """The state after a period, from the outcomes of the last M periods (oldest first; fewer
    than M while the rule is young).

    FIRING when N breach; OK when too many do not breach for N to be reached whatever the
    periods not counted were; otherwise the evidence is inconclusive and the state is kept
    (a 2-of-2 rule with one breaching period so far neither fires nor says OK).
    """
    if policy == "breaching":
        window = [True if o is None else o for o in window]
    elif policy == "ok":
        window = [False if o is None else o for o in window]
    elif policy == "missing" and all(o is None for o in window):
        return INSUFFICIENT_DATA
    breaching = sum(1 for o in window if o is True)
    clear = sum(1 for o in window if o is False)
    if breaching >= needed:
        return FIRING
    if clear > periods - needed:
        return OK
    return current


@dataclass
class RuleState:
    """One rule's evaluation history and state."""

    periods: int
    needed: int
    policy: str
    since: float
    """When the state was entered (epoch)."""
    state: State = INSUFFICIENT_DATA
    value: float | None = None
    summary: str = "not evaluated yet"
    last_period: float | None = None
    """The end of the last period evaluated (epoch)."""
    announced: bool = False
    """Whether the last notification sent was "firing" (so the next one owed is "resolved")."""
    window: deque[Outcome] = field(default_factory=deque)

    def record(self, outcome: Outcome, now: float) -> str | None:
        """Add a period's outcome; return the notification owed ("firing", "resolved") or
        None."""
        if self.policy == "ignore" and outcome is None:
            return None  # the state is kept; the window holds periods with data only
        self.window.append(outcome)
        while len(self.window) > self.periods:
            self.window.popleft()
        new = decide(list(self.window), self.periods, self.needed, self.policy, self.state)
        if new != self.state:
            self.state = new
            self.since = now
        if new == FIRING and not self.announced:
            self.announced = True
            return "firing"
        if new == OK and self.announced:
            self.announced = False
            return "resolved"
        return None
