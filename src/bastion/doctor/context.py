"""Everything a check looks at, in one object: the config, the data dir, where /proc is, the
DNS servers, the clock, an HTTP fetcher, the pid files and the systemd unit. The CLI fills
it from the real machine; tests point it at fixtures (a fake DNS server on loopback, a
/proc-like directory, a skewed clock, a fake ACME directory)."""

from __future__ import annotations

import datetime as dt
import os
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

import bastion.doctor.procfs as procfs

if TYPE_CHECKING:
    import dns.resolver

    from bastion.config import Config, LoadedConfig
    from bastion.doctor.unit import Unit

__all__ = ["DoctorContext", "HttpAnswer", "fetch"]

T = TypeVar("T")
DEFAULT_TIMEOUT = 2.0  # every network step; the whole doctor stays within a few seconds
DEFAULT_UNIT = Path("/etc/systemd/system/bastion.service")


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes


HttpGet = Callable[[str, float, str | None], HttpAnswer]


def fetch(url: str, timeout: float, cafile: str | None = None) -> HttpAnswer:
    """GET ``url`` (an error status is an answer too); raises OSError when nothing answers."""
    context = ssl.create_default_context(cafile=cafile) if url.startswith("https:") else None
    request = urllib.request.Request(url, headers={"User-Agent": "bastion-doctor"})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            return HttpAnswer(response.status, headers, response.read(65536))
    except urllib.error.HTTPError as exc:
        headers = {k.lower(): v for k, v in exc.headers.items()}
        return HttpAnswer(exc.code, headers, b"")
    except urllib.error.URLError as exc:
        reason = exc.reason
        raise OSError(str(reason)) from None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class DoctorContext:
    config_path: str
    data_dir_flag: str | None = None  # --data-dir (else resolved as bastion does)
    offline: bool = False
    proc: Path = Path("/proc")
    nameservers: tuple[str, ...] | None = None  # None: the system's resolver
    dns_port: int = 53
    timeout: float = DEFAULT_TIMEOUT
    now: Callable[[], dt.datetime] = _now
    http_get: HttpGet = fetch
    pid_files: tuple[Path, ...] = ()
    unit_path: Path | None = DEFAULT_UNIT  # None: no unit to look at
    # where the CA connects for each challenge: 80 and 443 by RFC 8555; tests use others
    challenge_ports: dict[str, int] = field(
        default_factory=lambda: {"http-01": 80, "tls-alpn-01": 443}
    )
    euid: int = field(default_factory=os.geteuid)
    # set by the config check (or given: the demo's config is built, not read from a file)
    loaded: LoadedConfig | None = None
    # the inodes of the doctor's own listening sockets (the reachability probe)
    own_sockets: set[int] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _key_locks: dict[Hashable, threading.Lock] = field(default_factory=dict, repr=False)
    _cache: dict[Hashable, object] = field(default_factory=dict, repr=False)

    @property
    def config(self) -> Config:
        """The loaded Config (the runner calls checks that need it only when it loaded)."""
        if self.loaded is None:
            raise RuntimeError("a check that needs the config ran without one")
        return self.loaded.config

    @property
    def data_dir(self) -> Path:
        """The data dir bastion would use, resolved the way bastion does."""
        return self.data_dir_and_source[0]

    @cached_property
    def data_dir_and_source(self) -> tuple[Path, str]:
        """The data dir, and where that choice comes from."""
        from bastion.state.files import DATA_DIR_ENV, resolve_data_dir

        if self.data_dir_flag:
            return Path(self.data_dir_flag).expanduser().resolve(), "--data-dir"
        if os.environ.get(DATA_DIR_ENV):
            return resolve_data_dir(None), f"${DATA_DIR_ENV}"
        service = self.unit.environment().get(DATA_DIR_ENV) if self.unit else None
        if service:  # the installed service's, which it exports to bastion
            return Path(service), f"{DATA_DIR_ENV} of {self.unit_path}"
        configured = self._configured_data_dir()
        if configured:
            return resolve_data_dir(configured), "the config's data_dir"
        who = "root" if os.geteuid() == 0 else "a user other than root"
        return resolve_data_dir(None), f"the default for {who}"

    def _configured_data_dir(self) -> str | None:
        if self.loaded is not None:
            return self.loaded.config.data_dir
        # a config that does not load may still say where its data dir is
        from bastion.config import ConfigError
        from bastion.config.partial import operator_settings

        try:
            return operator_settings(self.config_path).data_dir
        except (ConfigError, OSError):
            return None

    @property
    def unit(self) -> Unit | None:
        """The systemd unit installed for bastion, if any (read once)."""
        from bastion.doctor.unit import read_unit

        return self.cached(("unit", self.unit_path), lambda: read_unit(self.unit_path))

    @cached_property
    def local_addresses(self) -> set[procfs.IPAddress]:
        return procfs.local_addresses(self.proc)

    @cached_property
    def running_bastion(self) -> int | None:
        """The pid of a running bastion named by a pid file, if any."""
        paths = list(self.pid_files)
        service = self.unit.pid_file() if self.unit else None
        if service is not None:
            paths.append(service)
        if self.loaded is not None and self.loaded.config.pid_file:
            paths.insert(0, Path(self.loaded.config.pid_file))
        for path in paths:
            try:
                pid = int(path.read_text().strip())
            except (OSError, ValueError):
                continue
            if "bastion" in procfs.process_name(self.proc, pid):
                return pid
        return None

    def resolver(self) -> dns.resolver.Resolver:
        """A resolver with short timeouts: the system's, or the context's servers."""
        import dns.resolver

        if self.nameservers is None:
            resolver = dns.resolver.Resolver()
        else:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = list(self.nameservers)
            resolver.port = self.dns_port
        resolver.timeout = resolver.lifetime = self.timeout
        return resolver

    def cached(self, key: Hashable, compute: Callable[[], T]) -> T:
        """Share a result between checks running in parallel (the DNS answers used by the
        DNS, CAA and reachability checks): computed once per key."""
        with self._lock:
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._cache:
                self._cache[key] = compute()
            return cast(T, self._cache[key])
