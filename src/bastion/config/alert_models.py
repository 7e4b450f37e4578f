"""Alerts: named notification channels and named rules evaluated like CloudWatch alarms.

A channel is a mapping with exactly one of ``webhook``, ``slack`` or ``email``. A rule has a
``kind`` (what it watches), its threshold, a period, N-of-M (``datapoints_to_alarm`` of
``evaluation_periods``) and a missing-data policy. Which keys a rule may carry depends on its
kind; a key of another kind is an error at its own line, as is a rule naming a channel that
does not exist. Secrets (the webhook's HMAC secret, the SMTP password, the Slack URL, which
holds its token) are ``SecretStr``: never printed, and hidden from error messages.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from bastion.config.plain import AlertRuleNeeds, ChannelType
from bastion.config.rules import Problem, validate_with_rules
from bastion.config.show import show
from bastion.config.types import Duration, RelativePath
from bastion.config.units import parse_duration

__all__ = [
    "KIND_KEYS",
    "RULE_KINDS",
    "AlertChannel",
    "AlertRule",
    "Alerts",
    "EmailChannel",
    "SlackChannel",
    "WebhookChannel",
]

RuleKind = Literal[
    "error_rate",
    "latency",
    "pool_unhealthy",
    "certificate_expiry",
    "renewal_failed",
    "quota",
    "rate_limited",
    "no_traffic",
    "reload_failed",
    "store_fallback",
]
RULE_KINDS: tuple[str, ...] = RuleKind.__args__  # type: ignore[attr-defined]

KIND_KEYS: dict[str, frozenset[str]] = {
    "error_rate": frozenset({"threshold", "status_class", "min_requests", "route"}),
    "latency": frozenset({"threshold", "percentile", "of", "route"}),
    "pool_unhealthy": frozenset({"pool", "down_for"}),
    "certificate_expiry": frozenset({"days"}),
    "renewal_failed": frozenset(),
    "quota": frozenset({"threshold", "consumer"}),
    "rate_limited": frozenset({"threshold", "share", "min_requests", "route"}),
    "no_traffic": frozenset({"route"}),
    "reload_failed": frozenset(),
    "store_fallback": frozenset(),
}
"""The keys of each kind beyond those every rule has."""

# the threshold a kind uses when the rule gives none (None: the rule must give one)
_DEFAULT_THRESHOLD: dict[str, float] = {"error_rate": 0.05, "latency": 1.0, "quota": 80.0}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # the URL may hold a token (Slack's does): say what is wrong, never quote it
        raise ValueError("expected an http:// or https:// URL with a host")
    return value


class WebhookChannel(_Model):
    """A JSON POST to a URL, signed with HMAC-SHA256 when a secret is given."""

    url: str = Field(
        description="Where the JSON notification is POSTed (https:// checked against the "
        "system's trust store, or `ca`)."
    )
    secret: SecretStr | None = Field(
        default=None,
        description="HMAC-SHA256 key of the X-Bastion-Signature header; write it as ${ENV_VAR}. "
        "null sends no signature.",
    )
    timeout: Duration = Field(
        default=10.0, gt=0, description="Time allowed for one delivery attempt."
    )
    ca: RelativePath | None = Field(
        default=None,
        description="PEM file of the CA to trust for an https URL instead of the system's "
        "trust store (a private CA); null uses the system's.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)


class SlackChannel(_Model):
    """A Slack-compatible incoming webhook: a POST of {"text": ...}."""

    url: SecretStr = Field(
        description="The incoming-webhook URL; it holds its token, so write it as ${ENV_VAR}."
    )
    timeout: Duration = Field(
        default=10.0, gt=0, description="Time allowed for one delivery attempt."
    )
    ca: RelativePath | None = Field(
        default=None,
        description="PEM file of the CA to trust instead of the system's trust store; null "
        "uses the system's.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        _http_url(value.get_secret_value())
        return value


class EmailChannel(_Model):
    """Mail over SMTP, with STARTTLS and AUTH when configured."""

    host: str = Field(min_length=1, description="SMTP server (a relay or submission server).")
    port: int = Field(default=587, ge=1, le=65535, description="SMTP port; 587 is mail submission.")
    starttls: bool = Field(
        default=True,
        description="Upgrade the connection with STARTTLS (the server's certificate is checked) "
        "before any login or mail; false sends in clear (a local relay only).",
    )
    username: str | None = Field(
        default=None, description="AUTH user name; null sends without AUTH."
    )
    password: SecretStr | None = Field(
        default=None, description="AUTH password, with username; write it as ${ENV_VAR}."
    )
    sender: str = Field(min_length=3, description="The From address of the notifications.")
    to: list[str] = Field(min_length=1, description="Recipient addresses.")
    timeout: Duration = Field(
        default=30.0, gt=0, description="Time allowed for one delivery attempt."
    )
    ca: RelativePath | None = Field(
        default=None,
        description="PEM file of the CA to trust for STARTTLS instead of the system's trust "
        "store; null uses the system's.",
    )

    @field_validator("sender", "to")
    @classmethod
    def _addresses(cls, value: Any) -> Any:
        for address in [value] if isinstance(value, str) else value:
            if "@" not in address or any(c in address for c in "\r\n<>,"):
                raise ValueError(
                    f"expected a mail address like ops@example.com, got {show(address)}"
                )
        return value

    @model_validator(mode="after")
    def _auth(self) -> EmailChannel:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password are given together")
        if self.password is not None and not self.starttls:
            raise ValueError(
                "AUTH without starttls would send the password in clear; set starttls: true"
            )
        return self


class AlertChannel(_Model, ChannelType):
    """Where notifications go: exactly one of webhook, slack, email."""

    webhook: WebhookChannel | None = Field(
        default=None, description="A signed JSON webhook (url, secret, timeout, ca)."
    )
    slack: SlackChannel | None = Field(
        default=None, description="A Slack-compatible incoming webhook (url, timeout, ca)."
    )
    email: EmailChannel | None = Field(
        default=None,
        description="Mail over SMTP (host, port, starttls, username, password, sender, to).",
    )

    @model_validator(mode="after")
    def _one(self) -> AlertChannel:
        given = [k for k in ("webhook", "slack", "email") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "a channel needs exactly one of webhook, slack, email"
                + (f"; this one has {' and '.join(given)}" if given else "")
            )
        return self


def _percent(value: Any) -> Any:
    """``"5%"`` -> 5.0; anything else unchanged (the field's type checks it)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            return float(value.strip()[:-1])
        except ValueError:
            return value
    return value


def _threshold_problems(kind: str, data: dict[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """The rule's data with its threshold in the kind's unit, and what is wrong with it."""
    raw = data.get("threshold")
    share = data.get("share")
    problems: list[Problem] = []
    data = dict(data)
    if kind == "rate_limited" and raw is None and share is None:
        problems.append(((), "a rate_limited rule needs threshold (429s per period) or share"))
    if raw is None or isinstance(raw, bool):
        return data, problems
    try:
        if kind == "error_rate":
            value = _percent(raw)
            value = float(value) / 100 if isinstance(raw, str) else float(value)
            if not 0 < value <= 1:
                raise ValueError
        elif kind == "latency":
            value = parse_duration(raw)
            if value <= 0:
                raise ValueError
        elif kind == "quota":
            value = float(_percent(raw))
            if not 0 < value <= 100:
                raise ValueError
        elif kind == "rate_limited":
            value = float(raw)
            if value < 0 or not value.is_integer():
                raise ValueError
        else:
            return data, problems
    except (TypeError, ValueError):
        expected = {
            "error_rate": "a share of requests above 0 and at most 1, or a percentage like '5%'",
            "latency": "seconds above 0, or a duration like 500ms",
            "quota": "a percentage of the quota above 0 and at most 100",
            "rate_limited": "a whole number of 429 answers per period",
        }[kind]
        problems.append((("threshold",), f"expected {expected}, got {show(raw)}"))
        data.pop("threshold")
        return data, problems
    data["threshold"] = value
    return data, problems


def _rule_problems(data: dict[str, Any]) -> list[Problem]:
    kind = data.get("kind")
    if kind not in KIND_KEYS:
        return []  # reported by the field itself
    problems: list[Problem] = []
    own = KIND_KEYS[kind]
    for key in data:
        if key in _KIND_SPECIFIC and key not in own:
            keys = ", ".join(sorted(own)) or "none"
            problems.append(((key,), f"does not apply to kind {kind} (its own keys: {keys})"))
    share = data.get("share")
    if kind == "rate_limited" and share is not None:
        value = _percent(share)
        scale = 100 if isinstance(share, str) else 1
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and not 0 < value / scale <= 1:
            problems.append(
                (("share",), f"expected a share above 0 and at most 1, got {show(share)}")
            )
    m, n = data.get("evaluation_periods"), data.get("datapoints_to_alarm")
    if isinstance(m, int) and isinstance(n, int) and not isinstance(n, bool) and n > m:
        problems.append(
            (
                ("datapoints_to_alarm",),
                f"{n} breaching periods out of evaluation_periods {m} can never happen: "
                "give at most evaluation_periods",
            )
        )
    return problems


class AlertRule(_Model, AlertRuleNeeds):
    """A rule: what to watch, its threshold, and when it fires (N of M periods)."""

    kind: RuleKind = Field(
        description="What the rule watches: error_rate, latency, pool_unhealthy, "
        "certificate_expiry, renewal_failed, quota, rate_limited, no_traffic, reload_failed."
    )
    threshold: Annotated[
        float | None,
        WithJsonSchema(
            {
                "anyOf": [{"type": "number"}, {"type": "string"}, {"type": "null"}],
                "description": "a number, a percentage like '5%' or a duration like 500ms",
            }
        ),
    ] = Field(
        default=None,
        description="Breaching above this: error_rate a share (0.05 or '5%', default 0.05); "
        "latency seconds (default 1s); quota percent of the limit (default 80); rate_limited "
        "429 answers per period.",
    )
    period: Duration = Field(
        default=60.0, ge=1, description="Length of one evaluation period, in seconds."
    )
    evaluation_periods: int = Field(
        default=1, ge=1, le=1440, description="M: how many recent periods are looked at."
    )
    datapoints_to_alarm: int | None = Field(
        default=None,
        ge=1,
        description="N: how many of the M periods must breach to fire; null means all M.",
    )
    missing_data: Literal["missing", "ok", "breaching", "ignore"] = Field(
        default="missing",
        description="A period without data: missing (not counted; all M missing makes the "
        "state INSUFFICIENT_DATA), ok (not breaching), breaching, ignore (the state is kept).",
    )
    channels: list[str] | None = Field(
        default=None,
        description="Names of the channels notified; null means every channel, [] none "
        "(the state is still shown).",
    )
    route: str | None = Field(
        default=None,
        description="Traffic kinds: the route watched, named by its path as in the metrics "
        "(/api/); null means all traffic.",
    )
    status_class: Literal["5xx", "4xx"] = Field(
        default="5xx", description="error_rate: the status class counted."
    )
    min_requests: int = Field(
        default=20,
        ge=1,
        description="error_rate and rate_limited share: a period with fewer requests does "
        "not breach (too few to judge).",
    )
    percentile: Literal["p50", "p95", "p99"] = Field(
        default="p95", description="latency: the percentile compared."
    )
    of: Literal["total", "upstream"] = Field(
        default="total",
        description="latency: the whole request's time, or the upstream's only.",
    )
    pool: str | None = Field(
        default=None, description="pool_unhealthy: the pool watched; null means any pool."
    )
    down_for: Duration = Field(
        default=60.0,
        ge=0,
        description="pool_unhealthy: how long a pool must have had no healthy endpoint.",
    )
    days: float = Field(
        default=14.0,
        gt=0,
        description="certificate_expiry: breaching when a certificate expires within this "
        "many days.",
    )
    consumer: str | None = Field(
        default=None, description="quota: the consumer watched; null means any consumer."
    )
    share: Annotated[
        float | None,
        WithJsonSchema(
            {
                "anyOf": [{"type": "number"}, {"type": "string"}, {"type": "null"}],
                "description": "a share like 0.1 or a percentage like '10%'",
            }
        ),
    ] = Field(
        default=None,
        description="rate_limited: breaching above this share of requests answered 429 "
        "(0.1 or '10%').",
    )

    @field_validator("share", mode="before")
    @classmethod
    def _share(cls, value: Any) -> Any:
        converted = _percent(value)
        return converted / 100 if isinstance(value, str) and converted is not value else value

    @model_validator(mode="wrap")
    @classmethod
    def _by_kind(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        problems: list[Problem] = []
        if isinstance(data, dict) and data.get("kind") in KIND_KEYS:
            data, problems = _threshold_problems(data["kind"], data)

        def rules(raw: Any) -> list[Problem]:
            return problems + _rule_problems(raw)

        return validate_with_rules(cls.__name__, data, handler, rules)

    @model_validator(mode="after")
    def _defaults(self) -> AlertRule:
        if self.threshold is None and self.kind in _DEFAULT_THRESHOLD:
            object.__setattr__(self, "threshold", _DEFAULT_THRESHOLD[self.kind])
        if self.datapoints_to_alarm is None:
            object.__setattr__(self, "datapoints_to_alarm", self.evaluation_periods)
        return self


_KIND_SPECIFIC = frozenset().union(*KIND_KEYS.values())


def _alerts_problems(data: dict[str, Any]) -> list[Problem]:
    """Names are plain; every channel a rule names exists."""
    problems: list[Problem] = []
    channels = data.get("channels")
    channels = channels if isinstance(channels, dict) else {}
    rules = data.get("rules")
    rules = rules if isinstance(rules, dict) else {}
    for section, items in (("channels", channels), ("rules", rules)):
        for name in items:
            if isinstance(name, str) and not _NAME.fullmatch(name):
                problems.append(
                    (
                        (section, name),
                        f"a name of letters, digits, '.', '_' and '-', got {show(name)}",
                    )
                )
    known = ", ".join(str(c) for c in channels) or "none is configured"
    for name, rule in rules.items():
        named = rule.get("channels") if isinstance(rule, dict) else None
        if not isinstance(named, list):
            continue
        for index, channel in enumerate(named):
            if isinstance(channel, str) and channel not in channels:
                problems.append(
                    (
                        ("rules", name, "channels", index),
                        f"unknown channel {show(channel)} (alerts.channels: {known})",
                    )
                )
    return problems


class Alerts(_Model):
    """Alert rules and the channels they notify."""

    channels: dict[str, AlertChannel] = Field(
        default_factory=dict,
        description="Named notification channels, each one of webhook, slack, email.",
    )
    rules: dict[str, AlertRule] = Field(
        default_factory=dict, description="Named alert rules; none means no alerting."
    )
    instance: str | None = Field(
        default=None,
        description="How notifications name this gateway; null means the machine's host name.",
    )

    @model_validator(mode="wrap")
    @classmethod
    def _names(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return validate_with_rules(cls.__name__, data, handler, _alerts_problems)
