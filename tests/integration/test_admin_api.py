"""The admin API's endpoints against a real `bastion run`: the JSON of each, the purge
action (a cached route's next answer is a MISS), the config with its secrets redacted,
the CLI commands that use the API when the gateway answers (and the data dir when it does
not), and renewal against a real Pebble CA."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cacheorigin import CountingBackend, Reply
from test_admin_kit import TOKEN, TOKEN_ENV, admin_gateway

from conftest import Backend, Gateway, free_port, wait_for_port
from pebble_support import (  # noqa: F401 (pebble_fixture is a fixture)
    Pebble,
    acme_config,
    pebble_fixture,
    save_root,
    served_serial,
    wait_for_log,
)

Start = Callable[..., Gateway]
PASSWORD = "jwt-shared-secret-never-shown-0123456789"
UPSTREAM_SECRET = "upstream-user-secret-77"


@pytest.fixture
def origin() -> Iterator[CountingBackend]:
    b = CountingBackend()
    yield b
    b.stop()


def test_statistics_off_answer_503(
    gateway: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, admin = admin_gateway(gateway, tmp_path, monkeypatch, stats={"enabled": False})
    for path in ("/api/stats?window=1h", "/api/live"):
        off = admin.get(path)
        assert off.status == 503 and off.json()["detail"] == "statistics are off"


def cli(gw: Gateway, *args: str, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion", *args, "-c", str(gw.config_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, TOKEN_ENV: token},
        check=False,
    )


def test_endpoints_answer_their_json_and_never_a_secret(
    gateway: Start, backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JWT_SECRET", PASSWORD)
    monkeypatch.setenv("UPSTREAM_SECRET", UPSTREAM_SECRET)
    http, https = free_port(), free_port()
    data = tmp_path / "data"
    gw, admin = admin_gateway(
        gateway,
        tmp_path,
        monkeypatch,
        listen={"http": f"127.0.0.1:{http}", "https": f"127.0.0.1:{https}"},
        data_dir=str(data),
        workers=2,
        sites=[
            {
                "hosts": ["localhost"],
                "routes": [
                    {
                        "path": "/api/",
                        "proxy": {"upstreams": [backend.url]},
                        "auth": {"jwt": {"algorithms": ["HS256"], "secret": "${JWT_SECRET}"}},
                    },
                    {
                        "path": "/",
                        "respond": {"status": 200, "body": "tag ${UPSTREAM_SECRET}"},
                    },
                ],
            }
        ],
    )
    wait_for_port(https)
    seen: list[bytes] = []

    def get(path: str) -> Any:
        answer = admin.get(path)
        assert answer.status == 200, (path, answer)
        assert answer.header("content-type") == "application/json"
        seen.append(answer.body)
        return answer.json()

    context = ssl.create_default_context(cafile=str(data / "ca" / "root.crt"))
    with httpx.Client(verify=context) as client:
        r = client.get(f"https://localhost:{https}/api/x", headers={"Authorization": "Bearer x"})
        assert r.status_code == 401  # the route is guarded; the pool is the same
        r = client.get(f"https://localhost:{https}/")
        assert r.status_code == 200
    deadline = time.monotonic() + 15
    while True:  # every worker publishes its pools within a second
        pools = get("/api/upstreams")["pools"]
        endpoints = pools[0]["endpoints"] if pools else []
        if (endpoints and endpoints[0]["workers"] == 2) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    (endpoint,) = endpoints
    assert endpoint["address"] == backend.url and endpoint["state"] == "up"
    assert endpoint["ejections"] == 0
    assert set(endpoint) >= {"last_check", "latency", "last_error"}
    assert pools[0]["policy"]

    certs = get("/api/certificates")["certificates"]
    (cert,) = certs
    assert cert["names"] == ["localhost"] and cert["source"] == "local CA"
    assert cert["issuer"] and cert["last_error"] is None
    assert cert["not_after"] > time.time() and 0 < cert["days_left"] < 400

    overview = get("/api/overview")
    assert overview["workers"] == 2 and overview["version"]
    assert overview["upstreams"] == {"healthy": 1, "total": 1}
    assert overview["certificates"]["earliest_expiry"] == cert["not_after"]
    assert overview["alerts"] == {"firing": 0}
    assert len(overview["config_hash"]) == 16 and overview["started"] <= time.time()

    assert get("/api/alerts") == {"alerts": []}
    assert overview["in_flight"] == 0  # the admin request itself is not a site's request
    deadline = time.monotonic() + 15
    while True:  # every worker writes its statistics once a second
        stats = get("/api/stats?window=1h")
        if stats["totals"]["requests"] >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert stats["window"] == "1h" and stats["totals"]["requests"] == 2
    assert stats["totals"]["refusals"]["401"] == 1

    shown = get("/api/config")
    config = shown["config"]
    assert shown["source"] == str(gw.config_path)
    assert config["workers"] == 2 and config["admin"]["token"] == "<redacted>"
    route = config["sites"][0]["routes"][0]
    assert route["auth"]["jwt"]["secret"] == "<redacted>"
    assert "<redacted>" in config["sites"][0]["routes"][1]["respond"]["body"]

    # the session endpoint, an error body, a failed login: none shows a secret
    seen.append(admin.get("/api/session").body)
    seen.append(admin.get("/api/nothing").body)
    seen.append(admin.get("/api/overview", token="wrong-" + TOKEN).body)
    gw.stop()
    for secret in (TOKEN, PASSWORD, UPSTREAM_SECRET):
        for body in seen:
            assert secret.encode() not in body
        assert secret not in gw.stderr and secret not in gw.stdout


def cached_site(origin: CountingBackend) -> list[dict[str, Any]]:
    route = {"path": "/", "proxy": {"upstreams": [origin.url]}, "cache": {}}
    return [{"hosts": ["*"], "routes": [route]}]


def test_purge_makes_the_next_answer_a_miss(
    gateway: Start, origin: CountingBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin.replies["/a"] = Reply(headers={"Cache-Control": "max-age=600"}, body=b"n={n}")
    origin.replies["/b"] = Reply(headers={"Cache-Control": "max-age=600"}, body=b"n={n}")
    gw, admin = admin_gateway(gateway, tmp_path, monkeypatch, sites=cached_site(origin))

    def fetch(path: str) -> str:
        return str(httpx.get(gw.url + path, timeout=10).headers["x-cache"])

    assert [fetch("/a"), fetch("/a"), fetch("/b"), fetch("/b")] == ["MISS", "HIT", "MISS", "HIT"]
    bad = admin.ask("POST", "/api/cache/purge", body={"url": "/a"}, token=TOKEN)
    assert bad.status == 400 and "not a URL" in bad.json()["detail"]
    two = admin.ask("POST", "/api/cache/purge", body={"url": "x", "tag": "y"}, token=TOKEN)
    assert two.status == 400
    answer = admin.ask(
        "POST", "/api/cache/purge", body={"url": f"http://127.0.0.1:{gw.port}/a"}, token=TOKEN
    )
    assert answer.status == 200, answer
    assert answer.json() == {
        "kind": "url",
        "value": f"http://127.0.0.1:{gw.port}/a",
        "purged_here": 1,
        "queued": True,
    }
    assert fetch("/a") == "MISS"
    assert fetch("/b") == "HIT"  # only what was named
    # the CLI goes through the admin API while the gateway answers
    done = cli(gw, "cache", "purge", "--prefix", "/")
    assert done.returncode == 0, done.stderr
    assert "entries at once in the worker that answered" in done.stdout
    assert fetch("/b") == "MISS"


def test_cli_uses_the_admin_api_while_the_gateway_answers(
    gateway: Start, backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sites = [{"hosts": ["*"], "routes": [{"path": "/", "proxy": {"upstreams": [backend.url]}}]}]
    gw, admin = admin_gateway(gateway, tmp_path, monkeypatch, sites=sites)
    assert httpx.get(gw.url + "/x", timeout=10).status_code == 200
    deadline = time.monotonic() + 15
    while not admin.get("/api/upstreams").json()["pools"] and time.monotonic() < deadline:
        time.sleep(0.2)
    status = cli(gw, "status", "--json")
    assert status.returncode == 0, status.stderr
    (endpoint,) = json.loads(status.stdout)["pools"][0]["endpoints"]
    assert endpoint["state"] == "up"  # the admin API's field: not read from the data dir
    table = cli(gw, "status")
    assert table.returncode == 0 and backend.url in table.stdout
    # with a token the gateway does not know, the CLI says so and reads the data dir
    refused = cli(gw, "status", "--json", token="not-the-gateways-token-at-all")
    assert refused.returncode == 0
    assert "the admin API refused GET /api/upstreams (401" in refused.stderr
    assert "state" not in json.loads(refused.stdout)["pools"][0]["endpoints"][0]
    assert "not-the-gateways-token-at-all" not in refused.stderr
    listed = cli(gw, "certs", "list")
    assert listed.returncode == 0 and "NAMES" in listed.stdout
    gw.stop()
    # the gateway stopped: the data dir is read as before
    after = cli(gw, "status")
    assert after.returncode == 1 and "no pool status found" in after.stdout


def test_renew_orders_a_new_certificate_that_the_gateway_serves(
    tmp_path: Path,
    backend: Backend,
    pebble: Callable[..., Pebble],
    gateway: Start,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    http, https = free_port(), free_port()
    ca = pebble(http, validity=3600)
    config = acme_config(tmp_path, backend, ca, http, https)
    config["tls"] = {"watch_interval": "1s"}
    gw, admin = admin_gateway(gateway, tmp_path, monkeypatch, **config)
    wait_for_log(gw, "acme: serving the certificate for bastion.test, www.bastion.test")
    root = save_root(ca, tmp_path)
    first = served_serial(https, "bastion.test", root)

    (cert,) = admin.get("/api/certificates").json()["certificates"]
    assert cert["source"] == "acme" and "Pebble" in cert["issuer"]
    assert cert["next_renewal"] is not None and cert["next_renewal"] < cert["not_after"]

    unknown = admin.ask("POST", "/api/certificates/renew", body={"name": "nope.test"}, token=TOKEN)
    assert unknown.status == 404 and "nope.test" in unknown.json()["detail"]
    missing = admin.ask("POST", "/api/certificates/renew", body={}, token=TOKEN)
    assert missing.status == 400
    cookie, csrf = admin.login()
    renewed = admin.ask(
        "POST",
        "/api/certificates/renew",
        {"X-CSRF-Token": csrf},
        {"name": "WWW.bastion.test"},
        cookie=cookie,
    )
    assert renewed.status == 200, renewed
    result = renewed.json()
    assert result["renewed"] == ["bastion.test", "www.bastion.test"]
    wait_for_log(gw, "changed; new handshakes for bastion.test, www.bastion.test use it", 20)
    second = served_serial(https, "bastion.test", root)
    assert second != first and f"{second:x}" == result["serial"]


def test_renew_reissues_a_local_ca_certificate_that_the_gateway_serves(
    tmp_path: Path, gateway: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dashboard's "Renew now" on a certificate of the local CA: a new leaf at once
    (not only in its last third), served after the watcher's next look."""
    https = free_port()
    data = tmp_path / "data"
    _, admin = admin_gateway(
        gateway,
        tmp_path,
        monkeypatch,
        listen={"http": f"127.0.0.1:{free_port()}", "https": f"127.0.0.1:{https}"},
        data_dir=str(data),
        tls={"watch_interval": "1s"},
        sites=[
            {"hosts": ["localhost"], "tls": "internal", "routes": [{"path": "/", "respond": {}}]}
        ],
    )
    wait_for_port(https)
    root = data / "ca" / "root.crt"
    first = served_serial(https, "localhost", root)
    renewed = admin.ask("POST", "/api/certificates/renew", body={"name": "localhost"}, token=TOKEN)
    assert renewed.status == 200, renewed
    result = renewed.json()
    assert result["renewed"] == ["localhost"] and result["serial"] != f"{first:x}"
    deadline = time.monotonic() + 20
    while (second := served_serial(https, "localhost", root)) == first:
        assert time.monotonic() < deadline, "the new leaf is not served"
        time.sleep(0.2)
    assert f"{second:x}" == result["serial"]
    files = admin.ask("POST", "/api/certificates/renew", body={"name": "nope.test"}, token=TOKEN)
    assert files.status == 404
