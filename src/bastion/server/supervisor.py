"""Several workers: forked processes, each with its own loop and SO_REUSEPORT
listeners, so the kernel spreads connections across them. The supervisor only
watches: it restarts a worker that dies, validates the file before passing a
reload on, and drains everything on SIGTERM/SIGINT.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time

from bastion.config import LoadedConfig
from bastion.config.handoff import load_config_apart
from bastion.server.worker import run_worker

log = logging.getLogger("bastion.server")

_RESTART_BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0)


class Supervisor:
    def __init__(self, loaded: LoadedConfig, workers: int) -> None:
        self.loaded = loaded
        self.count = workers
        self.children: dict[int, int] = {}  # pid -> worker slot
        self.crashes: dict[int, int] = {}  # slot -> recent crash count
        self.stopping = False
        self._reloading = False  # a SIGHUP's validation runs (in the signal handler)
        self._reload_again = False  # another SIGHUP came meanwhile

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(sig, self._on_signal)
        for slot in range(self.count):
            self._spawn(slot)
        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            slot = self.children.pop(pid, -1)
            if slot < 0 or self.stopping:
                continue
            crashes = self.crashes.get(slot, 0)
            delay = _RESTART_BACKOFF[min(crashes, len(_RESTART_BACKOFF) - 1)]
            self.crashes[slot] = crashes + 1
            log.error(
                "worker %d (pid %d) exited with status %d; restarting in %.1fs",
                slot,
                pid,
                os.waitstatus_to_exitcode(status),
                delay,
            )
            time.sleep(delay)
            if not self.stopping:
                self._spawn(slot)
        log.info("all workers stopped")
        return 0

    def _spawn(self, slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
                signal.signal(sig, signal.SIG_DFL)
            code = 0
            try:
                run_worker(self.loaded, reuse_port=True)
            except BaseException:
                log.exception("worker %d failed", slot)
                code = 1
            os._exit(code)
        self.children[pid] = slot
        log.info("worker %d started (pid %d)", slot, pid)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stopping = True
            self._forward(signal.SIGTERM)
        elif signum == signal.SIGHUP:
            if self._reloading:  # arrived during the validation below: it runs again after
                self._reload_again = True
                return
            self._reload_again = True
            while self._reload_again and not self.stopping:
                self._reloading = True
                try:
                    while self._reload_again and not self.stopping:
                        self._reload_again = False
                        self._reload()
                finally:
                    self._reloading = False
        else:
            self._forward(signum)

    def _reload(self) -> None:
        """Validate the file (a child process does, ``bastion.config.handoff``) and pass
        the reload on to the workers, which validate it again for themselves."""
        source = self.loaded.source
        if source is None:
            return
        try:
            self.loaded = load_config_apart(source)
        except Exception as exc:  # ConfigError; OSError: no child could be started; a bug
            if self.stopping:  # e.g. Ctrl-C reached the child too: no rejected reload
                return
            log.error("reload rejected, still serving the previous config:\n%s", exc)
            from bastion.observe.alerts.service import record_rejected_reload

            try:
                record_rejected_reload(self.loaded, str(exc))  # for the reload_failed rule
            except Exception:
                log.exception("the rejected reload could not be recorded")
            return
        if not self.stopping:
            self._forward(signal.SIGHUP)

    def _forward(self, signum: int) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
