"""docs/quickstart.md works as written: its ``sh`` blocks, in order, as one shell script,
with the `bastion` of this checkout on PATH, against a real Pebble. The ports are the
doc's own (Pebble's defaults and the app's 8000): the test fails, rather than skip, when
one of them is taken."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "quickstart.md"
PORTS = (8000, 8443, 5001, 5002, 14000, 15000, 8053, 8055)
TOOLS = ("curl", "openssl", "pebble", "pebble-challtestsrv")


def shell_blocks(text: str) -> list[str]:
    """The ``sh`` fenced blocks of a Markdown text, in order."""
    return re.findall(r"^```sh\n(.*?)^```$", text, flags=re.M | re.S)


def test_the_doc_has_runnable_blocks() -> None:
    blocks = shell_blocks(DOC.read_text())
    assert len(blocks) >= 6
    assert any("bastion proxy --from https://api.example.test" in b for b in blocks)


def test_quickstart_commands_work_as_written(tmp_path: Path) -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        message = f"not installed: {', '.join(missing)}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    for port in PORTS:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                pytest.fail(f"port {port}, which docs/quickstart.md uses, is taken")
    script = "set -euo pipefail\n" + "\n".join(shell_blocks(DOC.read_text()))
    home = tmp_path / "home"
    home.mkdir()
    env = dict(
        os.environ,
        # `bastion` is this checkout's, as pipx would put it on PATH
        PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        HOME=str(home),
        # root's default data dir is /var/lib/bastion: keep the test's own
        BASTION_DATA_DIR=str(tmp_path / "data"),
    )
    env.pop("BASTION_CONFIG", None)
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its background jobs too are stopped below
    )
    try:
        output, _ = proc.communicate(timeout=180)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    logs = "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in tmp_path.glob("*.log")
    )
    assert proc.returncode == 0, f"{output}\n{logs}"
    # what the doc says each step prints
    assert output.count("hello from the app") == 2, output
    assert "https://api.example.test:5001/" in output, output
    assert "acme: serving the certificate for api.example.test" in output, output
    assert "configuration OK" in output and "— no failure" in output, output
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in output, output
    assert (tmp_path / "bastion.yaml").is_file()
