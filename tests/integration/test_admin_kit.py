"""Helpers of the admin listener's tests (no tests here): a gateway with an admin
listener, a dashboard directory, and a client that sends exactly what it is told (Host,
Origin, cookies, raw paths) over TCP, TLS or a Unix socket."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import Gateway, free_port, wait_for_port

TOKEN = "admin-token-0123456789-abcdef"
TOKEN_ENV = "BASTION_TEST_ADMIN_TOKEN"


@dataclass
class Answer:
    status: int
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


@dataclass
class Admin:
    """Where the admin listens and how to reach it."""

    port: int = 0
    unix: str | None = None
    tls: ssl.SSLContext | None = None

    @property
    def host(self) -> str:
        return "localhost" if self.unix else f"127.0.0.1:{self.port}"

    def ask(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | dict[str, Any] | None = None,
        token: str | None = None,
        cookie: str | None = None,
    ) -> Answer:
        sent = {"Host": self.host}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if cookie is not None:
            sent["Cookie"] = f"bastion_admin={cookie}"
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        conn: http.client.HTTPConnection
        if self.unix:
            conn = _UnixConnection(self.unix, 30)
        elif self.tls is not None:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30, context=self.tls)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body, sent)
            response = conn.getresponse()
            found: dict[str, list[str]] = {}
            for name, value in response.getheaders():
                found.setdefault(name.lower(), []).append(value)
            return Answer(response.status, found, response.read())
        finally:
            conn.close()

    def get(self, path: str, **kwargs: Any) -> Answer:
        kwargs.setdefault("token", TOKEN)
        return self.ask("GET", path, **kwargs)

    def login(self, token: str = TOKEN) -> tuple[str, str]:
        """A login session: (cookie value, its CSRF value)."""
        answer = self.ask(
            "POST",
            "/login",
            {"Content-Type": "application/x-www-form-urlencoded"},
            f"token={token}".encode(),
        )
        assert answer.status == 303, answer
        set_cookie = answer.header("set-cookie")
        assert set_cookie is not None
        cookie = set_cookie.split(";")[0].split("=", 1)[1]
        session = self.ask("GET", "/api/session", cookie=cookie)
        assert session.status == 200, session
        return cookie, session.json()["csrf"]


def dashboard(tmp_path: Path) -> Path:
    """A dashboard directory (index.html, app.js, style.css), a secret beside it, and a
    dot file and a symbolic link inside it that must not be served."""
    directory = tmp_path / "dashboard"
    directory.mkdir()
    (directory / "index.html").write_text("<!doctype html><title>dash</title>")
    (directory / "app.js").write_text("console.log('dash')")
    (directory / "style.css").write_text("body{}")
    (directory / ".hidden.js").write_text("hidden")
    (tmp_path / "secret.txt").write_text("TOP-SECRET")
    (directory / "link.js").symlink_to(tmp_path / "secret.txt")
    return directory


def admin_gateway(
    gateway: Callable[..., Gateway],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    admin: dict[str, Any] | None = None,
    **config: Any,
) -> tuple[Gateway, Admin]:
    """A running gateway with an admin listener on a free port (or `admin["listen"]`),
    its token from the environment, and the dashboard of `dashboard()`."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    port = free_port()
    settings = {
        "listen": f"127.0.0.1:{port}",
        "token": "${" + TOKEN_ENV + "}",
        "dashboard": str(dashboard(tmp_path)),
        **(admin or {}),
    }
    config.setdefault("access_log", {"format": "off"})
    # its own pid file: `bastion status` reads the instance named there (the default one
    # in /tmp is shared with any other gateway running on the machine)
    config.setdefault("pid_file", str(tmp_path / "bastion.pid"))
    config.setdefault("sites", [{"hosts": ["*"], "routes": [{"path": "/", "respond": {}}]}])
    gw = gateway({"admin": settings, **config})
    listen = str(settings["listen"])
    if listen.startswith("unix:"):
        return gw, Admin(unix=listen[len("unix:") :])
    port = int(listen.rsplit(":", 1)[1])
    wait_for_port(port)
    return gw, Admin(port=port)
