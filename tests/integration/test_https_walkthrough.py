"""docs/https.md's walkthrough of ACME against Pebble, run as written: every ```sh block
after a `<!-- pebble walkthrough -->` line, in order, as one script (ports moved to free
ones through the variables the walkthrough defines, so that it runs beside other tests)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port

DOC = Path(__file__).resolve().parents[2] / "docs" / "https.md"
MARKER = "<!-- pebble walkthrough -->"
BLOCK = re.compile(re.escape(MARKER) + r"\n```sh\n(.*?)\n```", re.DOTALL)
PORTS = ("PEBBLE_PORT", "PEBBLE_ADMIN_PORT", "DNS_PORT", "DNS_ADMIN_PORT", "HTTP_PORT")


def walkthrough() -> str:
    text = DOC.read_text()
    blocks = BLOCK.findall(text)
    assert len(blocks) == text.count(MARKER), "a marker not followed by a ```sh block"
    return "\n".join(blocks)


def test_the_walkthrough_defines_every_port_it_uses() -> None:
    script = walkthrough()
    assert len(script.splitlines()) > 40
    for name in (*PORTS, "HTTPS_PORT"):
        assert f': "${{{name}:=' in script, name
    assert "https://localhost:$PEBBLE_PORT/dir" in script
    assert "-dnsserver" in script and "trusted_roots: ./pebble-ca.crt" in script


def test_the_pebble_walkthrough_runs_as_written(tmp_path: Path) -> None:
    tools = ("pebble", "pebble-challtestsrv", "openssl", "curl")
    missing = [tool for tool in tools if not shutil.which(tool)]
    if missing:
        message = f"not installed: {', '.join(missing)} (apt-get install pebble openssl curl)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    # `bastion` on the PATH is this interpreter's (with this checkout on PYTHONPATH)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "bastion"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m bastion "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    env.pop("BASTION_DATA_DIR", None)
    for name in PORTS:
        env[name] = str(free_port())
    env["HTTPS_PORT"] = str(free_port())
    workdir = tmp_path / "walk"
    workdir.mkdir()
    # the script's own last block stops what it started; the trap does so when it fails
    script = "set -eu\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + walkthrough()
    out = subprocess.run(
        ["bash", "-c", script],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    logs = "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in workdir.glob("*.log")
    )
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}\n{logs}"
    assert "hello over a certificate from Pebble" in out.stdout
    assert "Verify return code: 0 (ok)" in out.stdout
    assert re.search(r"bastion\.test\s+acme\s+Pebble Intermediate", out.stdout), out.stdout
