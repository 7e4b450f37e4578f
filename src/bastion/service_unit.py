"""The systemd unit that runs bastion as a service, and the commands that prepare the
machine for it (``bastion service install`` writes the one and prints the others).

Pure: ``plan_service`` takes the loaded config and what the command was told, and returns
the unit's text with the steps to print. Nothing here writes a file, looks at systemd or
creates a user.

Choices, and why (docs/service.md repeats them for users):

- A static system user (``User=bastion``), not ``DynamicUser=``: the data dir holds the
  ACME account, certificates and API keys that must keep one owner across restarts and
  upgrades, operators run ``bastion certs`` / ``keys`` / ``status`` as that same user
  (``sudo -u bastion``), and certificate files named in the config can be given to its
  group.
- Ports 80 and 443 through ``AmbientCapabilities=CAP_NET_BIND_SERVICE`` and nothing else
  (``CapabilityBoundingSet``, ``NoNewPrivileges``).
- The data dir is systemd's ``StateDirectory`` (``/var/lib/<name>``, created and owned for
  the user), exported as ``BASTION_DATA_DIR`` unless the config names its own data_dir.
- The pid file goes to ``RuntimeDirectory`` (``/run/<name>``): bastion writes it under
  ``$XDG_RUNTIME_DIR``, which the unit points there (``/tmp`` is private to the service).
- ``MemoryDenyWriteExecute=yes``: bastion and its libraries never need memory that is both
  writable and executable (no cffi callbacks, no JIT); the test suite passes under the
  same kernel rule (``PR_SET_MDWE``). It is left out when an ACME DNS hook is configured,
  since that is an arbitrary program (a JIT runtime such as node would fail).
- ``KillMode=mixed``: SIGTERM goes to the main process, which stops its workers gracefully
  within ``shutdown_timeout``; ``TimeoutStopSec`` leaves it that long and a margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from bastion.config.addresses import UnixAddress
from bastion.config.models import Config

__all__ = ["ServicePlan", "plan_service", "systemd_quote"]

# the home directories a service cannot see under ProtectHome=yes
_HOMES = ("/home/", "/root/", "/run/user/")


def systemd_quote(word: str) -> str:
    """One word of a unit file's command line or path list: ``%`` doubled (specifiers),
    quoted when it holds a space, a quote or a backslash."""
    escaped = word.replace("%", "%%")
    if any(c in escaped for c in " \t\"\\'"):
        escaped = '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


@dataclass
class ServicePlan:
    """The unit file's text and what the operator must do around it."""

    unit: str
    data_dir: str
    writable: list[str] = field(default_factory=list)
    """Directories outside the data dir the service writes to (access log, pid file)."""
    warnings: list[str] = field(default_factory=list)


def _inside(path: str, directory: str) -> bool:
    return (path + "/").startswith(directory.rstrip("/") + "/")


def _under_home(path: str) -> bool:
    return any((path + "/").startswith(home) for home in _HOMES)


def plan_service(
    config: Config, config_path: Path, exec_start: list[str], user: str, group: str, name: str
) -> ServicePlan:
    """The unit for ``config`` (at the absolute ``config_path``), started by the absolute
    command ``exec_start`` (``… bastion``) as ``user`` and ``group``, named ``name``."""
    data_dir = config.data_dir or f"/var/lib/{name}"
    environment = [f"XDG_RUNTIME_DIR=/run/{name}"]
    if config.data_dir is None:
        # the environment wins over the config's data_dir, so it is set only without one
        environment.insert(0, f"BASTION_DATA_DIR={data_dir}")
    writable: list[str] = []
    logs_directory: str | None = None
    warnings: list[str] = []
    if config.data_dir is not None:
        writable.append(config.data_dir)
    if config.access_log.format != "off" and config.access_log.path not in ("stdout", "stderr"):
        log_dir = str(Path(config.access_log.path).parent)
        relative = log_dir.removeprefix("/var/log/")
        if relative != log_dir and relative and "/" not in relative:
            logs_directory = relative  # systemd creates /var/log/<it> owned by the user
        elif not _inside(log_dir, data_dir):
            writable.append(log_dir)
    if config.pid_file:
        pid_dir = str(Path(config.pid_file).parent)
        if not _inside(pid_dir, data_dir) and not _inside(pid_dir, f"/run/{name}"):
            writable.append(pid_dir)
    admin = config.admin.listen
    if isinstance(admin, UnixAddress):
        socket_dir = str(Path(admin.path).parent)
        runtime = f"/run/{name}"
        if _inside(socket_dir, runtime) or _inside(socket_dir, data_dir):
            pass
        elif socket_dir in ("/run", "/var/run", "/tmp", "/"):
            # opening all of it to the service would undo the sandbox; /tmp is private
            warnings.append(
                f"the admin socket {admin.path} is in {socket_dir}, which the service cannot "
                f"write: put it in its runtime directory, admin.listen: "
                f"unix:{runtime}/admin.sock"
            )
        else:
            writable.append(socket_dir)
    seen = [str(config_path), exec_start[0], *writable]
    protect_home = "yes"
    if any(_under_home(p) for p in seen):
        protect_home = "read-only"
        warnings.append(
            "the config or bastion itself is under a home directory: the unit makes homes "
            f"read-only instead of hidden, and {user} must be able to read them; better move "
            f"the config to /etc/{name}/ and install bastion outside homes "
            "(`sudo pipx install --global …`, or a virtualenv in /opt)"
        )
    stop_timeout = math.ceil(config.shutdown_timeout) + 15
    open_files = max(65536, 2 * config.limits.max_connections + 4096)
    command = " ".join(systemd_quote(w) for w in [*exec_start, "run", "-c", str(config_path)])
    lines = [
        "# Written by `bastion service install`; see docs/service.md.",
        "# Local changes belong in a drop-in: systemctl edit " + name,
        "[Unit]",
        "Description=bastion HTTPS reverse proxy and API gateway",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=exec",
        f"ExecStart={command}",
        "# bastion reloads its config on SIGHUP (a bad config is refused; the old one stays)",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "# SIGTERM to the main process, which drains its workers within shutdown_timeout",
        "KillMode=mixed",
        "KillSignal=SIGTERM",
        f"TimeoutStopSec={stop_timeout}",
        "Restart=on-failure",
        "RestartSec=2",
        f"User={user}",
        f"Group={group}",
        f"StateDirectory={name}",
        "StateDirectoryMode=0750",
        f"RuntimeDirectory={name}",
    ]
    if logs_directory is not None:
        lines.append(f"LogsDirectory={logs_directory}")
    lines += [f"Environment={systemd_quote(v)}" for v in environment]
    lines += [
        "# secrets the config reads as ${ENV} (mode 0600, owned by root)",
        f"EnvironmentFile=-/etc/{name}/{name}.env",
        "UMask=0027",
        f"LimitNOFILE={open_files}",
        "# ports below 1024, and no other privilege",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "# sandbox: the system read-only, the state, runtime and log directories writable",
        "ProtectSystem=strict",
        f"ProtectHome={protect_home}",
    ]
    if writable:
        lines.append("ReadWritePaths=" + " ".join(systemd_quote(p) for p in writable))
    lines += [
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "ProtectProc=invisible",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "RemoveIPC=yes",
        "LockPersonality=yes",
    ]
    if config.acme.dns_hook is None:
        lines.append("MemoryDenyWriteExecute=yes")
    else:
        lines.append("# MemoryDenyWriteExecute left out: the ACME DNS hook may be a JIT runtime")
    lines += [
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "SystemCallErrorNumber=EPERM",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return ServicePlan("\n".join(lines), data_dir, writable, warnings)
