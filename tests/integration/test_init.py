"""`bastion init` end to end: it fetches the document from a real server on loopback, writes a
config that `bastion check` accepts, and the gateway started with that config guards a real
backend as the document says (keys from `bastion keys create`, validation, unknown paths)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from authtokens import HS_SECRET, Keys, ScriptedServer, claims, json_reply, sign
from conftest import Backend, Gateway, free_port, run_bastion
from initdocs import fastapi_doc, with_schemes


@pytest.fixture
def doc_server() -> Iterator[ScriptedServer]:
    """The app's description, served at /openapi.json as FastAPI does."""
    server = ScriptedServer(
        lambda path, headers: (
            json_reply(fastapi_doc()) if path == "/openapi.json" else (404, {}, b"{}")
        )
    )
    yield server
    server.stop()


def test_init_check_and_run_in_front_of_the_app(
    tmp_path: Path, doc_server: ScriptedServer, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    env = {"BASTION_DATA_DIR": str(data_dir), "JWT_SECRET": HS_SECRET}
    done = run_bastion(
        "init",
        "--openapi", f"{doc_server.url}/openapi.json",
        "--to", backend.url,
        "--listen", f"127.0.0.1:{port}",
        cwd=tmp_path,
        extra_env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"read the OpenAPI document {doc_server.url}/openapi.json" in done.stdout
    assert "bastion keys create --consumer NAME -c bastion.yaml" in done.stdout
    assert "export JWT_SECRET=" in done.stdout
    assert "sends the app X-Consumer instead of the key" in done.stdout
    config = tmp_path / "bastion.yaml"
    assert json.loads((tmp_path / "openapi.json").read_text()) == fastapi_doc()
    assert HS_SECRET not in config.read_text()  # the secret is a reference, never the value

    check = run_bastion("check", "-c", str(config), cwd=tmp_path, extra_env=env)
    assert check.returncode == 0, check.stderr
    assert "auth api_keys, request validation" in check.stdout

    created = run_bastion(
        "keys", "create", "--consumer", "acme", "-c", str(config), cwd=tmp_path, extra_env=env
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.split()[0]
    assert key.startswith("bk_")

    for name, value in env.items():  # the gateway process inherits them
        monkeypatch.setenv(name, value)
    gw = Gateway(config, port, tmp_path)
    try:
        gw.start()
        _exercise(gw, key, backend)
    finally:
        gw.stop()


def _exercise(gw: Gateway, key: str, backend: Backend) -> None:
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        # security: [] — public, and validated: limit must be 1..100
        assert client.get("/items?limit=5").status_code == 200
        bad = client.get("/items?limit=0")
        assert bad.status_code == 400 and bad.json()["errors"][0]["parameter"] == "limit"
        # the global requirement: an API key in X-API-Key
        refused = client.get("/items/7")
        assert refused.status_code == 401
        assert client.get("/items/7", headers={"X-API-Key": "bk_wrong"}).status_code == 401
        ok = client.get("/items/7", headers={"X-API-Key": key})
        assert ok.status_code == 200, ok.text
        seen = dict(ok.json()["headers"])
        assert seen["x-consumer"] == "acme" and "x-api-key" not in seen
        # a body the schema refuses never reaches the app
        invalid = client.post(
            "/items", json={"name": "x", "price": "cheap"}, headers={"X-API-Key": key}
        )
        assert invalid.status_code == 400
        assert invalid.json()["errors"][0]["pointer"] == "#/price"
        created = client.post(
            "/items", json={"name": "x", "price": 2.5}, headers={"X-API-Key": key}
        )
        assert created.status_code == 200
        # described path, undescribed method; a path the document does not have
        wrong = client.patch("/items/7", headers={"X-API-Key": key})
        assert wrong.status_code == 405 and "PUT" in wrong.headers["allow"]
        assert client.get("/admin", headers={"X-API-Key": key}).status_code == 404
        assert client.get("/items/7/extra", headers={"X-API-Key": key}).status_code == 404
        # the token endpoint is public, its form body passed on as it is
        token = client.post("/token", data={"username": "u", "password": "p"})
        assert token.status_code == 200
        # OAuth2 with the app's own token URL: a JWT, not an API key
        assert client.delete("/items/7", headers={"X-API-Key": key}).status_code == 401
        unscoped = {"Authorization": "Bearer " + sign(claims(scope="items:read"))}
        assert client.delete("/items/7", headers=unscoped).status_code == 403
        scoped = {"Authorization": "Bearer " + sign(claims(scope="items:write"))}
        deleted = client.delete("/items/7", headers=scoped)
        assert (
            deleted.status_code == 200 and dict(deleted.json()["headers"])["x-consumer"] == "alice"
        )
    received = [(r["method"], r["path"], r["body_len"]) for r in backend.requests]
    assert received == [
        ("GET", "/items?limit=5", 0),
        ("GET", "/items/7", 0),
        ("POST", "/items", len(b'{"name":"x","price":2.5}')),
        ("POST", "/token", len(b"username=u&password=p")),
        ("DELETE", "/items/7", 0),
    ]


def test_init_finds_the_document_on_the_app_itself(
    tmp_path: Path, doc_server: ScriptedServer
) -> None:
    done = run_bastion("init", "--to", doc_server.url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"found the app's OpenAPI document at {doc_server.url}/openapi.json" in done.stdout
    data = yaml.safe_load((tmp_path / "bastion.yaml").read_text())
    assert any(r["path"] == "/items/" for r in data["sites"][0]["routes"])


def test_without_a_document_it_says_so_and_writes_a_plain_proxy(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    done = run_bastion("init", "--to", dead, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"no OpenAPI document found (cannot fetch {dead}/openapi.json" in done.stdout
    data = yaml.safe_load((tmp_path / "bastion.yaml").read_text())
    assert data["sites"][0]["routes"][0]["path"] == "/"
    assert data["sites"][0]["routes"][0]["proxy"]["upstreams"] == [dead]


def test_non_tty_uses_the_defaults(tmp_path: Path) -> None:
    done = run_bastion("init", "--no-openapi", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no question was asked
    data = yaml.safe_load((tmp_path / "bastion.yaml").read_text())
    assert data["listen"] == {"http": "127.0.0.1:8080"}
    assert data["sites"][0]["hosts"] == ["*"] and "tls" not in data["sites"][0]
    assert data["sites"][0]["routes"][0]["proxy"]["upstreams"] == ["http://127.0.0.1:8000"]
    assert run_bastion("check", "-c", "bastion.yaml", cwd=tmp_path).returncode == 0


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    config = tmp_path / "bastion.yaml"
    config.write_text("# mine\n")
    done = run_bastion("init", "--no-openapi", cwd=tmp_path)
    assert done.returncode == 1
    assert "bastion.yaml already exists: not overwritten. Use --force" in done.stderr
    assert config.read_text() == "# mine\n"
    forced = run_bastion("init", "--no-openapi", "--force", cwd=tmp_path)
    assert forced.returncode == 0 and "x-app: &app" in config.read_text()


def test_output_to_stdout(tmp_path: Path, doc_server: ScriptedServer) -> None:
    done = run_bastion(
        "init", "--openapi", f"{doc_server.url}/openapi.json", "-o", "-", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    data = yaml.safe_load(done.stdout)
    assert data["sites"][0]["routes"][0]["validation"]["openapi"] == "openapi.json"
    assert "wrote" in done.stderr and "next steps" in done.stderr
    assert not (tmp_path / "bastion.yaml").exists()
    assert (tmp_path / "openapi.json").is_file()  # beside where the config would be
    assert "keep openapi.json beside the config" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["openapi.json"]


def test_unreachable_openapi_url_is_a_clear_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/openapi.json"
    done = run_bastion("init", "--openapi", url, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == f"bastion init: cannot fetch {url}: connection refused"
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_bad_upstream_is_a_usage_error(tmp_path: Path) -> None:
    done = run_bastion("init", "--to", "ftp://127.0.0.1:8000", cwd=tmp_path)
    assert done.returncode == 2
    assert "--to 'ftp://127.0.0.1:8000': expected :PORT" in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_upstream_takes_the_forms_of_bastion_proxy(tmp_path: Path) -> None:
    """--to :PORT and HOST:PORT as in `bastion proxy` (and `caddy reverse-proxy`)."""
    port = free_port()
    done = run_bastion("init", "--to", f":{port}", "--no-openapi", "-o", "-", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"http://127.0.0.1:{port}" in done.stdout
    done = run_bastion("init", "--to", f"localhost:{port}", "--no-openapi", "-o", "-", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"http://localhost:{port}" in done.stdout


def test_at_a_terminal_missing_answers_are_asked(tmp_path: Path) -> None:
    """stdin is a real terminal (a pty): each missing flag is a question with a default."""
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bastion", "init"],
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
            text=True,
        )
        # domain, app address (the default), email, OpenAPI document (none)
        os.write(master, b"api.example.com\n\nops@example.com\nnone\n")
        _, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, err
    assert "Public domain name" in err and "[http://127.0.0.1:8000]" in err
    assert "Email for certificate notices" in err
    assert "OpenAPI document, URL or file (none: skip) [http://127.0.0.1:8000/openapi.json]" in err
    data = yaml.safe_load((tmp_path / "bastion.yaml").read_text())
    assert data["sites"][0]["hosts"] == ["api.example.com"]
    assert data["acme"] == {"email": "ops@example.com"}
    assert data["x-app"]["upstreams"] == ["http://127.0.0.1:8000"]


def test_a_jwt_scheme_without_known_keys_fails_closed(tmp_path: Path, backend: Backend) -> None:
    """An HTTP bearer JWT scheme: init cannot know the issuer's keys, and the placeholder it
    writes refuses every request (503) until the real jwks_url is set."""
    doc = with_schemes({"bearer": {"type": "http", "scheme": "bearer"}}, [{"bearer": []}])
    (tmp_path / "doc.yaml").write_text(yaml.safe_dump(doc))
    port = free_port()
    done = run_bastion(
        "init", "--openapi", "doc.yaml", "--to", backend.url, "--listen", f"127.0.0.1:{port}",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "JWT routes need your identity provider's jwks_url" in done.stdout
    gw = Gateway(tmp_path / "bastion.yaml", port, tmp_path)
    try:
        gw.start()
        assert httpx.get(gw.url + "/things/1").status_code == 401
        rs256 = sign(claims(), alg="RS256", key=Keys().rsa, kid="rsa")
        token = {"Authorization": "Bearer " + rs256}
        assert httpx.get(gw.url + "/things/1", headers=token, timeout=10).status_code == 503
    finally:
        gw.stop()
    assert backend.requests == []


def test_a_server_that_never_answers_is_given_up_on(tmp_path: Path) -> None:
    """A listening socket that never answers (an app stuck at start): the fetch gives up
    after its short timeout instead of leaving init hanging."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/openapi.json"
        done = run_bastion("init", "--openapi", url, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == f"bastion init: cannot fetch {url}: no answer within 3 s"
