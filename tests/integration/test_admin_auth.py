"""The admin listener, attacked through real sockets against a real `bastion run`: no
token, a wrong token, the token in the URL, forged, altered, expired and old-token
cookies, DNS rebinding (Host), cross-origin requests (Origin), POSTs without CSRF, wrong
methods, brute force (the throttle), static path traversal; and the login flow, the Unix
socket listener, TLS, and the security headers of every answer."""

from __future__ import annotations

import os
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from test_admin_kit import TOKEN, TOKEN_ENV, Admin, admin_gateway

from bastion.clock import ManualClock
from bastion.server.admin.security import Sessions
from conftest import Gateway, free_port, wait_for_port

Start = Callable[..., Gateway]


def assert_guarded(answer: object) -> None:
    headers = getattr(answer, "headers")  # noqa: B009
    assert headers["cache-control"] == ["no-store"]
    assert headers["x-content-type-options"] == ["nosniff"]
    assert headers["x-frame-options"] == ["DENY"]
    assert "default-src 'self'" in headers["content-security-policy"][0]


def test_every_request_needs_the_token(
    gateway: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw, admin = admin_gateway(gateway, tmp_path, monkeypatch)
    for path in ("/api/overview", "/api/config", "/api/session", "/api/nothing", "/static/app.js"):
        answer = admin.ask("GET", path)
        assert answer.status in (401, 303), (path, answer)
        if path.startswith("/api/"):
            assert answer.status == 401
            assert answer.header("content-type") == "application/problem+json"
            assert answer.header("www-authenticate") == 'Bearer realm="bastion admin"'
        assert_guarded(answer)
    # a browser asking for the dashboard goes to the login page
    page = admin.ask("GET", "/")
    assert page.status == 303 and page.header("location") == "/login"
    # a wrong token, another scheme, the token as a basic password: refused
    assert admin.get("/api/overview", token=TOKEN + "x").status == 401
    assert admin.get("/api/overview", token=TOKEN[:-1]).status == 401
    basic = admin.ask("GET", "/api/overview", {"Authorization": f"Basic {TOKEN}"})
    assert basic.status == 401
    # the token in the URL is never accepted (nor kept in the log)
    in_url = admin.ask("GET", f"/api/overview?token={TOKEN}")
    assert in_url.status == 400 and b"never accepted in the URL" in in_url.body
    assert admin.get(f"/api/overview?access_token={TOKEN}").status == 400
    ok = admin.get("/api/overview")
    assert ok.status == 200 and ok.json()["version"]
    assert_guarded(ok)
    gw.stop()
    assert TOKEN not in gw.stderr
    assert "wrong token from 127.0.0.1" in gw.stderr


def test_unknown_paths_and_wrong_methods(
    gateway: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, admin = admin_gateway(gateway, tmp_path, monkeypatch)
    assert admin.get("/api/nothing").status == 404
    wrong = admin.ask("DELETE", "/api/config", token=TOKEN)
    assert wrong.status == 405 and wrong.header("allow") == "GET, HEAD"
    assert admin.ask("GET", "/api/cache/purge", token=TOKEN).status == 405
    assert admin.ask("PUT", "/login").status == 405
    head = admin.ask("HEAD", "/api/overview", token=TOKEN)
    assert head.status == 200 and head.body == b""
    # an action takes JSON only (a form post from another page cannot make one)
    form = admin.ask(
        "POST",
        "/api/cache/purge",
        {"Content-Type": "application/x-www-form-urlencoded"},
        b"prefix=/",
        token=TOKEN,
    )
    assert form.status == 415


def test_host_must_be_the_admins_own(
    gateway: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1 sends
    Host: evil.example: refused even with a valid session (the browser would send it)."""
    _, admin = admin_gateway(gateway, tmp_path, monkeypatch, {"hosts": ["admin.example.test"]})
    port = admin.port
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}", "localhost"):
        answer = admin.get("/api/overview", headers={"Host": host})
        assert answer.status == 421, host
        assert_guarded(answer)
    cookie, _ = admin.login()
    assert admin.ask("GET", "/", {"Host": f"evil.example:{port}"}, cookie=cookie).status == 421
    assert admin.ask("POST", "/login", {"Host": "evil.example"}, b"token=x").status == 421
    for host in (
        f"localhost:{port}",
        f"[::1]:{port}",
        "admin.example.test",
        "admin.example.test:8443",
    ):
        assert admin.get("/api/overview", headers={"Host": host}).status == 200, host


def test_origin_must_be_the_admins_own(
    gateway: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, admin = admin_gateway(gateway, tmp_path, monkeypatch)
    cookie, csrf = admin.login()
    for origin in ("http://evil.example", "null", f"https://127.0.0.1:{admin.port}"):
        for token, session in ((TOKEN, None), (None, cookie)):
            answer = admin.ask(
                "POST",
                "/api/cache/purge",
                {"Origin": origin, "X-CSRF-Token": csrf},
                {"prefix": "/"},
                token=token,
                cookie=session,
            )
            assert answer.status == 403, (origin, answer)
    login = admin.ask(
        "POST",
        "/login",
        {"Origin": "http://evil.example", "Content-Type": "application/x-www-form-urlencoded"},
        f"token={TOKEN}".encode(),
    )
    assert login.status == 403 and login.header("set-cookie") is None
    same = admin.ask(
        "POST",
        "/api/cache/purge",
        {"Origin": f"http://127.0.0.1:{admin.port}", "X-CSRF-Token": csrf},
        {"prefix": "/"},
        cookie=cookie,
    )
    assert same.status == 200, same


def test_login_session_and_csrf(
    gateway: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw, admin = admin_gateway(gateway, tmp_path, monkeypatch)
    page = admin.ask("GET", "/login")
    assert page.status == 200 and b'name="token"' in page.body
    assert page.header("content-type") == "text/html; charset=utf-8"
    assert b"<script" not in page.body and b"style=" not in page.body
    assert_guarded(page)
    answer = admin.ask(
        "POST",
        "/login",
        {"Content-Type": "application/x-www-form-urlencoded"},
        f"token={TOKEN}".encode(),
    )
    assert answer.status == 303 and answer.header("location") == "/"
    set_cookie = answer.header("set-cookie") or ""
    attributes = {a.strip() for a in set_cookie.split(";")[1:]}
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= attributes
    assert "Secure" not in attributes  # plain HTTP on loopback
    cookie = set_cookie.split(";")[0].split("=", 1)[1]
    assert TOKEN not in cookie
    index = admin.ask("GET", "/", cookie=cookie)
    assert index.status == 200 and index.body == b"<!doctype html><title>dash</title>"
    session = admin.ask("GET", "/api/session", cookie=cookie).json()
    assert session["via"] == "cookie" and session["expires"] > time.time() + 3600
    csrf = session["csrf"]
    purge = {"prefix": "/"}
    # a POST with the cookie needs the session's CSRF value
    assert admin.ask("POST", "/api/cache/purge", body=purge, cookie=cookie).status == 403
    wrong = {"X-CSRF-Token": csrf[:-2] + "xx"}
    assert admin.ask("POST", "/api/cache/purge", wrong, purge, cookie=cookie).status == 403
    other_session = admin.login()[1]
    assert other_session != csrf
    stolen = {"X-CSRF-Token": other_session}
    assert admin.ask("POST", "/api/cache/purge", stolen, purge, cookie=cookie).status == 403
    right = {"X-CSRF-Token": csrf}
    assert admin.ask("POST", "/api/cache/purge", right, purge, cookie=cookie).status == 200
    # the token itself needs no CSRF value (no browser sends it on its own)
    assert admin.ask("POST", "/api/cache/purge", body=purge, token=TOKEN).status == 200
    # logging out deletes the cookie (with CSRF too)
    assert admin.ask("POST", "/logout", cookie=cookie).status == 403
    out = admin.ask("POST", "/logout", right, cookie=cookie)
    assert out.status == 303 and "Max-Age=0" in (out.header("set-cookie") or "")
    gw.stop()
    assert "admin: login from 127.0.0.1" in gw.stderr


def test_login_body_is_read_whenever_it_arrives(
    gateway: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The form body is read by a task that runs after the head was dispatched: a body
    parsed in between is kept for it. (It once went to the bin as a body nobody wanted,
    and about one login in three from a client writing head and body apart failed.)"""
    import httpx

    _, admin = admin_gateway(gateway, tmp_path, monkeypatch)
    codes = []
    for _ in range(30):
        with httpx.Client(base_url=f"http://127.0.0.1:{admin.port}") as client:
            codes.append(client.post("/login", data={"token": TOKEN}).status_code)
    assert codes == [303] * 30


def test_forged_expired_and_old_token_cookies(
    gateway: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    gw, admin = admin_gateway(
        gateway, tmp_path, monkeypatch, {"token": "${file:" + str(token_file) + "}"}
    )
    cookie, _ = admin.login()
    assert admin.ask("GET", "/api/session", cookie=cookie).status == 200
    expires, nonce, mac = cookie.split(".")
    forged = [
        "x",
        f"{int(expires) + 999999}.{nonce}.{mac}",  # a longer life under the same MAC
        f"{expires}.{nonce}.{'A' * len(mac)}",
        Sessions("some-other-token-0123456789", 3600, ManualClock(time.time())).issue()[0],
    ]
    # signed with the right key, but expired: the attacker knows the token in this test,
    # which is how a cookie of yesterday looks
    expired = Sessions(TOKEN, 60, ManualClock(time.time() - 3600)).issue()[0]
    for value in [*forged, expired]:
        answer = admin.ask("GET", "/api/session", cookie=value)
        assert answer.status == 401, value
    assert admin.ask("GET", "/", cookie=expired).status == 303
    # a new token (reloaded): the old token's sessions end
    token_file.write_text(TOKEN + "-rotated\n")
    gw.reload(wait_for="configuration reloaded")
    assert admin.ask("GET", "/api/session", cookie=cookie).status == 401
    assert admin.get("/api/session").status == 401
    assert admin.get("/api/session", token=TOKEN + "-rotated").status == 200
    new_cookie, _ = admin.login(TOKEN + "-rotated")
    assert admin.ask("GET", "/api/session", cookie=new_cookie).status == 200


def test_failed_logins_are_throttled_and_logged_without_the_value(
    gateway: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw, admin = admin_gateway(gateway, tmp_path, monkeypatch)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    guesses = [f"guess-number-{i}-of-an-attacker" for i in range(5)]
    for guess in guesses:
        answer = admin.ask("POST", "/login", form, f"token={guess}".encode())
        assert answer.status == 401 and answer.header("set-cookie") is None
        assert b"not the admin token" in answer.body
    # the fifth failure starts a wait: even the right token is refused meanwhile
    locked = admin.ask("POST", "/login", form, f"token={TOKEN}".encode())
    assert locked.status == 429 and int(locked.header("retry-after") or 0) >= 1
    assert locked.header("set-cookie") is None
    assert admin.get("/api/overview").status == 429  # the bearer token too
    gw.stop()
    assert gw.stderr.count("admin: failed login from 127.0.0.1") == 5
    for guess in guesses:
        assert guess not in gw.stderr
    assert TOKEN not in gw.stderr


def test_static_files_do_not_leave_the_dashboard(
    gateway: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, admin = admin_gateway(gateway, tmp_path, monkeypatch)
    js = admin.get("/static/app.js")
    assert js.status == 200 and js.body == b"console.log('dash')"
    assert js.header("content-type") == "text/javascript; charset=utf-8"
    assert admin.get("/static/style.css").header("content-type") == "text/css; charset=utf-8"
    for path in (
        "/static/../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/%2E%2E%2Fsecret.txt",
        "/static/..%2fsecret.txt",
        "/static/..%5csecret.txt",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/static/.hidden.js",
        "/static/link.js",
        "/static/",
        "/static/missing.js",
        "/static/index.html/",
        "/static/app.js%00.css",
        "/static/dashboard/app.js",
    ):
        answer = admin.get(path)
        assert answer.status in (400, 404), (path, answer.status)
        assert b"TOP-SECRET" not in answer.body and b"hidden" not in answer.body
        assert b"root:" not in answer.body


def test_allow_list_of_client_addresses(
    gateway: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, admin = admin_gateway(gateway, tmp_path, monkeypatch, {"allow": ["10.9.9.9"]})
    answer = admin.get("/api/overview")
    assert answer.status == 403 and b"This address may not use" in answer.body


def test_unix_socket_listener(
    gateway: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "admin.sock"
    gw, admin = admin_gateway(gateway, tmp_path, monkeypatch, {"listen": f"unix:{path}"})
    # the file exists from the bind on; connections are taken from the listen, a moment later
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(path))
            break
        except OSError:
            assert time.monotonic() < deadline, "the admin's Unix socket never listened"
            time.sleep(0.05)
    assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0  # nobody else on the machine
    assert admin.get("/api/session").json()["via"] == "token"
    assert admin.ask("GET", "/api/session").status == 401
    assert admin.get("/api/session", headers={"Host": "evil.example"}).status == 421
    cookie, csrf = admin.login()
    purge = admin.ask(
        "POST", "/api/cache/purge", {"X-CSRF-Token": csrf}, {"tag": "t"}, cookie=cookie
    )
    assert purge.status == 200
    # the sites' listener does not answer for the admin
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(b"GET /api/session HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert b"via" not in sock.recv(65536)
    gw.stop()
    assert not path.exists()


def test_tls_listener_on_every_interface(
    gateway: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bastion.tls.localca import LocalCA

    ca_dir = tmp_path / "adminca"
    ca_dir.mkdir()
    ca = LocalCA(ca_dir)
    leaf = ca.leaf(["localhost"])
    port = free_port()
    admin_gateway(
        gateway,
        tmp_path,
        monkeypatch,
        {"listen": f":{port}", "tls": {"cert": str(leaf.cert), "key": str(leaf.key)}},
    )
    wait_for_port(port)
    plain = Admin(port=port)
    with pytest.raises((ConnectionError, OSError)):  # no clear text on a TLS listener
        plain.get("/api/session")
    context = ssl.create_default_context(cafile=str(ca.root_cert_path))
    context.check_hostname = False
    secure = Admin(port=port, tls=context)
    assert secure.get("/api/session").status == 200
    answer = secure.ask(
        "POST",
        "/login",
        {"Content-Type": "application/x-www-form-urlencoded"},
        f"token={TOKEN}".encode(),
    )
    assert answer.status == 303 and "Secure" in (answer.header("set-cookie") or "")


def test_a_reachable_listener_without_tls_does_not_start(tmp_path: Path) -> None:
    config = tmp_path / "bastion.yaml"
    config.write_text(
        f"listen: {{http: 127.0.0.1:{free_port()}}}\n"
        f"admin: {{listen: ':{free_port()}', token: '${{{TOKEN_ENV}}}'}}\n"
        "sites: [{hosts: ['*'], routes: [{path: /, respond: {}}]}]\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "bastion", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, TOKEN_ENV: TOKEN},
        check=False,
    )
    assert done.returncode != 0
    assert f"{config}:2: admin: admin.tls is required" in done.stderr
    assert TOKEN not in done.stderr + done.stdout


def test_reload_applies_settings_and_keeps_the_address(
    gateway: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw, admin = admin_gateway(gateway, tmp_path, monkeypatch)
    assert admin.get("/api/session", headers={"Host": "ops.example.test"}).status == 421
    config = yaml.safe_load(gw.config_path.read_text())
    new_port = free_port()
    config["admin"]["hosts"] = ["ops.example.test"]
    config["admin"]["listen"] = f"127.0.0.1:{new_port}"
    gw.reload(config, wait_for="configuration reloaded")
    assert "admin.listen or admin.tls changed: the new one is used after a restart" in gw.stderr
    # the new Host is accepted at once, on the address listened on since the start
    assert admin.get("/api/session", headers={"Host": "ops.example.test"}).status == 200
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", new_port), timeout=2).close()
