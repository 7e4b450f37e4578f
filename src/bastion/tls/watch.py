"""Certificate files that change under a running worker.

A watcher polls the mtimes of every certificate and key file served (files given in the
config, local-CA leaves and the ACME store), so a certificate renewed by ``bastion certs
renew`` or by a script is used for new handshakes within ``tls.watch_interval``; a pair
that does not load is logged and the old one kept. Local-CA leaves are short-lived: the
watcher re-issues those in their last third, and then loads them like any changed file.

Swapping a certificate only changes the SNI table entry: connections already established
keep theirs. All blocking work (files, key loading) runs in threads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from bastion.tls.context import certificate_context
from bastion.tls.localca import LocalCA
from bastion.tls.table import TLSTable

__all__ = ["CertWatcher"]

log = logging.getLogger("bastion.acme")

_LEAF_CHECK = 600.0  # how often local-CA leaves are checked for re-issue (seconds)


class CertWatcher:
    """One per worker; reads the worker's current SNI table through ``current_table``."""

    def __init__(self, current_table: Callable[[], TLSTable | None]) -> None:
        self.table = current_table
        self.task: asyncio.Task[None] | None = None
        self.mtimes: dict[str, tuple[float, float]] = {}
        self.data_dir: Path | None = None

    def start(self, table: TLSTable, data_dir: Path, interval: float) -> None:
        """Watch ``table``'s files from now on (the first call starts the task)."""
        # the files as this table loaded them: later changes are what the watcher looks for
        for site in table.sites:
            if site.key_file:
                self.mtimes[site.cert_file] = _mtimes(site.cert_file, site.key_file)
        self.data_dir = data_dir
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._watch(interval))

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def loaded(self, cert: str, key: str) -> None:
        """``cert`` and ``key`` were just loaded by someone else: not a change to report."""
        self.mtimes[cert] = _mtimes(cert, key)

    async def context(self, cert: str, key: str) -> ssl.SSLContext:
        """A certificate context with the current table's profile (in a thread)."""
        table_profile = "intermediate"
        table = self.table()
        if table is not None:
            table_profile = table.profile
        return await asyncio.to_thread(certificate_context, cert, key, table_profile)

    def _reissue_local_leaves(self, table: TLSTable) -> None:
        if self.data_dir is not None:
            _reissue_local_leaves_of(self.data_dir, table)

    async def _watch(self, interval: float) -> None:
        next_leaf_check = time.monotonic() + _LEAF_CHECK
        while True:
            await asyncio.sleep(interval)
            table = self.table()
            if table is None:
                continue
            if time.monotonic() >= next_leaf_check:
                next_leaf_check = time.monotonic() + _LEAF_CHECK
                await asyncio.to_thread(self._reissue_local_leaves, table)
            for site in list(table.sites):
                if not site.key_file:
                    continue
                now = _mtimes(site.cert_file, site.key_file)
                before = self.mtimes.setdefault(site.cert_file, now)
                if now == before:
                    continue
                self.mtimes[site.cert_file] = now
                if now == (0.0, 0.0):
                    # removed (a revocation: the ACME code obtains another, which is
                    # written here): nothing to load, nothing wrong yet
                    log.info(
                        "tls: %s was removed; still serving the certificate loaded for %s "
                        "until another is written there",
                        site.cert_file,
                        ", ".join(site.names),
                    )
                    continue
                try:
                    context = await self.context(site.cert_file, site.key_file)
                except (OSError, ValueError) as exc:
                    if time.time() - max(now) < 2.0:
                        # maybe caught between the key's and the certificate's write
                        self.mtimes[site.cert_file] = before
                        continue
                    reason = getattr(exc, "reason", None) or exc
                    log.error(
                        "tls: %s or %s changed but does not load (%s); still serving the "
                        "previous certificate for %s",
                        site.cert_file,
                        site.key_file,
                        reason,
                        ", ".join(site.names),
                    )
                    continue
                if table.replace(site.names, context):
                    log.info(
                        "tls: %s changed; new handshakes for %s use it",
                        site.cert_file,
                        ", ".join(site.names),
                    )


def _reissue_local_leaves_of(data_dir: Path, table: TLSTable) -> None:
    """Local-CA leaves are short-lived (7 days): re-issue those in their last third, in
    place; the watcher then loads them like any changed file."""
    sites = [s for s in table.sites if s.mode == "internal"]
    if not sites:
        return
    ca = LocalCA(data_dir)
    for site in sites:
        try:
            ca.leaf(list(site.names))
        except (OSError, ValueError) as exc:
            log.error("tls: cannot re-issue the local CA certificate for %s: %s", site.names, exc)


def _mtimes(cert: str, key: str) -> tuple[float, float]:
    try:
        return os.stat(cert).st_mtime, os.stat(key).st_mtime
    except OSError:
        return 0.0, 0.0
