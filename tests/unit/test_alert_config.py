"""The alerts: section: defaults, every mistake at its line and key, secrets never quoted."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config import ConfigError, load_config

SITE = "sites:\n  - routes:\n      - path: /\n        respond: {status: 200}\n"


def load(tmp_path: Path, alerts: str) -> object:
    path = tmp_path / "bastion.yaml"
    path.write_text(SITE + alerts, encoding="utf-8")
    return load_config(path)


def report(tmp_path: Path, alerts: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, alerts)
    return str(info.value).replace(f"{tmp_path}/", "").splitlines()


def test_defaults_and_units(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_SECRET", "s3cr3t-value-of-the-hook")
    loaded = load(
        tmp_path,
        """\
alerts:
  channels:
    hook: {webhook: {url: "https://hooks.example.test/bastion", secret: "${HOOK_SECRET}"}}
  rules:
    api-5xx: {kind: error_rate, threshold: 2%}
    slow: {kind: latency, threshold: 750ms, of: upstream, evaluation_periods: 5}
    quota-80: {kind: quota}
    limited: {kind: rate_limited, share: 10%}
    pool: {kind: pool_unhealthy, down_for: 2m}
""",
    )
    alerts = loaded.config.alerts  # type: ignore[attr-defined]
    hook = alerts.channels["hook"]
    assert hook.type == "webhook"
    assert hook.webhook.timeout == 10.0
    assert hook.webhook.secret.get_secret_value() == "s3cr3t-value-of-the-hook"
    assert "s3cr3t" not in repr(alerts)  # a SecretStr prints as stars
    rule = alerts.rules["api-5xx"]
    assert (rule.threshold, rule.status_class, rule.min_requests) == (0.02, "5xx", 20)
    assert (rule.period, rule.evaluation_periods, rule.needed, rule.missing_data) == (
        60.0,
        1,
        1,
        "missing",
    )
    assert rule.channels is None  # every channel
    slow = alerts.rules["slow"]
    assert (slow.threshold, slow.percentile, slow.of, slow.needed) == (0.75, "p95", "upstream", 5)
    assert alerts.rules["quota-80"].threshold == 80.0
    assert alerts.rules["limited"].share == pytest.approx(0.1)
    assert alerts.rules["pool"].down_for == 120.0


def test_every_mistake_with_its_line_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SMTP_PASSWORD", raising=False)
    lines = report(
        tmp_path,
        """\
alerts:
  channels:
    hook:
      webhook: {url: "ftp://hooks.example.test"}
    mail:
      email:
        host: smtp.example.test
        username: bastion
        password: "${SMTP_PASSWORD}"
        sender: bastion@example.test
        to: [ops@example.test]
    both:
      slack: {url: "https://hooks.slack.test/x"}
      webhook: {url: "https://hooks.example.test/y"}
  rules:
    api-5xx:
      kind: error_rate
      channels: [hook, pager]
    slow:
      kind: latency
      status_class: 4xx
    typo:
      kind: latncy
    quota:
      kind: quota
      threshold: 150
    nofm:
      kind: no_traffic
      evaluation_periods: 2
      datapoints_to_alarm: 3
    spike:
      kind: rate_limited
""",
    )
    assert lines == [
        "bastion.yaml:8: alerts.channels.hook.webhook.url: "
        "expected an http:// or https:// URL with a host",
        "bastion.yaml:13: alerts.channels.mail.email.password: "
        "environment variable SMTP_PASSWORD is not set",
        "bastion.yaml:16: alerts.channels.both: "
        "a channel needs exactly one of webhook, slack, email; this one has webhook and slack",
        "bastion.yaml:22: alerts.rules.api-5xx.channels[1]: "
        "unknown channel 'pager' (alerts.channels: hook, mail, both)",
        "bastion.yaml:25: alerts.rules.slow.status_class: "
        "does not apply to kind latency (its own keys: of, percentile, route, threshold)",
        "bastion.yaml:27: alerts.rules.typo.kind: expected one of 'error_rate', 'latency', "
        "'pool_unhealthy', 'certificate_expiry', 'renewal_failed', 'quota', 'rate_limited', "
        "'no_traffic', 'reload_failed', 'store_fallback', got 'latncy'",
        "bastion.yaml:30: alerts.rules.quota.threshold: "
        "expected a percentage of the quota above 0 and at most 100, got 150",
        "bastion.yaml:34: alerts.rules.nofm.datapoints_to_alarm: 3 breaching periods out of "
        "evaluation_periods 2 can never happen: give at most evaluation_periods",
        "bastion.yaml:35: alerts.rules.spike: "
        "a rate_limited rule needs threshold (429s per period) or share",
    ]


def test_password_needs_starttls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "pw-never-shown-0123")
    lines = report(
        tmp_path,
        """\
alerts:
  channels:
    mail:
      email: {host: smtp.example.test, starttls: false, username: u,
              password: "${SMTP_PASSWORD}", sender: a@example.test, to: [b@example.test]}
""",
    )
    assert lines == [
        "bastion.yaml:8: alerts.channels.mail.email: AUTH without starttls would send the "
        "password in clear; set starttls: true"
    ]


def test_a_secret_is_never_quoted_in_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "T0KEN-in-the-slack-url-9876"
    monkeypatch.setenv("SLACK_URL", f"hooks.slack.test/services/{token}")  # no scheme
    monkeypatch.setenv("HOOK_SECRET", "hmac-key-never-shown-42")
    lines = report(
        tmp_path,
        """\
alerts:
  channels:
    team: {slack: {url: "${SLACK_URL}"}}
    hook: {webhook: {url: "https://h.example.test/", secret: "${HOOK_SECRET}", timeout: -1}}
  rules:
    r: {kind: no_traffic, threshold: "${HOOK_SECRET}"}
""",
    )
    text = "\n".join(lines)
    assert "team.slack.url: expected an http:// or https:// URL with a host" in text
    assert "rules.r.threshold: does not apply to kind no_traffic" in text
    assert token not in text and "hmac-key-never-shown-42" not in text
