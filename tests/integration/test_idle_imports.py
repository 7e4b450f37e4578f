"""What an idle worker has loaded: the libraries of features a config does not use stay
out of its memory (they are imported when a config or a connection first needs them).

The worker is a real `python -m bastion run`, started under a wrapper (`PROBE`) whose
only addition is a thread that writes the names in `sys.modules` to a file when asked,
after the gateway has served a few requests. These are the guards of the idle-memory
figures in docs/benchmarks.md: each name below is a few hundred KiB to several MiB.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conftest import Backend, Gateway, free_port

# the wrapper bench/idle_memory.py uses too
PROBE = str(Path(__file__).resolve().parents[2] / "bench" / "probe_modules.py")

# not needed by a plain-HTTP gateway with one proxy route (and statistics on, the default)
NOT_IN_A_PLAIN_WORKER = (
    "cryptography",  # certificates: the local CA, ACME
    "bastion.acme",
    "urllib.request",  # the ACME client's HTTP
    "http.client",
    "h2",  # HTTP/2, negotiated over TLS only
    "hpack",
    "bastion.http2",
    "email",  # the Date header is formatted without it
    "ctypes",  # malloc_trim and TLS groups, when first needed
    "mimetypes",  # static files
    "bastion.handlers.static",
    "bastion.handlers.s3",
    "prometheus_client",  # metrics
    "brotli",  # compression
    "zstandard",
    "jsonschema_rs",  # validation
    "jwt",
    "redis",
    "argon2",
    "shutil",  # argparse's help formatter; tempfile, for a file of the data dir
    "tempfile",
    "bastion.cli.operate",  # the other commands' modules
    "bastion.cli.service",
    "bastion.cli.init",
    "bastion.policies.headers",  # policies no route uses
    "bastion.policies.ratelimit",
    "bastion.policies.cors",
    "bastion.policies.ipfilter",
    # the config is validated by a child process and handed over as plain objects
    "pydantic",
    "pydantic_core",
    "yaml",
    "bastion.config.loader",
    "bastion.config.models",
    "bastion.config.types",
)
MODELS = ("pydantic", "pydantic_core", "yaml", "bastion.config.loader", "bastion.config.models")
# bastion's own stand-in for pydantic's plugin lookup (bastion.config.noplugins), a module
# of two names registered with the config package: not pydantic
STUB = "pydantic.plugin._loader"


class ProbedGateway(Gateway):
    """A gateway started under `PROBE` (`bastion run`, or the command in `args`)."""

    args: list[str] | None = None

    def start(self, wait: bool = True) -> ProbedGateway:
        self.modules_file = self.workdir / "modules.txt"
        env = dict(os.environ, PYTHONUNBUFFERED="1", BASTION_PROBE_MODULES=str(self.modules_file))
        self.proc = subprocess.Popen(
            [sys.executable, PROBE, *(self.args or ["run", "-c", str(self.config_path)])],
            stdout=self.stdout_path.open("wb"),
            stderr=self.stderr_path.open("wb"),
            cwd=self.workdir,
            env=env,
        )
        self._wait_listening()
        return self

    def modules(self) -> set[str]:
        self.modules_file.unlink(missing_ok=True)  # an earlier gateway's, in the same directory
        Path(f"{self.modules_file}.want").touch()
        deadline = time.monotonic() + 10
        while not self.modules_file.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the worker did not list its modules:\n" + self.stderr)
            time.sleep(0.02)
        return set(self.modules_file.read_text().split())

    def threads(self) -> list[str]:
        tasks = Path(f"/proc/{self.pid}/task")
        return [(task / "comm").read_text().strip() for task in tasks.iterdir()]


@pytest.fixture
def probed(tmp_path: Path):  # type: ignore[no-untyped-def]
    started: list[ProbedGateway] = []

    def make(config: dict[str, object], port: int) -> ProbedGateway:
        path = tmp_path / "bastion.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        gw = ProbedGateway(path, port, tmp_path).start()
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop(signal.SIGTERM)


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """The names of `names` that are loaded, as packages or any of their submodules."""
    return [
        n for n in names if any(m == n or m.startswith(n + ".") for m in modules if m != STUB)
    ]


def test_a_plain_gateway_at_idle_has_not_loaded_the_libraries_it_does_not_use(
    backend: Backend, probed, tmp_path: Path
) -> None:
    port = free_port()
    config: dict[str, Any] = {
        "listen": {"http": f"127.0.0.1:{port}"},
        "workers": 1,
        "data_dir": str(tmp_path / "data"),
        "sites": [
            {"hosts": ["*"], "routes": [{"path": "/", "proxy": {"upstreams": [backend.url]}}]}
        ],
    }
    gw = probed(config, port)
    browser = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"
    with httpx.Client(headers={"User-Agent": browser, "Accept-Encoding": "gzip, br"}) as client:
        for _ in range(5):
            assert client.get(f"{gw.url}/hello").status_code == 200
        # the statistics writer has parsed the User-Agent once its batch is written
        deadline = time.monotonic() + 10
        while "ua_parser" not in (modules := gw.modules()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "bastion.observe.stats.writer" in modules  # statistics are on: the probe sees them
        assert "ua_parser" in modules  # and the parser whose loaders would import PyYAML
        assert _loaded(modules, NOT_IN_A_PLAIN_WORKER) == []
        # listeners on IP addresses are bound without the loop's resolver: no thread pool
        assert "libuv-worker" not in gw.threads()
        # a reload, and a rejected one, are validated by a child as well
        config["sites"][0]["routes"].insert(0, {"path": "/v2", "respond": {"status": 204}})
        gw.reload(yaml.safe_dump(config), wait_for="configuration reloaded")
        assert client.get(f"{gw.url}/v2").status_code == 204
        gw.reload("sites: [{hosts: ['*'], rutes: []}]\n", wait_for="reload rejected")
        assert "bastion.yaml:1: sites[0]: unknown key 'rutes' (did you mean 'routes'?)" in gw.stderr
        assert client.get(f"{gw.url}/v2").status_code == 204
        assert _loaded(gw.modules(), NOT_IN_A_PLAIN_WORKER) == []


def test_quick_mode_and_a_supervisor_hold_no_config_models(
    backend: Backend, probed, tmp_path: Path
) -> None:
    """Quick mode's config is validated by a child too; and a supervisor (workers: 2),
    whose modules its forked workers inherit, holds none of them either, after a reload."""
    port = free_port()
    quick = ProbedGateway(tmp_path / "none.yaml", port, tmp_path)
    quick.args = ["proxy", "--from", f"http://127.0.0.1:{port}", "--to", backend.url]
    quick.start()
    try:
        assert httpx.get(f"{quick.url}/hello").status_code == 200
        assert _loaded(quick.modules(), MODELS) == []
    finally:
        quick.stop(signal.SIGTERM)
    port = free_port()
    config: dict[str, Any] = {
        "listen": {"http": f"127.0.0.1:{port}"},
        "workers": 2,
        "data_dir": str(tmp_path / "data"),
        "sites": [{"hosts": ["*"], "routes": [{"path": "/", "respond": {"status": 204}}]}],
    }
    gw = probed(config, port)
    assert httpx.get(f"{gw.url}/").status_code == 204
    config["sites"][0]["routes"][0]["respond"]["status"] = 202
    gw.reload(yaml.safe_dump(config))
    deadline = time.monotonic() + 15  # each worker validates it again, then reloads
    while gw.stderr.count("configuration reloaded") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gw.stderr.count("configuration reloaded") == 2, gw.stderr
    assert {httpx.get(f"{gw.url}/").status_code for _ in range(8)} == {202}
    assert _loaded(gw.modules(), MODELS) == []


# not needed by a restarted https gateway whose certificates come from the local CA
NOT_IN_A_LOCAL_CA_WORKER = (
    "cryptography",  # the leaves are fresh: checked through ssl, nothing to issue
    "bastion.acme.client",  # no ACME name: the renewal manager runs without the client
    "bastion.acme.issuer",
    "urllib.request",
    "http.client",
    "email",
)


def test_a_restarted_local_ca_gateway_has_not_loaded_cryptography(
    backend: Backend, probed, tmp_path: Path
) -> None:
    port, https = free_port(), free_port()
    config = {
        "listen": {"http": f"127.0.0.1:{port}", "https": f"127.0.0.1:{https}"},
        "workers": 1,
        "data_dir": str(tmp_path / "data"),
        "sites": [
            {
                "hosts": ["localhost"],
                "tls": "internal",
                "routes": [{"path": "/", "proxy": {"upstreams": [backend.url]}}],
            }
        ],
    }
    first = probed(config, port)  # creates the root and issues the leaf
    assert "cryptography" in first.modules()  # what the guard below would see if it regressed
    first.stop(signal.SIGTERM)
    gw = probed(config, port)
    root = tmp_path / "data" / "ca" / "root.crt"
    with httpx.Client(verify=ssl.create_default_context(cafile=root)) as client:
        for _ in range(3):
            assert client.get(f"https://localhost:{https}/hello").status_code == 200
    loaded = _loaded(gw.modules(), NOT_IN_A_LOCAL_CA_WORKER)
    assert loaded == []


def test_metrics_and_alerts_load_their_libraries_when_first_used(
    backend: Backend, probed, tmp_path: Path
) -> None:
    port, metrics = free_port(), free_port()
    gw = probed(
        {
            "listen": {"http": f"127.0.0.1:{port}"},
            "workers": 1,
            "data_dir": str(tmp_path / "data"),
            "metrics": {"listen": f"127.0.0.1:{metrics}"},
            "alerts": {"rules": {"errors": {"kind": "error_rate", "threshold": "10%"}}},
            "sites": [
                {"hosts": ["*"], "routes": [{"path": "/", "proxy": {"upstreams": [backend.url]}}]}
            ],
        },
        port,
    )
    for _ in range(3):
        assert httpx.get(f"{gw.url}/hello").status_code == 200
    # no scrape yet, no notification sent (the rule has no channel): neither client loaded
    assert _loaded(gw.modules(), ("prometheus_client", "smtplib", "urllib.request")) == []
    scrape = httpx.get(f"http://127.0.0.1:{metrics}/metrics")
    assert scrape.status_code == 200 and "bastion_requests_total" in scrape.text
    assert "prometheus_client" in gw.modules()
