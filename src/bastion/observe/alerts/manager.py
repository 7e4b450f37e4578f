"""The alert manager: evaluates every rule at the end of each of its periods, keeps each
rule's state, and notifies the rule's channels when a rule fires and when it resolves.

Periods are aligned on the epoch (a 60-second rule evaluates [12:00:00, 12:01:00) at
12:01:00 plus ``SETTLE`` seconds, the time the statistics of the period's last second take to
be written). Time comes from the injected ``Clock``; ``run()`` only sleeps between calls of
``evaluate()``, which tests call themselves after moving a ``ManualClock``.

One process of an instance evaluates: the one holding the ``AlertLock`` when one is given
(``leader.py``); the others keep their manager idle and answer ``status()`` with the
leader's published states.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from bastion.clock import SYSTEM_CLOCK, Clock
from bastion.config.show import redact
from bastion.observe.alerts.channels import Notification, with_url_parts
from bastion.observe.alerts.delivery import RETRY_DELAYS, Deliveries
from bastion.observe.alerts.inputs import AlertInputs
from bastion.observe.alerts.leader import AlertLock
from bastion.observe.alerts.measure import (
    TRAFFIC_KINDS,
    Datapoint,
    Period,
    PoolWatch,
    measure,
    threshold_of,
)
from bastion.observe.alerts.state import RuleState

if TYPE_CHECKING:
    from bastion.config.alert_models import AlertRule, Alerts

__all__ = ["SETTLE", "TICK", "AlertManager"]

log = logging.getLogger("bastion.alerts")

SETTLE = 2.0
"""Seconds after a period's end before it is evaluated: its statistics are written by then."""
TICK = 1.0
"""How often ``run()`` looks for periods that ended (and samples pool health)."""
REPUBLISH = 10.0
"""Seconds after which the states are published again though no rule was evaluated (readers
take a snapshot older than 30 s for a dead worker's)."""


class AlertManager:
    def __init__(
        self,
        settings: Alerts,
        inputs: AlertInputs,
        clock: Clock = SYSTEM_CLOCK,
        *,
        secrets: frozenset[str] = frozenset(),
        retry_delays: Sequence[float] = RETRY_DELAYS,
        lock: AlertLock | None = None,
        publish: Callable[[list[dict[str, Any]]], None] | None = None,
        leader_status: Callable[[], list[dict[str, Any]] | None] | None = None,
    ) -> None:
        """``secrets``: values never to show (the config's substituted secrets); ``lock``:
        evaluate only while holding it; ``publish`` is given the states after each
        evaluation by the evaluating process, ``leader_status`` reads them in the others."""
        self.inputs = inputs
        self.clock = clock
        self.hidden = with_url_parts(secrets)
        self.lock = lock
        self.publish = publish
        self.leader_status = leader_status
        self.deliveries = Deliveries(retry_delays, secrets)
        self.watch = PoolWatch()
        self.settings = settings  # no state yet: reconfigure compares no rule with it
        self.states: dict[str, RuleState] = {}
        self._published = -REPUBLISH
        self.reconfigure(settings)

    # ------------------------------------------------------------- settings
    def reconfigure(self, settings: Alerts, secrets: frozenset[str] | None = None) -> None:
        """New settings (a reload): a rule whose settings did not change keeps its state
        and history; a changed one keeps its state but starts its history again (its old
        periods were judged by the old settings); a new one starts INSUFFICIENT_DATA."""
        now = self.clock.time()
        states: dict[str, RuleState] = {}
        for name, rule in settings.rules.items():
            kept = self.states.get(name)
            if kept is not None and self.settings.rules.get(name) == rule:
                states[name] = kept
                continue
            state = RuleState(rule.evaluation_periods, rule.needed, rule.missing_data, since=now)
            if kept is not None:
                # a changed rule starts its history again, but what it announced stands: an
                # incident it reported is resolved or kept, never announced twice
                state.state, state.since, state.announced = kept.state, kept.since, kept.announced
                state.value, state.summary = kept.value, kept.summary
            states[name] = state
        self.settings = settings
        self.states = states
        if secrets is not None:  # the reloaded config's
            self.hidden = with_url_parts(secrets)
            self.deliveries.hidden = secrets
        self.instance = settings.instance or socket.gethostname()

    # ----------------------------------------------------------- evaluation
    def evaluate(self) -> list[Notification]:
        """Evaluate each rule whose period ended (at least ``SETTLE`` seconds ago) and was
        not evaluated yet; start the notifications owed (on the running loop) and return
        them."""
        now = self.clock.time()
        try:
            self.watch.sample(self.inputs, now)
        except Exception:
            log.exception("alerts: cannot read the pools' health")
        sent: list[Notification] = []
        evaluated = False
        for name, rule in self.settings.rules.items():
            state = self.states[name]
            end = math.floor((now - SETTLE) / rule.period) * rule.period
            if state.last_period is not None and end <= state.last_period:
                continue
            evaluated = True
            state.last_period = end
            point = self._measure(name, rule, Period(end - rule.period, end, now))
            state.value = point.value
            state.summary = redact(point.summary, self.hidden)
            owed = state.record(None if point.missing else point.breaching, now)
            if owed is not None:
                note = self._notification(name, rule, state, owed, now)
                self._notify(rule, note)
                sent.append(note)
        if self.publish is not None and (
            evaluated or self.clock.monotonic() - self._published >= REPUBLISH
        ):
            self._published = self.clock.monotonic()
            try:
                self.publish(self.status())
            except OSError as exc:
                log.warning("alerts: cannot publish the alert states: %s", exc)
        return sent

    def _due_traffic(self) -> list[tuple[float, float, str | None]]:
        """The statistics `evaluate` is about to read: (since, until, route) of each rule of
        a traffic kind whose period ended (the same test as `evaluate`'s)."""
        now = self.clock.time()
        due = []
        for name, rule in self.settings.rules.items():
            if rule.kind not in TRAFFIC_KINDS:
                continue
            end = math.floor((now - SETTLE) / rule.period) * rule.period
            last = self.states[name].last_period
            if last is None or end > last:
                due.append((end - rule.period, end, rule.route))
        return due

    def _measure(self, name: str, rule: AlertRule, period: Period) -> Datapoint:
        try:
            return measure(rule, self.inputs, period, self.watch)
        except Exception as exc:
            # a broken input is missing data for this rule, not the end of alerting
            log.warning("alert %s: cannot read its figures: %s", name, exc)
            return Datapoint(None, False, f"cannot read its figures: {type(exc).__name__}")

    def _notification(
        self, name: str, rule: AlertRule, state: RuleState, owed: str, now: float
    ) -> Notification:
        log.log(
            logging.WARNING if owed == "firing" else logging.INFO,
            "alert %s %s: %s",
            name,
            owed,
            state.summary,
        )
        return Notification(
            alert=name,
            state=owed,
            kind=rule.kind,
            value=state.value,
            threshold=threshold_of(rule),
            summary=state.summary,
            time=now,
            instance=self.instance,
        )

    def _notify(self, rule: AlertRule, note: Notification) -> None:
        names = list(self.settings.channels) if rule.channels is None else rule.channels
        for channel in names:
            self.deliveries.start(channel, self.settings.channels[channel], note)

    # ----------------------------------------------------------------- API
    def status(self) -> list[dict[str, Any]]:
        """Each rule's state for the admin API: name, state, since (epoch), value,
        threshold, summary. In a process that does not evaluate, the evaluating one's."""
        if self.lock is not None and not self.lock.held and self.leader_status is not None:
            published = self.leader_status()
            if published is not None:
                return published
        return [
            {
                "name": name,
                "state": state.state,
                "since": state.since,
                "value": state.value,
                "threshold": threshold_of(self.settings.rules[name]),
                "summary": state.summary,
            }
            for name, state in self.states.items()
        ]

    async def run(self) -> None:
        """Evaluate every ``TICK`` seconds until cancelled; in-flight deliveries are
        cancelled with it."""
        refresh = getattr(self.inputs, "refresh", None)  # inputs that read slowly, ahead
        prefetch = getattr(self.inputs, "prefetch", None)  # the statistics, in a thread
        try:
            while True:
                if self.lock is None or self.lock.acquire():
                    try:
                        if refresh is not None:
                            await refresh()
                        due = self._due_traffic() if prefetch is not None else []
                        if prefetch is not None and due:
                            # a statistics file locked by another process waits up to
                            # seconds: never on the loop, which serves the requests
                            await asyncio.to_thread(prefetch, due)
                        self.evaluate()
                    except Exception:
                        log.exception("alerts: evaluation failed; trying again in a second")
                await asyncio.sleep(TICK)
        finally:
            self.deliveries.cancel()
            if self.lock is not None:
                self.lock.release()
