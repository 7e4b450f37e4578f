"""Basic auth through the whole gateway, against bcrypt and argon2 hashes."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
from argon2 import PasswordHasher

from authtokens import check_refuses
from conftest import Backend, Gateway


def basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


@pytest.fixture(scope="module")
def hashes() -> dict[str, str]:
    return {
        "alice": bcrypt.hashpw(b"alice-pw", bcrypt.gensalt(6)).decode(),
        "bob": PasswordHasher(time_cost=1, memory_cost=8192).hash("bob pw: with colon"),
    }


def config(backend: Backend, basic_auth: dict[str, Any]) -> dict[str, Any]:
    return {
        "access_log": {"format": "json"},
        "sites": [
            {
                "routes": [
                    {
                        "path": "/",
                        "auth": {"basic": basic_auth, "consumer_header": "X-Remote-User"},
                        "proxy": {"upstreams": [backend.url]},
                    }
                ]
            }
        ],
    }


def problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    return resp.json()


def test_basic_auth(
    hashes: dict[str, str], backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    users_file = tmp_path / "users"
    users_file.write_text(f"# team\ncarol:{hashes['alice']}\n")
    gw = gateway(
        config(
            backend,
            {"users": hashes, "users_file": str(users_file), "realm": "staff"},
        )
    )
    challenge = 'Basic realm="staff", charset="UTF-8"'
    with httpx.Client(base_url=gw.url, timeout=15) as client:
        for user, password in (("alice", "alice-pw"), ("bob", "bob pw: with colon")):
            r = client.get("/x", headers={**basic(user, password), "X-Remote-User": "root"})
            assert r.status_code == 200, r.text
            seen = dict(r.json()["headers"])
            assert seen["x-remote-user"] == user
            # cached: the second request passes as well
            assert client.get("/x", headers=basic(user, password)).status_code == 200
        assert client.get("/x", headers=basic("carol", "alice-pw")).status_code == 200

        r = client.get("/x")
        problem(r, 401)
        assert r.headers["www-authenticate"] == challenge
        for headers in (
            basic("alice", "wrong"),
            basic("mallory", "alice-pw"),
            basic("bob", "bob pw"),
            {"Authorization": "Basic !!!notbase64"},
            {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
            {"Authorization": "Bearer abc"},
        ):
            r = client.get("/x", headers=headers)
            problem(r, 401)
            assert r.headers["www-authenticate"] == challenge
    gw.stop()
    logs = gw.stdout + gw.stderr
    assert "alice-pw" not in logs and "bob pw" not in logs
    assert '"consumer":"alice"' in gw.stdout.replace(" ", "")


def test_plain_password_is_a_config_error(
    backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    gw = gateway(config(backend, {"users": {"alice": "hunter2-plain"}}), start=False)
    done = check_refuses(gw.config_path)
    assert "not a plain password" in done.stderr
    assert "hunter2-plain" not in done.stderr + done.stdout
