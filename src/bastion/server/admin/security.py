"""The admin listener's locks, each a small piece that can be tested alone:

- `Sessions`: the login cookie. Stateless and signed: `<expiry>.<nonce>.<mac>` where the MAC
  is HMAC-SHA256 under a key derived from the admin token, so every worker checks a cookie
  another worker issued, and a new token ends every session. The CSRF value of a session
  is derived from its nonce under the same key: nothing to store.
- `LoginThrottle`: failed token presentations per client address, with a growing wait.
- `HostCheck`: the Host and Origin a request may carry (DNS rebinding: a page of another
  site that resolves its own name to 127.0.0.1 still sends its own name as Host).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bastion.config.addresses import UnixAddress

if TYPE_CHECKING:
    from bastion.clock import Clock
    from bastion.config.addresses import AdminAddressValue

__all__ = ["COOKIE", "HostCheck", "LoginThrottle", "Session", "Sessions", "token_matches"]

COOKIE = "bastion_admin"
_KEY_LABEL = b"bastion admin session key v1"


def token_matches(given: str | bytes, token: str) -> bool:
    """Constant-time comparison (the time does not tell how much of a guess was right)."""
    given_bytes = given.encode("utf-8", "surrogateescape") if isinstance(given, str) else given
    return hmac.compare_digest(
        hashlib.sha256(given_bytes).digest(), hashlib.sha256(token.encode()).digest()
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class Session:
    expires: int
    csrf: str


class Sessions:
    """Issues and checks login cookies for one token."""

    def __init__(self, token: str, lifetime: float, clock: Clock) -> None:
        self.key = hmac.new(token.encode(), _KEY_LABEL, hashlib.sha256).digest()
        self.lifetime = lifetime
        self.clock = clock

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self.key, payload.encode(), hashlib.sha256).digest())

    def csrf(self, nonce: str) -> str:
        return _b64(hmac.new(self.key, b"csrf:" + nonce.encode(), hashlib.sha256).digest())

    def issue(self) -> tuple[str, Session]:
        """A new cookie value and its session."""
        expires = int(self.clock.time() + self.lifetime)
        nonce = _b64(os.urandom(18))
        payload = f"{expires}.{nonce}"
        return f"{payload}.{self._mac(payload)}", Session(expires, self.csrf(nonce))

    def check(self, value: str) -> Session | None:
        """The session of a cookie value: None when forged, altered, expired or issued
        under another token."""
        parts = value.split(".")
        if len(parts) != 3 or not parts[0].isdigit():
            return None
        expires_text, nonce, mac = parts
        if not hmac.compare_digest(self._mac(f"{expires_text}.{nonce}"), mac):
            return None
        expires = int(expires_text)
        if expires <= self.clock.time():
            return None
        return Session(expires, self.csrf(nonce))


class LoginThrottle:
    """Failed attempts per client address. The first `free` - 1 failures cost nothing;
    from the `free`-th on, the address waits `first` seconds, then twice as long after
    each further failure (10 s, 20 s, 40 s … up to `longest`), before it may try again,
    even with the right token. A success clears the address; an address quiet for
    `forget_after` seconds is forgotten."""

    def __init__(
        self,
        clock: Clock,
        free: int = 5,
        first: float = 10.0,
        longest: float = 300.0,
        forget_after: float = 3600.0,
        capacity: int = 10000,
    ) -> None:
        self.clock = clock
        self.free = free
        self.first = first
        self.longest = longest
        self.forget_after = forget_after
        self.capacity = capacity
        self.failures: dict[str, tuple[int, float]] = {}  # ip -> (count, last failure)

    def wait(self, ip: str) -> float:
        """Seconds `ip` must still wait before its next attempt (0: it may try now)."""
        entry = self.failures.get(ip)
        if entry is None:
            return 0.0
        count, last = entry
        now = self.clock.monotonic()
        if now - last > self.forget_after:
            del self.failures[ip]
            return 0.0
        if count < self.free:
            return 0.0
        return max(0.0, last + self._delay(count) - now)

    def _delay(self, count: int) -> float:
        return float(min(self.longest, self.first * 2.0 ** (count - self.free)))

    def failed(self, ip: str) -> int:
        """Count a failure; returns the address's failures so far."""
        count = self.failures.pop(ip, (0, 0.0))[0] + 1
        if len(self.failures) >= self.capacity:
            # the oldest entry goes (dicts keep insertion order; a failure re-inserts)
            del self.failures[next(iter(self.failures))]
        self.failures[ip] = (count, self.clock.monotonic())
        return count

    def succeeded(self, ip: str) -> None:
        self.failures.pop(ip, None)


class HostCheck:
    """The Host values the admin answers to: its own address, the localhost names with
    its port, and `admin.hosts` (a name without a port matches any port)."""

    def __init__(self, listen: AdminAddressValue, hosts: list[str]) -> None:
        exact: set[str] = set()
        names: set[str] = set()
        if isinstance(listen, UnixAddress):
            names.add("localhost")  # no port to speak of: what the CLI client sends
        else:
            port = listen.port
            if listen.host is not None:
                exact.add(str(listen).lower())
            exact.update(f"{name}:{port}" for name in ("localhost", "127.0.0.1", "[::1]"))
        configured_exact = frozenset(host for host in hosts if _port_of(host))
        configured_names = frozenset(host for host in hosts if not _port_of(host))
        self.exact = frozenset(exact) | configured_exact
        self.names = frozenset(names) | configured_names
        self.proxied = HostNames(configured_exact, configured_names)

    def host_ok(self, host: str) -> bool:
        return _matches(host.lower(), self.exact, self.names)

    def origin_ok(self, origin: str, scheme: str, host: str) -> bool:
        """An Origin header, when sent, names the admin itself: the scheme it is served
        with and the Host it was reached under (already checked). Under a name of
        `admin.hosts` a plain listener is also reached as https: a proxy in front ends
        TLS, and the browser's origin is the https one."""
        origin, host = origin.lower(), host.lower()
        if origin == f"{scheme}://{host}":
            return True
        return (
            scheme == "http"
            and origin == f"https://{host}"
            and _matches(host, self.proxied.exact, self.proxied.names)
        )


@dataclass(frozen=True)
class HostNames:
    exact: frozenset[str]  # host:port
    names: frozenset[str]  # any port


def _matches(host: str, exact: frozenset[str], names: frozenset[str]) -> bool:
    if host in exact:
        return True
    name = host.rsplit(":", 1)[0] if _port_of(host) else host
    return name in names


def _port_of(host: str) -> str:
    """The port part of a Host value ('' without one)."""
    if host.startswith("["):
        end = host.find("]")
        return host[end + 2 :] if end > 0 and host[end + 1 : end + 2] == ":" else ""
    head, sep, port = host.rpartition(":")
    return port if sep and head and ":" not in head else ""
