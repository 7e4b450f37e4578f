"""`bastion service install` as an operator runs it: a subprocess of `python -m bastion
service install` writing a systemd unit into a directory of the test's, checked by
`systemd-analyze verify` (the real systemd parser), and its refusals."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import free_port

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def install(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion", "service", "install", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def write_config(tmp_path: Path, **extra: object) -> Path:
    config = {
        "listen": {"http": f"127.0.0.1:{free_port()}"},
        "access_log": {"format": "json", "path": str(tmp_path / "logs" / "access.log")},
        "shutdown_timeout": "50s",
        "sites": [{"routes": [{"path": "/", "proxy": {"upstreams": ["http://127.0.0.1:8000"]}}]}],
        **extra,
    }
    path = tmp_path / "etc" / "bastion.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def me() -> str:
    """A user that exists here and that systemd does not call unsafe (as it does nobody)."""
    return pwd.getpwuid(os.getuid()).pw_name


def test_install_writes_a_unit_systemd_accepts(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    units = tmp_path / "units"
    units.mkdir()
    # a relative config path becomes absolute in the unit
    result = install(
        "-c", "etc/bastion.yaml", "--unit-dir", str(units), "--user", me(), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    unit_path = units / "bastion.service"
    assert f"wrote {unit_path}" in result.stdout
    unit = unit_path.read_text()
    lines = unit.splitlines()
    exec_start = next(line for line in lines if line.startswith("ExecStart="))
    program = exec_start.removeprefix("ExecStart=").split()[0]
    assert Path(program).is_absolute() and os.access(program, os.X_OK)
    assert exec_start.endswith(f" run -c {config}")
    for expected in (
        f"User={me()}",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
        "StateDirectory=bastion",
        "Environment=BASTION_DATA_DIR=/var/lib/bastion",
        "ProtectSystem=strict",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "MemoryDenyWriteExecute=yes",
        f"ReadWritePaths={tmp_path / 'logs'}",
        "After=network-online.target",
        "Wants=network-online.target",
        "WantedBy=multi-user.target",
    ):
        assert expected in lines, expected
    stop = next(int(line.split("=")[1]) for line in lines if line.startswith("TimeoutStopSec="))
    assert stop > 50  # longer than the config's shutdown_timeout
    nofile = next(int(line.split("=")[1]) for line in lines if line.startswith("LimitNOFILE="))
    assert nofile >= 65536
    for step in (
        "systemctl daemon-reload",
        "systemctl enable --now bastion",
        "journalctl -u bastion",
    ):
        assert step in result.stdout
    assert f"install -d -o {me()}" in result.stdout  # the log directory, for the user
    assert "useradd" not in result.stdout  # the user exists
    verify(unit_path)


def verify(unit_path: Path) -> None:
    """systemd's own parser accepts the unit without a word about it."""
    if SYSTEMD_ANALYZE is None:
        message = "systemd-analyze is not installed (apt-get install systemd)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    checked = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", str(unit_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = checked.stdout + checked.stderr
    assert checked.returncode == 0, output
    assert unit_path.name not in output, output


def test_a_named_instance_with_its_own_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "state"
    config = write_config(tmp_path, data_dir=str(data))
    units = tmp_path / "units"
    units.mkdir()
    result = install(
        "-c", str(config), "--unit-dir", str(units), "--user", me(), "--name", "bastion-api",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    unit_path = units / "bastion-api.service"
    lines = unit_path.read_text().splitlines()
    assert "StateDirectory=bastion-api" in lines
    # the config's data_dir is used: not overridden by the environment, and writable
    assert not any(line.startswith("Environment=BASTION_DATA_DIR") for line in lines)
    rw = next(line for line in lines if line.startswith("ReadWritePaths="))
    assert str(data) in rw.split("=", 1)[1].split()
    assert f"chown -R {me()}" in result.stdout
    assert "systemctl enable --now bastion-api" in result.stdout
    verify(unit_path)


def test_print_writes_nothing_and_shows_the_steps(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    units = tmp_path / "units"
    units.mkdir()
    result = install(
        "-c", str(config), "--unit-dir", str(units), "--user", "no-such-user-here", "--print",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert list(units.iterdir()) == []
    assert "[Service]" in result.stdout and "User=no-such-user-here" in result.stdout
    # the steps go to stderr, so that `--print > bastion.service` saves only the unit
    assert "[Service]" not in result.stderr
    assert "useradd --system --user-group" in result.stderr
    assert "no-such-user-here" in result.stderr


def test_existing_unit_is_kept_without_force(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    units = tmp_path / "units"
    units.mkdir()
    unit_path = units / "bastion.service"
    unit_path.write_text("# mine\n")
    result = install("-c", str(config), "--unit-dir", str(units), cwd=tmp_path)
    assert result.returncode == 1
    assert f"{unit_path} exists: --force replaces it" in result.stderr
    assert unit_path.read_text() == "# mine\n"
    result = install("-c", str(config), "--unit-dir", str(units), "--force", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "[Service]" in unit_path.read_text()


def test_missing_or_broken_config_writes_no_unit(tmp_path: Path) -> None:
    units = tmp_path / "units"
    units.mkdir()
    result = install("-c", str(tmp_path / "nope.yaml"), "--unit-dir", str(units), cwd=tmp_path)
    assert result.returncode == 1
    assert f"no config at {tmp_path / 'nope.yaml'}" in result.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "sites:\n  - routes:\n      - path: /\n        proxy: {upstreams: [ftp://x]}\n"
    )
    result = install("-c", str(broken), "--unit-dir", str(units), cwd=tmp_path)
    assert result.returncode == 1
    assert "broken.yaml:4" in result.stderr  # the loader's message, with its line
    assert "no unit written" in result.stderr
    assert list(units.iterdir()) == []
    assert "Traceback" not in result.stderr


def test_unwritable_unit_dir_suggests_sudo_or_print(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    units = tmp_path / "units"
    units.mkdir(mode=0o555)
    prefix: list[str] = []
    if os.geteuid() == 0:  # root writes anywhere: drop the capabilities that let it
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("setpriv (util-linux) is needed to drop root's capability")
        drop = "-dac_override,-dac_read_search"
        prefix = [setpriv, "--bounding-set", drop, "--inh-caps", drop]
    command = [sys.executable, "-m", "bastion", "service", "install"]
    result = subprocess.run(
        [*prefix, *command, "-c", str(config), "--unit-dir", str(units)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "permission denied" in result.stderr
    assert "sudo" in result.stderr and "--unit-dir" in result.stderr and "--print" in result.stderr
    assert list(units.iterdir()) == []
    assert "Traceback" not in result.stderr
