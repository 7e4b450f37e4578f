"""Active health checks: one task per endpoint and worker, jittered, rise/fall.

An HTTP check opens a fresh connection (never a pooled one: a check must not
depend on a connection the proxy is using) and closes it afterwards. Its round
trip time also feeds the endpoint's latency estimate, so that an endpoint that
gets no traffic under peak_ewma can be seen to recover.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import TYPE_CHECKING

from bastion.balance.endpoint import Endpoint
from bastion.clock import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    from bastion.config.balancing import ActiveHealth

log = logging.getLogger("bastion.health")

_MAX_READ = 64 * 1024


def configure(endpoint: Endpoint, config: ActiveHealth | None, clock: Clock = SYSTEM_CLOCK) -> None:
    """Run the checks `config` asks for (none: stop them and trust the endpoint).
    Outside a running event loop (``bastion check``) nothing is started."""
    if config == endpoint.health_config and (config is None or endpoint.checker is not None):
        return
    if endpoint.checker is not None:
        endpoint.checker.cancel()
        endpoint.checker = None
    endpoint.health_config = config
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    if config is None:
        endpoint.set_healthy(True, clock.monotonic())
        return
    endpoint.checker = loop.create_task(HealthCheck(endpoint, config, clock).run())


class HealthCheck:
    """One endpoint's checks: `rise` successes in a row bring it back, `fall` failures in a
    row set it aside. `check` is one probe and its verdict; `run` repeats it forever."""

    def __init__(
        self, endpoint: Endpoint, config: ActiveHealth, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.endpoint = endpoint
        self.config = config
        # monotonic seconds, the base the proxy's `loop.time()` counts in too: the balancer
        # compares the times both hand it
        self.now = clock.monotonic
        self.successes = 0
        self.failures = 0

    async def run(self) -> None:
        config = self.config
        # the first check comes soon, at a random point, so that workers and endpoints
        # do not probe in step; later ones are spread by ±10%
        await asyncio.sleep(random.uniform(0.0, min(config.interval, 1.0)))
        while True:
            await self.check()
            await asyncio.sleep(config.interval * random.uniform(0.9, 1.1))

    async def check(self) -> None:
        endpoint, config = self.endpoint, self.config
        started = self.now()
        try:
            ok, why = await asyncio.wait_for(probe(endpoint, config), config.timeout)
        except TimeoutError:
            ok, why = False, "timed out"
        except OSError as exc:
            ok, why = False, exc.strerror or str(exc) or type(exc).__name__
        now = self.now()
        if ok:
            endpoint.observe(now - started, now)
            self.successes, self.failures = self.successes + 1, 0
            if not endpoint.healthy and self.successes >= config.rise:
                endpoint.set_healthy(True, now)
                log.info("upstream %s is healthy again", endpoint.label)
        else:
            self.failures, self.successes = self.failures + 1, 0
            if endpoint.healthy and self.failures >= config.fall:
                endpoint.set_healthy(False, now)
                log.warning("upstream %s is unhealthy: %s", endpoint.label, why)


async def probe(endpoint: Endpoint, config: ActiveHealth) -> tuple[bool, str]:
    address = endpoint.pool.address
    if address.scheme == "unix":
        assert address.path is not None
        reader, writer = await asyncio.open_unix_connection(address.path)
    else:
        reader, writer = await asyncio.open_connection(address.host, address.port)
    try:
        if config.type == "tcp":
            return True, ""
        host = config.host or address.authority
        writer.write(
            f"{config.method} {config.path} HTTP/1.1\r\nHost: {host}\r\n"
            "User-Agent: bastion-health-check\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while len(data) < _MAX_READ:
            chunk = await reader.read(_MAX_READ)
            if not chunk:
                break
            data += chunk
            if config.body is None and b"\r\n" in data:
                break  # the status line is all we need
        status_line = data.split(b"\r\n", 1)[0].split()
        if len(status_line) < 2 or not status_line[1].isdigit():
            return False, "not an HTTP response"
        status = int(status_line[1])
        if status not in config.expect_status:
            return False, f"status {status}"
        if config.body is not None:
            body = data.partition(b"\r\n\r\n")[2]
            if config.body.encode() not in body:
                return False, "body does not contain the expected text"
        return True, ""
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
