"""The systemd unit `bastion service install` writes, from a loaded config: the sandbox
adapts to where the files are, and words are quoted the way systemd reads them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bastion.config import config_from_dict
from bastion.service_unit import ServicePlan, plan_service, systemd_quote

SITES = [{"routes": [{"path": "/", "respond": {"body": "ok"}}]}]


def service(config_path: str = "/etc/bastion/bastion.yaml", **config: Any) -> ServicePlan:
    loaded = config_from_dict({"sites": SITES, **config})
    command = ["/usr/local/bin/bastion"]
    return plan_service(loaded.config, Path(config_path), command, "bastion", "bastion", "bastion")


def unit_lines(config_path: str = "/etc/bastion/bastion.yaml", **config: Any) -> list[str]:
    return service(config_path, **config).unit.splitlines()


def test_quoting_follows_systemd() -> None:
    assert systemd_quote("/etc/bastion/b.yaml") == "/etc/bastion/b.yaml"
    assert systemd_quote("/srv/my site/b.yaml") == '"/srv/my site/b.yaml"'
    assert systemd_quote("/srv/100%/b.yaml") == "/srv/100%%/b.yaml"  # not a specifier
    assert systemd_quote('/a"b') == '"/a\\"b"'


def test_homes_are_hidden_unless_the_service_needs_them() -> None:
    assert "ProtectHome=yes" in unit_lines()
    lines = unit_lines("/home/alice/bastion.yaml")
    assert "ProtectHome=read-only" in lines
    assert "ExecStart=/usr/local/bin/bastion run -c /home/alice/bastion.yaml" in lines


def test_a_dns_hook_keeps_writable_executable_memory_allowed() -> None:
    assert "MemoryDenyWriteExecute=yes" in unit_lines()
    hook = {"dns_hook": {"command": "/usr/local/bin/dns-hook"}}
    lines = unit_lines(acme=hook)
    assert not any(line.startswith("MemoryDenyWriteExecute") for line in lines)


def test_log_under_var_log_is_a_logs_directory() -> None:
    lines = unit_lines(access_log={"path": "/var/log/bastion/access.log"})
    assert "LogsDirectory=bastion" in lines
    assert not any(line.startswith("ReadWritePaths") for line in lines)
    lines = unit_lines(access_log={"path": "/srv/logs/access.log"})
    assert "ReadWritePaths=/srv/logs" in lines


def test_stop_timeout_outlasts_the_shutdown_timeout() -> None:
    lines = unit_lines(shutdown_timeout="2m")
    stop = next(int(line.split("=")[1]) for line in lines if line.startswith("TimeoutStopSec="))
    assert stop > 120
    assert "KillMode=mixed" in lines


def test_admin_socket_directory() -> None:
    admin = {"listen": "unix:/run/bastion/admin.sock", "token": "t" * 32}
    plan = service(admin=admin)
    assert plan.writable == [] and plan.warnings == []  # the runtime directory
    plan = service(admin={**admin, "listen": "unix:/srv/sockets/admin.sock"})
    assert "ReadWritePaths=/srv/sockets" in plan.unit.splitlines()
    plan = service(admin={**admin, "listen": "unix:/run/admin.sock"})
    assert "ReadWritePaths=/run" not in plan.unit
    assert "unix:/run/bastion/admin.sock" in plan.warnings[0]
