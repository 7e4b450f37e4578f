"""Alert notifications on real local receivers: an HTTP(S) server checking the webhook's body
and HMAC signature, a Slack-format receiver, and aiosmtpd requiring STARTTLS and AUTH; the
manager fires and resolves once each on them; `bastion alerts test` in a subprocess; no
secret in logs, status or output."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from bastion.clock import ManualClock
from bastion.config import load_config
from bastion.config.alert_models import Alerts
from bastion.observe.alerts import AlertManager, PoolHealth
from bastion.observe.alerts.manager import SETTLE
from conftest import free_port
from tlsbackend import TestCA

HOOK_SECRET = "hook-hmac-key-Zq81xw"
SMTP_PASSWORD = "smtp-pass-Kd92mv"
SLACK_TOKEN = "T000-slack-token-Hh37"
SECRETS = (HOOK_SECRET, SMTP_PASSWORD, SLACK_TOKEN)
START = 1_800_000_000.0


# ------------------------------------------------------------------ receivers
class Receiver:
    """An HTTP (or HTTPS) server on 127.0.0.1 recording each POST; it answers the statuses of
    ``answers`` in turn, then 200 (with ``echo``, a reason phrase quoting the request's path,
    as careless receivers do)."""

    def __init__(
        self,
        answers: list[int] | None = None,
        tls: tuple[Path, Path] | None = None,
        echo: bool = False,
    ):
        self.got: list[tuple[str, dict[str, str], bytes]] = []
        self.answers = list(answers or [])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.got.append((self.path, headers, body))
                status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status, f"no hook at {self.path}" if echo else None)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    """aiosmtpd on 127.0.0.1 that requires STARTTLS, then AUTH (with the given mechanisms)."""

    def __init__(self, cert: Path, key: Path, mechanisms: tuple[str, ...]) -> None:
        self.messages: list[tuple[str, list[str], bytes, bool]] = []
        self.logins: list[tuple[str, bool]] = []
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self.port = free_port()
        self.controller = Controller(
            self,
            hostname="127.0.0.1",
            port=self.port,
            tls_context=context,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            authenticator=self.authenticate,
            auth_exclude_mechanism=[m for m in ("LOGIN", "PLAIN") if m not in mechanisms],
        )
        self.controller.start()

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            b"bastion",
            SMTP_PASSWORD.encode(),
        )
        self.logins.append((mechanism, ok))
        return AuthResult(success=ok, handled=False)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        tls = session.ssl is not None
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content, tls))
        return "250 OK"

    def close(self) -> None:
        self.controller.stop()


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path)


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(
        answers: list[int] | None = None, tls: tuple[Path, Path] | None = None, echo: bool = False
    ) -> Receiver:
        made.append(Receiver(answers, tls, echo))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture
def mailbox(ca: TestCA) -> Iterator[Callable[..., Mailbox]]:
    made: list[Mailbox] = []
    cert, key = ca.issue("smtp", ["127.0.0.1", "localhost"])

    def make(mechanisms: tuple[str, ...] = ("LOGIN", "PLAIN")) -> Mailbox:
        made.append(Mailbox(cert, key, mechanisms))
        return made[-1]

    yield make
    for box in made:
        box.close()


# ------------------------------------------------------------------ config
SITE = "sites:\n  - routes:\n      - path: /\n        respond: {status: 200}\n"


def write_config(tmp_path: Path, alerts: str) -> Path:
    path = tmp_path / "bastion.yaml"
    path.write_text(SITE + alerts, encoding="utf-8")
    return path


def secret_env(monkeypatch: pytest.MonkeyPatch, slack_url: str) -> None:
    monkeypatch.setenv("HOOK_SECRET", HOOK_SECRET)
    monkeypatch.setenv("SMTP_PASSWORD", SMTP_PASSWORD)
    monkeypatch.setenv("SLACK_URL", f"{slack_url}/services/{SLACK_TOKEN}")


class Pools:
    """An AlertInputs with one pool whose health the test sets (other figures empty)."""

    def __init__(self) -> None:
        self.health = {"api": PoolHealth(2, 2)}

    def period(self, since: float, until: float, route: str | None = None) -> dict[str, Any]:
        return {"requests": 0}

    def pools(self) -> dict[str, PoolHealth]:
        return self.health

    def certificates(self) -> list[Any]:
        return []

    def quotas(self) -> dict[str, Any]:
        return {}

    def last_reload(self) -> None:
        return None


def run_steps(manager: AlertManager, clock: ManualClock, pools: Pools, plan: list[int]) -> None:
    """One period per item of ``plan`` (the healthy endpoints of pool api); every delivery
    started is awaited before the next period."""

    async def main() -> None:
        for healthy in plan:
            pools.health = {"api": PoolHealth(healthy, 2)}
            clock.advance(60)
            manager.evaluate()
            await manager.deliveries.drain()

    asyncio.run(main())


def manager_for(alerts: Alerts, secrets: frozenset[str]) -> tuple[AlertManager, ManualClock, Pools]:
    clock = ManualClock(START + SETTLE)
    pools = Pools()
    return AlertManager(alerts, pools, clock, secrets=secrets, retry_delays=(0, 0, 0)), clock, pools


RULE = """\
  rules:
    api-down:
      kind: pool_unhealthy
      down_for: 0
"""


# ------------------------------------------------------------------ tests
def test_webhook_fires_and_resolves_once_signed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receivers: Callable[..., Receiver]
) -> None:
    hook, team = receivers(), receivers()
    secret_env(monkeypatch, team.url)
    loaded = load_config(
        write_config(
            tmp_path,
            f"""\
alerts:
  instance: gw-test
  channels:
    hook: {{webhook: {{url: "{hook.url}/bastion", secret: "${{HOOK_SECRET}}"}}}}
    team: {{slack: {{url: "${{SLACK_URL}}"}}}}
{RULE}""",
        )
    )
    manager, clock, pools = manager_for(loaded.config.alerts, loaded.secrets)
    run_steps(manager, clock, pools, [2, 0, 0, 0, 1, 1, 2])

    assert len(hook.got) == 2  # firing once, resolved once, nothing repeated
    bodies = []
    for path, headers, body in hook.got:
        assert path == "/bastion"
        assert headers["content-type"] == "application/json"
        expected = hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["x-bastion-signature"], f"sha256={expected}")
        bodies.append(json.loads(body))
        assert int(headers["x-bastion-timestamp"]) == int(bodies[-1]["time"])
    firing, resolved = bodies
    assert firing == {
        "alert": "api-down",
        "state": "firing",
        "kind": "pool_unhealthy",
        "value": 1.0,
        "threshold": 0.0,
        "summary": "no healthy endpoint in pool api for 0 s or more",
        "time": START + SETTLE + 120,
        "instance": "gw-test",
    }
    assert (resolved["state"], resolved["value"], resolved["time"]) == (
        "resolved",
        0.0,
        START + SETTLE + 300,
    )

    assert [p for p, _, _ in team.got] == [f"/services/{SLACK_TOKEN}"] * 2
    texts = [json.loads(body) for _, _, body in team.got]
    assert list(texts[0]) == ["text"]
    assert texts[0]["text"].startswith("[FIRING] api-down on gw-test: no healthy endpoint")
    assert texts[1]["text"].startswith("[RESOLVED] api-down on gw-test:")


def test_a_tampered_body_fails_the_signature_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receivers: Callable[..., Receiver]
) -> None:
    hook = receivers()
    secret_env(monkeypatch, hook.url)
    loaded = load_config(
        write_config(
            tmp_path,
            f"""\
alerts:
  channels:
    hook: {{webhook: {{url: "{hook.url}/", secret: "${{HOOK_SECRET}}"}}}}
{RULE}""",
        )
    )
    manager, clock, pools = manager_for(loaded.config.alerts, loaded.secrets)
    run_steps(manager, clock, pools, [0])
    [(_, headers, body)] = hook.got
    tampered = body.replace(b'"firing"', b'"resolved"')
    forged = "sha256=" + hmac.new(b"another key", body, hashlib.sha256).hexdigest()
    for payload, signature in ((tampered, headers["x-bastion-signature"]), (body, forged)):
        expected = "sha256=" + hmac.new(HOOK_SECRET.encode(), payload, hashlib.sha256).hexdigest()
        assert not hmac.compare_digest(signature, expected)


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
def test_email_over_starttls_with_auth(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ca: TestCA,
    mailbox: Callable[..., Mailbox],
    mechanism: str,
) -> None:
    box = mailbox((mechanism,))
    secret_env(monkeypatch, "https://unused.example.test")
    loaded = load_config(
        write_config(
            tmp_path,
            f"""\
alerts:
  instance: gw-test
  channels:
    mail:
      email:
        host: 127.0.0.1
        port: {box.port}
        username: bastion
        password: "${{SMTP_PASSWORD}}"
        sender: bastion@example.test
        to: [ops@example.test, oncall@example.test]
        ca: {ca.cert_file}
{RULE}""",
        )
    )
    manager, clock, pools = manager_for(loaded.config.alerts, loaded.secrets)
    run_steps(manager, clock, pools, [0, 0, 2])

    assert box.logins == [(mechanism, True), (mechanism, True)]
    assert len(box.messages) == 2
    for mail_from, rcpt, _, tls in box.messages:
        assert mail_from == "bastion@example.test" and tls
        assert rcpt == ["ops@example.test", "oncall@example.test"]
    first = message_from_bytes(box.messages[0][2], policy=policy.default)
    assert first["Subject"] == (
        "[bastion] [FIRING] api-down on gw-test: no healthy endpoint in pool api for 0 s or more"
    )
    assert first["To"] == "ops@example.test, oncall@example.test"
    assert "state:     firing" in first.get_content()  # type: ignore[attr-defined]
    assert message_from_bytes(box.messages[1][2], policy=policy.default)["Subject"].startswith(
        "[bastion] [RESOLVED]"
    )


def test_failures_are_retried_logged_without_secrets_and_never_fatal(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    receivers: Callable[..., Receiver],
    mailbox: Callable[..., Mailbox],
    caplog: pytest.LogCaptureFixture,
) -> None:
    flaky = receivers(answers=[503, 500])  # delivered at the third attempt
    down = receivers(answers=[500] * 10, echo=True)  # never; its answer quotes the token
    box = mailbox()  # its certificate is not trusted: STARTTLS fails
    secret_env(monkeypatch, down.url)
    loaded = load_config(
        write_config(
            tmp_path,
            f"""\
alerts:
  channels:
    flaky: {{webhook: {{url: "{flaky.url}/", secret: "${{HOOK_SECRET}}"}}}}
    team: {{slack: {{url: "${{SLACK_URL}}"}}}}
    mail:
      email: {{host: 127.0.0.1, port: {box.port}, username: bastion,
              password: "${{SMTP_PASSWORD}}", sender: b@example.test, to: [o@example.test]}}
{RULE}""",
        )
    )
    manager, clock, pools = manager_for(loaded.config.alerts, loaded.secrets)
    caplog.set_level("INFO", logger="bastion.alerts")
    run_steps(manager, clock, pools, [0, 0])

    assert len(flaky.got) == 3 and len({body for _, _, body in flaky.got}) == 1
    assert len(down.got) == 4  # the first attempt and three retries
    assert box.messages == [] and box.logins == []  # no password sent without trusted TLS
    log = caplog.text
    assert "alert api-down firing: notified on channel flaky" in log
    assert (
        "channel team (slack) failed 4 times, giving up: the receiver answered 500 "
        "no hook at <redacted>" in log
    )
    assert "channel mail (email) failed 4 times, giving up: cannot reach the SMTP server:" in log
    assert "CERTIFICATE_VERIFY_FAILED" in log
    assert manager.status()[0]["state"] == "FIRING"
    shown = log + json.dumps(manager.status())
    for secret in SECRETS:
        assert secret not in shown


def test_https_webhook_checks_the_receiver_certificate(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ca: TestCA,
    receivers: Callable[..., Receiver],
    caplog: pytest.LogCaptureFixture,
) -> None:
    secure = receivers(tls=ca.issue("hook", ["127.0.0.1"]))
    secret_env(monkeypatch, "https://unused.example.test")
    text = f"""\
alerts:
  channels:
    trusted: {{webhook: {{url: "{secure.url}/t", ca: {ca.cert_file}}}}}
    untrusted: {{webhook: {{url: "{secure.url}/u"}}}}
{RULE}"""
    loaded = load_config(write_config(tmp_path, text))
    manager, clock, pools = manager_for(loaded.config.alerts, loaded.secrets)
    run_steps(manager, clock, pools, [0])
    assert [p for p, _, _ in secure.got] == ["/t"]
    assert "x-bastion-signature" not in secure.got[0][1]  # no secret: no signature
    assert "channel untrusted (webhook) failed" in caplog.text
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


def run_cli(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # this interpreter's bastion: the checkout's (editable, or PYTHONPATH), or the installed
    # compiled build under `make test-compiled`
    return subprocess.run(
        [sys.executable, "-m", "bastion", "alerts", "test", "-c", str(config)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_alerts_test_on_every_channel(
    tmp_path: Path,
    ca: TestCA,
    receivers: Callable[..., Receiver],
    mailbox: Callable[..., Mailbox],
) -> None:
    hook, team, refusing = receivers(), receivers(), receivers(answers=[404])
    box = mailbox()
    channels = f"""\
alerts:
  instance: gw-cli
  channels:
    hook: {{webhook: {{url: "{hook.url}/cli", secret: "${{HOOK_SECRET}}"}}}}
    team: {{slack: {{url: "${{SLACK_URL}}"}}}}
    mail:
      email: {{host: 127.0.0.1, port: {box.port}, username: bastion,
              password: "${{SMTP_PASSWORD}}", sender: b@example.test, to: [o@example.test],
              ca: {ca.cert_file}}}
"""
    env = {
        "HOOK_SECRET": HOOK_SECRET,
        "SMTP_PASSWORD": SMTP_PASSWORD,
        "SLACK_URL": f"{team.url}/services/{SLACK_TOKEN}",
    }
    good = run_cli(write_config(tmp_path, channels), env)
    assert good.returncode == 0, good.stderr
    assert good.stdout.splitlines() == [
        "hook (webhook): OK",
        "team (slack): OK",
        "mail (email): OK",
    ]
    [(_, headers, body)] = hook.got
    note = json.loads(body)
    assert (note["alert"], note["state"], note["instance"]) == ("test", "test", "gw-cli")
    expected = hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["x-bastion-signature"] == f"sha256={expected}"
    assert json.loads(team.got[0][2])["text"].startswith("[TEST] test on gw-cli:")
    assert len(box.messages) == 1

    broken = (
        channels
        + f"""\
    gone: {{webhook: {{url: "http://127.0.0.1:{free_port()}/"}}}}
    refusing: {{webhook: {{url: "{refusing.url}/"}}}}
"""
    )
    env["SMTP_PASSWORD"] = "not-the-password-Qz"
    bad = run_cli(write_config(tmp_path, broken), env)
    assert bad.returncode == 1
    lines = bad.stdout.splitlines()
    assert lines[:2] == ["hook (webhook): OK", "team (slack): OK"]
    assert lines[2] == "mail (email): FAILED: the SMTP server refused the login: 535"
    assert lines[3].startswith("gone (webhook): FAILED: cannot reach the receiver:")
    assert lines[4] == "refusing (webhook): FAILED: the receiver answered 404 Not Found"
    for output in (good.stdout + good.stderr, bad.stdout + bad.stderr):
        for secret in (*SECRETS, "not-the-password-Qz"):
            assert secret not in output


def test_cli_without_channels_says_so(tmp_path: Path) -> None:
    result = run_cli(write_config(tmp_path, "alerts: {}\n"), {})
    assert result.returncode == 1
    assert result.stdout == "no alert channel is configured (alerts.channels)\n"
