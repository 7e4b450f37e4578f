"""Sending one notification on one channel: a signed JSON webhook, a Slack-compatible
webhook, or mail over SMTP. Each sender is blocking (urllib, smtplib) and runs in a thread
(``delivery.py``), never on the event loop. A failure raises ``SendError`` whose text names
what went wrong and never holds a secret of the channel.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import ssl
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bastion import __version__
from bastion.config.show import redact

if TYPE_CHECKING:
    from bastion.config.alert_models import AlertChannel, EmailChannel, SlackChannel, WebhookChannel

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Notification",
    "SendError",
    "channel_secrets",
    "send",
    "sign",
]

SIGNATURE_HEADER = "X-Bastion-Signature"
TIMESTAMP_HEADER = "X-Bastion-Timestamp"


@dataclass(frozen=True, slots=True)
class Notification:
    """What every channel says: the body of a webhook, the lines of a mail."""

    alert: str
    state: str
    """"firing", "resolved", or "test" (``bastion alerts test``)."""
    kind: str
    value: float | None
    threshold: float | None
    summary: str
    time: float
    """Epoch seconds."""
    instance: str

    def body(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    def headline(self) -> str:
        return f"[{self.state.upper()}] {self.alert} on {self.instance}: {self.summary}"

    def lines(self) -> list[str]:
        when = datetime.fromtimestamp(self.time, UTC).isoformat(timespec="seconds")
        return [
            self.headline(),
            "",
            f"alert:     {self.alert} ({self.kind})",
            f"state:     {self.state}",
            f"value:     {_figure(self.value)}",
            f"threshold: {_figure(self.threshold)}",
            f"time:      {when}",
            f"instance:  {self.instance}",
        ]


def _figure(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"


class SendError(Exception):
    """A notification was not delivered; the text is safe to log and print."""


def sign(secret: str, body: bytes) -> str:
    """The X-Bastion-Signature value: ``sha256=`` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def with_url_parts(secrets: frozenset[str]) -> frozenset[str]:
    """``secrets`` and, for each that is a URL, the parts that may hold its token on their
    own (a receiver's error quotes the path it was asked for, not the whole URL): path,
    query, password, and each of their pieces of 8 characters or more."""
    found = set(secrets)
    for secret in secrets:
        if "://" not in secret:
            continue
        parts = urlsplit(secret)
        found.update(p for p in (parts.path, parts.query, parts.password) if p and p != "/")
        pieces = re.split(r"[/?&=]", f"{parts.path}?{parts.query}")
        found.update(piece for piece in pieces if len(piece) >= 8)
    return frozenset(found)


def channel_secrets(channel: AlertChannel) -> frozenset[str]:
    """The values of a channel that must never be shown (its secret, password, Slack URL and
    the parts of it that hold the token)."""
    found: set[str] = set()
    if channel.webhook is not None and channel.webhook.secret is not None:
        found.add(channel.webhook.secret.get_secret_value())
    if channel.slack is not None:
        found.add(channel.slack.url.get_secret_value())
    if channel.email is not None and channel.email.password is not None:
        found.add(channel.email.password.get_secret_value())
    return with_url_parts(frozenset(s for s in found if s))


# The senders import their client libraries (urllib's HTTP client, smtplib, email) when
# they first send: a worker whose alerts only show on the dashboard never loads them.


def _no_redirect() -> Any:
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        # a receiver that redirects has not received: the POST is not replayed elsewhere
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    return NoRedirect()


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float, ca: str | None) -> None:
    import urllib.error
    import urllib.request

    context = ssl.create_default_context(cafile=ca)
    opener = urllib.request.build_opener(
        _no_redirect(), urllib.request.HTTPSHandler(context=context)
    )
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("User-Agent", f"bastion/{__version__}")
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with opener.open(request, timeout=timeout) as response:
            response.read(65536)
            if not 200 <= response.status < 300:
                raise SendError(f"the receiver answered {response.status} {response.reason}")
    except urllib.error.HTTPError as exc:
        raise SendError(f"the receiver answered {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise SendError(f"cannot reach the receiver: {exc.reason}") from None
    except (OSError, ValueError) as exc:  # timeouts, resets, TLS failures
        raise SendError(f"cannot reach the receiver: {exc}") from None


def _webhook(channel: WebhookChannel, note: Notification) -> None:
    body = note.body()
    headers = {TIMESTAMP_HEADER: str(int(note.time))}
    if channel.secret is not None:
        headers[SIGNATURE_HEADER] = sign(channel.secret.get_secret_value(), body)
    _post(channel.url, body, headers, channel.timeout, channel.ca)


def _slack(channel: SlackChannel, note: Notification) -> None:
    body = json.dumps({"text": "\n".join(note.lines()[:1] + note.lines()[2:])}).encode()
    _post(channel.url.get_secret_value(), body, {}, channel.timeout, channel.ca)


def _email(channel: EmailChannel, note: Notification) -> None:
    import smtplib
    from email.message import EmailMessage
    from email.utils import formatdate, make_msgid

    message = EmailMessage()
    message["Subject"] = f"[bastion] {note.headline()}"[:250]
    message["From"] = channel.sender
    message["To"] = ", ".join(channel.to)
    message["Date"] = formatdate(note.time)
    message["Message-ID"] = make_msgid(domain=channel.sender.rpartition("@")[2] or None)
    message.set_content("\n".join(note.lines()) + "\n")
    try:
        with smtplib.SMTP(channel.host, channel.port, timeout=channel.timeout) as smtp:
            smtp.ehlo()
            if channel.starttls:
                smtp.starttls(context=ssl.create_default_context(cafile=channel.ca))
                smtp.ehlo()
            if channel.username is not None and channel.password is not None:
                smtp.login(channel.username, channel.password.get_secret_value())
            refused = smtp.send_message(message, channel.sender, channel.to)
    except smtplib.SMTPAuthenticationError as exc:
        raise SendError(f"the SMTP server refused the login: {exc.smtp_code}") from None
    except smtplib.SMTPResponseException as exc:
        reply = _text(exc.smtp_error)
        raise SendError(f"the SMTP server answered {exc.smtp_code}: {reply}") from None
    except smtplib.SMTPException as exc:
        raise SendError(f"SMTP failed: {exc}") from None
    except (OSError, ValueError) as exc:
        raise SendError(f"cannot reach the SMTP server: {exc}") from None
    if refused:
        raise SendError(f"the SMTP server refused {', '.join(sorted(refused))}")


def _text(raw: bytes | str) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else raw


_SENDERS: dict[str, Callable[[AlertChannel, Notification], None]] = {
    "webhook": lambda c, n: _webhook(c.webhook, n),  # type: ignore[arg-type]
    "slack": lambda c, n: _slack(c.slack, n),  # type: ignore[arg-type]
    "email": lambda c, n: _email(c.email, n),  # type: ignore[arg-type]
}


def send(channel: AlertChannel, note: Notification) -> None:
    """Deliver ``note`` once (blocking); raise ``SendError`` with a secret-free reason."""
    try:
        _SENDERS[channel.type](channel, note)
    except SendError as exc:
        raise SendError(redact(str(exc), channel_secrets(channel))) from None
