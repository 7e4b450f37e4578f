"""Certificates over time, in each worker: first orders, renewals, and changed files.

- A site whose ACME certificate is missing is ordered in the background (its names are
  refused with ``unrecognized_name`` meanwhile); one that has a certificate gets a renewal
  task. Renewal happens at two thirds of the lifetime, or at a random point of the CA's
  ARI window (RFC 9773) when it publishes one, plus a small jitter so that many instances
  do not hit the CA at once; failures are retried with exponential back-off and logged
  louder as expiry nears.
- Every worker runs this. The store's issuance lock makes the first worker order; the
  others find the new certificate in the store (``obtain(replacing=serial)``) and order
  nothing.
- The manager also runs the worker's ``CertWatcher`` (``bastion.tls.watch``): changed
  certificate files, local-CA leaves.

The manager is told the SNI table, the settings and the data dir; it never sees routes.
Swapping a certificate only changes the SNI table entry: connections already established
keep theirs. All blocking work (HTTP to the CA, files, key loading) runs in threads.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import random
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from bastion.acme.problems import AcmeError
from bastion.acme.settings import alpn_challenge_dir
from bastion.tls.watch import CertWatcher

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.acme.issuer import AcmeIssuer
    from bastion.config.models import Config
    from bastion.observe.events import EventCounters
    from bastion.state.certs import CertFiles
    from bastion.tls.table import TLSTable

__all__ = ["CertManager"]

log = logging.getLogger("bastion.acme")

# back-off between failed ACME attempts for one site: 30s, 1m, 2m ... up to 1h
_FIRST_RETRY = float(os.environ.get("BASTION_ACME_RETRY", "30"))
_MAX_RETRY = 3600.0
_MAX_SLEEP = 3600.0  # re-check the schedule at least hourly (clock jumps, ARI changes)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _left(files: CertFiles) -> str:
    seconds = (files.not_after - _now()).total_seconds()
    if seconds <= 0:
        return "it has EXPIRED"
    if seconds < 2 * 86400:
        return f"it expires in {seconds / 3600:.1f} hours"
    return f"it expires in {seconds / 86400:.0f} days"


class CertManager:
    def __init__(self, current_table: Callable[[], TLSTable | None]) -> None:
        self.table = current_table
        self.tasks: dict[tuple[str, ...], asyncio.Task[None]] = {}
        self.watcher = CertWatcher(current_table)
        # how often a shared store is asked whether another instance stored a newer
        # certificate (tls.watch_interval, set by start)
        self.check_every = 60.0
        self.mirror: asyncio.Task[None] | None = None  # TLS-ALPN-01 certificates from Redis
        self.refused: dict[tuple[str, ...], str] = {}  # why a shared certificate was not taken
        # orders issued and failed are counted there for the metrics (set by the worker)
        self.events: EventCounters | None = None

    def start(self, table: TLSTable | None, config: Config, data_dir: Path) -> None:
        """Tasks for ``table``'s ACME sites (new and renewals) with ``config``'s ``acme``
        and ``tls.watch_interval`` settings, the stores under ``data_dir``, and the file
        watcher. Called again with each reload's table and config."""
        if table is None:
            return
        loop = asyncio.get_running_loop()
        self.watcher.start(table, data_dir, config.tls.watch_interval)
        self.check_every = config.tls.watch_interval
        self._mirror_alpn(config, data_dir)
        acme = [s for s in table.sites if s.mode == "acme"]
        if not table.pending and not acme:
            for task in self.tasks.values():
                task.cancel()
            self.tasks = {}
            return
        # fresh tasks with this config's settings (key type, challenges, CA); an order already
        # running in a thread finishes, and the new task finds its result in the store
        # the ACME client (cryptography, urllib's HTTP client) is imported by the first
        # table that has ACME names: certificate files and the local CA do without it
        from bastion.acme.settings import issuer_for

        issuer = issuer_for(config, data_dir)
        for task in self.tasks.values():
            task.cancel()
        self.tasks = {}
        wanted = {p.names for p in table.pending} | {s.names for s in acme}
        for names in wanted:
            self.tasks[names] = loop.create_task(self._run(issuer, names))

    def _mirror_alpn(self, config: Config, data_dir: Path) -> None:
        """With challenges shared through Redis and https listeners that may answer
        TLS-ALPN-01, copy other instances' challenge certificates to this worker's
        listeners (once per worker; the settings of the first config that needs it)."""
        if self.mirror is not None or config.state.redis is None:
            return
        if alpn_challenge_dir(config) is None:
            return
        from bastion.acme.solvers import alpn_dir
        from bastion.state.stores import stores_for

        shared = stores_for(data_dir).challenges(config.state)
        mirror = getattr(shared, "mirror_alpn", None)
        if mirror is not None:
            self.mirror = asyncio.get_running_loop().create_task(mirror(alpn_dir(data_dir)))

    def stop(self) -> None:
        if self.mirror is not None:
            self.mirror.cancel()
        for task in self.tasks.values():
            task.cancel()
        self.watcher.stop()

    # ---------------------------------------------------------------- ACME
    async def _run(self, issuer: AcmeIssuer, names: tuple[str, ...]) -> None:
        """``_lifecycle``, restarted after an unexpected error instead of dying silently."""
        while True:
            try:
                await self._lifecycle(issuer, names)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "acme: unexpected error managing the certificate for %s; retrying in %.0fs",
                    ", ".join(names),
                    _FIRST_RETRY,
                )
                await asyncio.sleep(_FIRST_RETRY)

    async def _lifecycle(self, issuer: AcmeIssuer, names: tuple[str, ...]) -> None:
        """Obtain (when pending), then renew forever."""
        try:
            files = await asyncio.to_thread(issuer.stored, list(names))
        except ValueError:
            files = None  # (a shared key that does not open: _attempt reports it)
        if files is None or not self._serving(names):
            files = await self._attempt(issuer, names, None)
        while True:
            when = await self._schedule(issuer, files)
            await asyncio.to_thread(
                issuer.write_status, list(names), next_renewal=when.isoformat(timespec="seconds")
            )
            taken = await self._wait_until(issuer, names, files, when)
            if taken is not None:
                files = taken  # another instance renewed it: schedule the next renewal
                continue
            files = await self._attempt(issuer, names, files)

    async def _wait_until(
        self, issuer: AcmeIssuer, names: tuple[str, ...], files: CertFiles, when: dt.datetime
    ) -> CertFiles | None:
        """Sleep until ``when``, looking at the store every ``check_every`` seconds; returns
        the certificate served from then on when it changed meanwhile:

        - with a store shared by other instances, the serial of its certificate (one small
          read, no parsing): when another instance stored a new one, it is installed, so
          that every instance serves the renewed certificate within ``tls.watch_interval``
          of its renewal and not only at its own renewal time;
        - when the store says its certificate was revoked (``bastion certs revoke`` on
          this machine or, with a shared store, on any), another is obtained at once:
          a revoked certificate is refused by clients that check, so it is not served
          until the next renewal (with a shared store the instances' orders meet at the
          issuance lock, and one orders)."""
        certs = issuer.certs
        delay = (when - _now()).total_seconds()
        while delay > 0:
            await asyncio.sleep(min(delay, _MAX_SLEEP, self.check_every))
            serial = None
            if certs.shared:
                serial = await asyncio.to_thread(certs.serial, list(names))
                if serial is not None and serial != files.serial:
                    taken = await self._take_up(issuer, names, files)
                    if taken is not None:
                        return taken
            # (a revoked mark stays until the next pair is stored: while it is there, the
            # last certificate stored was revoked, whichever one this loop scheduled)
            revoked = None if serial else await asyncio.to_thread(certs.revoked, list(names))
            if revoked is not None:
                log.warning(
                    "acme: the certificate for %s (serial %x) was revoked: obtaining another",
                    ", ".join(names),
                    revoked,
                )
                return await self._attempt(issuer, names, None)
            delay = (when - _now()).total_seconds()
        return None

    async def _take_up(
        self, issuer: AcmeIssuer, names: tuple[str, ...], files: CertFiles
    ) -> CertFiles | None:
        """The certificate another instance stored, installed; None if it does not load."""
        try:
            found = await asyncio.to_thread(issuer.stored, list(names))
            if found is None or found.serial == files.serial:
                return None
            context = await self.watcher.context(str(found.cert), str(found.key))
        except (OSError, ValueError) as exc:
            if self.refused.get(names) != str(exc):  # (said once, not every interval)
                self.refused[names] = str(exc)
                log.warning(
                    "acme: another instance stored a certificate for %s that cannot be used "
                    "here (%s); still serving serial %x",
                    ", ".join(names),
                    exc,
                    files.serial,
                )
            return None
        self.refused.pop(names, None)
        self._install(names, found, context, False)
        return found

    def _serving(self, names: tuple[str, ...]) -> bool:
        table = self.table()
        return table is not None and any(s.names == names for s in table.sites)

    async def _schedule(self, issuer: AcmeIssuer, files: CertFiles) -> dt.datetime:
        lifetime = (files.not_after - files.not_before).total_seconds()
        window = await asyncio.to_thread(issuer.renewal_window, files)
        if window is not None:
            # RFC 9773 4.2: a uniformly random point inside the suggested window
            return dt.datetime.fromtimestamp(random.uniform(*window), dt.UTC)
        if await asyncio.to_thread(issuer.due, files):
            return _now()
        # jitter: up to 1% of the lifetime (at most an hour) either way
        spread = min(lifetime * 0.01, 3600.0)
        return files.renew_at() + dt.timedelta(seconds=random.uniform(-spread, spread))

    async def _attempt(
        self, issuer: AcmeIssuer, names: tuple[str, ...], current: CertFiles | None
    ) -> CertFiles:
        """Order (or pick up from the store) until it works; install it; return it."""
        delay = _FIRST_RETRY
        what = ", ".join(names)
        while True:
            try:
                replacing = None if current is None else current.serial
                files = await asyncio.to_thread(
                    issuer.obtain, list(names), force=current is not None, replacing=replacing
                )
                context = await self.watcher.context(str(files.cert), str(files.key))
            except (AcmeError, OSError, ValueError) as exc:
                delay = max(delay, getattr(exc, "retry_after", None) or 0.0)
                hint = getattr(exc, "hint", "")
                await asyncio.to_thread(
                    issuer.write_status,
                    list(names),
                    last_error=f"{_now().isoformat(timespec='seconds')} {exc}",
                )
                self._report(what, exc, hint, delay, current)
                if self.events is not None:
                    self.events.acme_order(False)
            else:
                await asyncio.to_thread(issuer.write_status, list(names), last_error=None)
                # a certificate taken up from the store was no order of ours
                if self.events is not None and files.serial in issuer.ordered:
                    self.events.acme_order(True)
                self._install(names, files, context, current is None)
                return files
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_RETRY)

    def _report(
        self, what: str, exc: Exception, hint: str, delay: float, current: CertFiles | None
    ) -> None:
        if current is None:
            log.error(
                "acme: could not get a certificate for %s: %s. What to do: %s. "
                "Retrying in %.0fs; meanwhile HTTPS for these names is refused "
                "(unrecognized_name)",
                what,
                exc,
                hint or "see the error",
                delay,
            )
            return
        left = (current.not_after - _now()).total_seconds()
        lifetime = (current.not_after - current.not_before).total_seconds()
        # louder as expiry nears: warning, then error in the last tenth of the lifetime
        level = logging.ERROR if left < lifetime / 10 else logging.WARNING
        log.log(
            level,
            "acme: renewing the certificate for %s failed: %s. What to do: %s. The current "
            "certificate is still served; %s. Retrying in %.0fs",
            what,
            exc,
            hint or "see the error",
            _left(current),
            delay,
        )

    def _install(
        self, names: tuple[str, ...], files: CertFiles, context: ssl.SSLContext, new: bool
    ) -> None:
        table = self.table()
        what = ", ".join(names)
        if table is None:
            return
        self.watcher.loaded(str(files.cert), str(files.key))
        if table.install_acme(names, str(files.cert), context, str(files.key)):
            log.info("acme: serving the certificate for %s", what)
        elif table.replace(names, context):
            log.info(
                "acme: serving the renewed certificate for %s (serial %x, valid until %s)",
                what,
                files.serial,
                files.not_after.isoformat(timespec="seconds"),
            )
