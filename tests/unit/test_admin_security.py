"""The admin listener's locks alone, on a manual clock: session cookies (forged, altered,
expired, issued under another token), the login throttle's waits, and which Host and
Origin values pass."""

from __future__ import annotations

from bastion.clock import ManualClock
from bastion.config.addresses import Address, UnixAddress
from bastion.server.admin.security import HostCheck, LoginThrottle, Sessions, token_matches

TOKEN = "correct-horse-battery-staple"


def test_a_session_cookie_checks_until_it_expires() -> None:
    clock = ManualClock()
    sessions = Sessions(TOKEN, 3600, clock)
    value, session = sessions.issue()
    assert sessions.check(value) == session
    # another worker (same token) accepts it: the key derives from the token
    assert Sessions(TOKEN, 3600, clock).check(value) == session
    clock.advance(3599)
    assert sessions.check(value) == session
    clock.advance(1)
    assert sessions.check(value) is None


def test_forged_altered_and_old_token_cookies_are_refused() -> None:
    clock = ManualClock()
    sessions = Sessions(TOKEN, 3600, clock)
    value, _ = sessions.issue()
    expires, nonce, mac = value.split(".")
    later = f"{int(expires) + 86400}.{nonce}.{mac}"  # a longer life, same MAC
    assert sessions.check(later) is None
    assert sessions.check(f"{expires}.{nonce}x.{mac}") is None
    other = "B" if mac.endswith("A") else "A"  # a different last character, always
    assert sessions.check(f"{expires}.{nonce}.{mac[:-1]}{other}") is None
    for junk in ("", "x", "1.2", "a.b.c", "1.2.3.4", value + "."):
        assert sessions.check(junk) is None
    # a new token: every cookie of the old one is void
    assert Sessions(TOKEN + "-new", 3600, clock).check(value) is None


def test_csrf_values_differ_per_session_and_token() -> None:
    clock = ManualClock()
    one = Sessions(TOKEN, 60, clock).issue()[1]
    two = Sessions(TOKEN, 60, clock).issue()[1]
    assert one.csrf != two.csrf and len(one.csrf) >= 32


def test_token_comparison() -> None:
    assert token_matches(TOKEN, TOKEN)
    assert token_matches(TOKEN.encode(), TOKEN)
    assert not token_matches(TOKEN[:-1], TOKEN)
    assert not token_matches(TOKEN + "x", TOKEN)
    assert not token_matches("", TOKEN)


def test_the_throttle_makes_repeated_failures_wait_longer() -> None:
    clock = ManualClock()
    throttle = LoginThrottle(clock, free=3, first=10, longest=60)
    for _ in range(2):
        throttle.failed("10.0.0.1")
        assert throttle.wait("10.0.0.1") == 0
    throttle.failed("10.0.0.1")
    assert throttle.wait("10.0.0.1") == 10
    assert throttle.wait("10.0.0.2") == 0  # per address
    clock.advance(10)
    assert throttle.wait("10.0.0.1") == 0
    throttle.failed("10.0.0.1")
    assert throttle.wait("10.0.0.1") == 20
    for _ in range(5):
        throttle.failed("10.0.0.1")
    assert throttle.wait("10.0.0.1") == 60  # capped
    throttle.succeeded("10.0.0.1")
    assert throttle.wait("10.0.0.1") == 0


def test_the_throttle_forgets_quiet_addresses_and_stays_bounded() -> None:
    clock = ManualClock()
    throttle = LoginThrottle(clock, free=1, first=5, forget_after=100, capacity=3)
    throttle.failed("a")
    clock.advance(101)
    assert throttle.wait("a") == 0 and "a" not in throttle.failures
    for name in "bcde":
        throttle.failed(name)
    assert len(throttle.failures) == 3 and "b" not in throttle.failures


def test_hosts_of_a_tcp_listener() -> None:
    check = HostCheck(Address("127.0.0.1", 9180), ["admin.example.test", "tunnel.test:8443"])
    for good in (
        "127.0.0.1:9180",
        "localhost:9180",
        "LOCALHOST:9180",
        "[::1]:9180",
        "admin.example.test",
        "admin.example.test:443",
        "tunnel.test:8443",
    ):
        assert check.host_ok(good), good
    for bad in (
        "evil.example:9180",
        "127.0.0.1:9181",
        "localhost",
        "tunnel.test",
        "tunnel.test:443",
        "localhost.evil.example:9180",
        "",
    ):
        assert not check.host_ok(bad), bad


def test_hosts_of_a_unix_socket() -> None:
    check = HostCheck(UnixAddress("/run/b.sock"), [])
    assert check.host_ok("localhost") and check.host_ok("localhost:80")
    assert not check.host_ok("evil.example")


def test_origin_is_the_admin_itself() -> None:
    check = HostCheck(Address("127.0.0.1", 9180), ["admin.example.test", "tunnel.test:8443"])
    assert check.origin_ok("http://localhost:9180", "http", "localhost:9180")
    assert not check.origin_ok("http://evil.example", "http", "localhost:9180")
    assert not check.origin_ok("https://localhost:9180", "http", "localhost:9180")
    assert not check.origin_ok("null", "http", "localhost:9180")
    # a name of admin.hosts behind a proxy that ends TLS: its https origin too
    assert check.origin_ok("https://admin.example.test", "http", "admin.example.test")
    assert check.origin_ok("https://tunnel.test:8443", "http", "tunnel.test:8443")
    assert not check.origin_ok("http://admin.example.test", "https", "admin.example.test")
    assert not check.origin_ok("https://admin.example.test", "http", "localhost:9180")
