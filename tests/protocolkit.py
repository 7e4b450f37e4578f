"""Protocol-level test harness: bastion's HTTP/1.1 and HTTP/2 protocols fed bytes through a
fake transport, on a real event loop, with a real Plan compiled from a YAML config.

What runs where:

- The plan, the worker context and the protocol objects are bastion's own. `build_runtime` is
  the one place that calls their constructors; when those change shape, only it changes.
- No listener is opened. A connection is a protocol object and a `FakeTransport` that records
  what the protocol writes and honours `pause_reading`/`resume_reading`: bytes are held back
  while reading is paused, as a socket transport would hold them in the kernel.
- `respond:`, `redirect:` and `static:` routes, routing answers (404, 405) and policies that
  refuse (401, 429) complete in-process, with no socket at all.
- `proxy:` routes connect to a real backend on a socket (the `backend` fixture of conftest):
  the loop runs while the backend answers, and `Connection.settle` waits for what the test
  expects (a response complete, the connection closed) up to a timeout.
- The loop is uvloop's, as under `bastion run`; one per `InProcessGateway`. It runs only inside
  this module's calls (building the plan, delivering bytes, settling), so the timers and
  `call_soon` callbacks the protocols schedule run as they would in a worker.
- Both protocols see the HTTPS side of the plan (HTTP/1.1 as after ALPN `http/1.1`, HTTP/2 as
  after ALPN `h2`, without the TLS layer), so the same routes answer both; `h1-plain` is a
  connection accepted on a plain-HTTP listener (a site with TLS is a redirect there).
- Errors are data: every log record of `bastion.*` at ERROR or with a traceback, and every
  exception the loop reports, lands in `InProcessGateway.errors`. An exception raised by a
  protocol's `data_received` propagates into the test.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import uvloop
import yaml

from bastion.config.loader import config_from_dict
from protocolwire import H2Client, Outcome, Response, h1_request, parse_h1_responses, split

__all__ = [
    "Connection",
    "FakeTransport",
    "H2Client",
    "InProcessGateway",
    "Outcome",
    "Response",
    "Session",
    "build_runtime",
    "h1_request",
    "parse_h1_responses",
    "run_h1",
    "run_h2",
    "split",
]

_T = TypeVar("_T")

STALL_SECONDS = 5.0
"""How long a connection may keep reading paused while the test still has bytes to send."""


# --------------------------------------------------------------------- construction
@dataclass
class Runtime:
    """What `build_runtime` made: a way to open a connection, and to close it all."""

    connect: Callable[[str], asyncio.Protocol]
    close: Callable[[], None]
    context: Any  # the worker context: its open connections, its plan


def build_runtime(loop: asyncio.AbstractEventLoop, config: Any) -> Runtime:
    """Every constructor of bastion's runtime this harness calls, in one place: the plan
    compiled from `config`, the worker context, and the protocol of a new connection
    (`h1`: HTTP/1.1 on an HTTPS listener, `h1-plain`: on an HTTP listener, `h2`: HTTP/2).
    Runs inside the loop, as `Worker.serve` does."""
    from bastion.http1.server import HTTP1Connection
    from bastion.http2.connection import HTTP2Connection
    from bastion.plan import compile_plan
    from bastion.proxy.pool import PoolRegistry
    from bastion.server.context import WorkerContext

    registry = PoolRegistry(loop)
    plan = compile_plan(config, registry)
    ctx = WorkerContext(loop, plan)

    def connect(protocol: str) -> asyncio.Protocol:
        if protocol == "h2":
            return HTTP2Connection(ctx)
        if protocol == "h1-plain":
            return HTTP1Connection(ctx)
        if protocol == "h1":
            return HTTP1Connection(ctx, b"https")
        raise ValueError(f"unknown protocol {protocol!r}")

    def close() -> None:
        cache = ctx.plan.cache
        if cache is not None:
            cache.purge.stop()
        registry.close()
        ctx.close()

    return Runtime(connect, close, ctx)


# ------------------------------------------------------------------------ transport
class FakeTransport(asyncio.Transport):
    """A transport with no socket: records writes, holds reading while paused, and
    delivers `connection_lost` one loop iteration after `close`/`abort`, as uvloop does."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        protocol: asyncio.BaseProtocol,
        peer: tuple[str, int] = ("127.0.0.1", 40000),
    ) -> None:
        super().__init__()
        self.loop = loop
        self.protocol = protocol
        self.chunks: list[bytes] = []
        self.reading = True
        self.closed = False  # close() or abort() called
        self.aborted = False
        self.eof_written = False
        self.lost = False  # connection_lost delivered
        self.late_writes = 0  # writes after close: dropped, as asyncio drops them
        self.limits = (65536, 16384)
        self.extra: dict[str, Any] = {
            "peername": peer,
            "sockname": ("127.0.0.1", 443),
            "ssl_object": None,
            "socket": None,
        }

    @property
    def output(self) -> bytes:
        return b"".join(self.chunks)

    # writing
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed:
            self.late_writes += 1
            return
        if self.eof_written:
            raise RuntimeError("Cannot call write() after write_eof()")
        self.chunks.append(bytes(data))

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in list_of_data:
            self.write(data)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def get_write_buffer_size(self) -> int:
        return 0  # the client takes everything at once

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        high = 65536 if high is None else high
        self.limits = (high, high // 4 if low is None else low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.limits[1], self.limits[0]

    # reading
    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading and not self.closed

    # closing
    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.call_soon(self._connection_lost)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def is_closing(self) -> bool:
        return self.closed

    def _connection_lost(self) -> None:
        if not self.lost:
            self.lost = True
            self.protocol.connection_lost(None)

    # the rest of the interface
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol


# -------------------------------------------------------------------------- gateway
class _ErrorLog(logging.Handler):
    def __init__(self, errors: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.errors = errors

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.errors.append(f"{record.name}: {record.getMessage()}")


def harness_config(config: str | dict[str, Any], data_dir: Path) -> dict[str, Any]:
    """The config as a dict, with what the harness needs where the test said nothing: an
    HTTPS listener (so the plan has an HTTPS side for HTTP/2; nothing is bound), the data
    dir, and no access log."""
    data = yaml.safe_load(config) if isinstance(config, str) else dict(config)
    data.setdefault("listen", {"http": "127.0.0.1:8080", "https": "127.0.0.1:8443"})
    data.setdefault("data_dir", str(data_dir))
    data.setdefault("access_log", {"format": "off"})
    return data


class InProcessGateway:
    """A compiled plan and its worker context on a loop of their own.

    `config` is YAML text or a dict, validated as a file would be (see `harness_config`
    for the defaults added)."""

    def __init__(self, config: str | dict[str, Any], data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.config = config_from_dict(harness_config(config, data_dir), base_dir=data_dir).config
        self.loop = uvloop.new_event_loop()
        self.errors: list[str] = []
        self.loop.set_exception_handler(self._loop_error)
        self._log = _ErrorLog(self.errors)
        logging.getLogger("bastion").addHandler(self._log)
        self.connections: list[Connection] = []

        async def build() -> Runtime:
            return build_runtime(self.loop, self.config)

        self.runtime = self.run(build())

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.errors.append(f"loop: {context.get('message')} {context.get('exception')!r}")

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return self.loop.run_until_complete(coro)

    def connect(self, protocol: str = "h1", peer: str = "127.0.0.1") -> Connection:
        conn = Connection(self, protocol, peer)
        self.connections.append(conn)
        return conn

    def close(self) -> None:
        for conn in self.connections:
            if not conn.transport.closed:
                conn.transport.abort()
        self.run(asyncio.sleep(0))  # connection_lost of those aborted
        self.runtime.close()
        self.run(asyncio.sleep(0))
        logging.getLogger("bastion").removeHandler(self._log)
        self.loop.close()

    def __enter__(self) -> InProcessGateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Connection:
    """One client connection: bytes in through `send`, what the protocol wrote in
    `transport.output`."""

    def __init__(self, gateway: InProcessGateway, protocol: str, peer: str) -> None:
        self.gateway = gateway
        self.kind = protocol
        self.protocol = gateway.runtime.connect(protocol)
        self.transport = FakeTransport(gateway.loop, self.protocol, (peer, 40000))
        self.read = 0  # how much of the output `take_output` has handed out
        self.unsent = 0  # bytes not delivered because the connection closed first
        gateway.run(self._made())

    async def _made(self) -> None:
        self.protocol.connection_made(self.transport)
        await asyncio.sleep(0)

    @property
    def closed(self) -> bool:
        """Closed, or half-closed by the gateway (its FIN sent, lingering)."""
        return self.transport.closed or self.transport.eof_written

    def take_output(self) -> bytes:
        """What the protocol wrote since the last call."""
        output = self.transport.output
        new = output[self.read :]
        self.read = len(output)
        return new

    def send(self, chunks: bytes | Iterable[bytes], eof: bool = False) -> None:
        """Deliver `chunks` one loop iteration apart, each once reading is not paused (a
        connection that keeps it paused for STALL_SECONDS fails the test). `eof`: the
        client half-closes after the last one."""
        pieces = [chunks] if isinstance(chunks, bytes) else list(chunks)
        self.gateway.run(self._deliver(pieces, eof))

    async def _deliver(self, pieces: list[bytes], eof: bool) -> None:
        transport = self.transport
        for piece in pieces:
            if not piece:
                continue
            await self._readable()
            if transport.closed:
                self.unsent += len(piece)
                continue
            self.protocol.data_received(piece)
            await asyncio.sleep(0)
        if eof:
            await self._readable()  # a paused transport does not read the FIN either
        if eof and not transport.closed:
            keep_open = self.protocol.eof_received()
            if not keep_open:
                transport.close()
            await asyncio.sleep(0)

    async def _readable(self) -> None:
        transport = self.transport
        if not await self._wait(lambda: transport.reading or transport.closed, STALL_SECONDS):
            raise AssertionError(f"reading stayed paused for {STALL_SECONDS} s with bytes to send")

    def deliver_now(self, data: bytes) -> None:
        """Bytes the client answers with while the loop runs (HTTP/2 acknowledgements):
        delivered at once unless the connection is closed."""
        if data and not self.transport.closed:
            self.protocol.data_received(data)

    def settle(self, until: Callable[[], bool] | None = None, timeout: float = 5.0) -> bool:
        """Run the loop until `until()` holds (checked every iteration; False after
        `timeout`), or without one, for a few iterations: enough for what completes
        in-process (HTTP/2 flushes at the end of an iteration, `connection_lost` comes
        one after `close`)."""
        if until is None:

            async def spin() -> bool:
                for _ in range(8):
                    await asyncio.sleep(0)
                return True

            return self.gateway.run(spin())
        return self.gateway.run(self._wait(until, timeout))

    async def _wait(self, until: Callable[[], bool], timeout: float) -> bool:
        deadline = self.gateway.loop.time() + timeout
        spins = 0
        while not until():
            if self.gateway.loop.time() > deadline:
                return False
            spins += 1
            # a few bare iterations for what is already scheduled, then real waits for I/O
            await asyncio.sleep(0 if spins < 16 else 0.001)
        return True


def run_h1(
    gateway: InProcessGateway,
    pieces: Sequence[bytes],
    methods: Sequence[str],
    expect: int,
    timeout: float = 5.0,
    eof: bool = False,
) -> Outcome:
    """Send `pieces` on a new HTTP/1.1 connection (then half-close it if `eof`) and wait
    for `expect` responses, or the connection closed; then a few more iterations for a
    close that follows the last one."""
    errors_before = len(gateway.errors)
    conn = gateway.connect("h1")
    conn.send(pieces, eof)

    def answered() -> bool:
        output = conn.transport.output
        return conn.closed or len(parse_h1_responses(output, methods)) >= expect

    conn.settle(answered, timeout)
    conn.settle()
    responses = parse_h1_responses(conn.transport.output, methods, closed=conn.closed)
    return Outcome(responses, conn.closed, None, gateway.errors[errors_before:])


def run_h2(
    gateway: InProcessGateway,
    make_client: Callable[[], tuple[H2Client, list[int]]],
    cuts: Iterable[int] | None = None,
    timeout: float = 5.0,
) -> Outcome:
    """Send what `make_client` queued (the preface, SETTINGS and its requests) on a new
    HTTP/2 connection, cut at `cuts`, and wait until every stream it returned has ended
    or the connection is gone. The client acknowledges what it receives as a real one."""
    errors_before = len(gateway.errors)
    client, sids = make_client()
    data = client.to_send()
    conn = gateway.connect("h2")
    conn.send(split(data, cuts or ()))

    def pump() -> bool:
        client.receive(conn.take_output())
        conn.deliver_now(client.to_send())
        return conn.closed or all(client.done(sid) for sid in sids)

    conn.settle(pump, timeout)
    conn.settle()
    client.receive(conn.take_output())
    responses = [client.responses.get(sid, Response(0, [], complete=False)) for sid in sids]
    return Outcome(responses, conn.closed, client.goaway, gateway.errors[errors_before:])


# ------------------------------------------------------------ one client, either protocol
class Session:
    """Requests one after the other on one connection, over HTTP/1.1 or HTTP/2: what a
    shared behaviour test talks to."""

    def __init__(self, gateway: InProcessGateway, protocol: str, peer: str = "127.0.0.1") -> None:
        self.protocol = protocol
        self.conn = gateway.connect(protocol, peer)
        self.methods: list[str] = []
        self.h2 = H2Client() if protocol == "h2" else None
        if self.h2 is not None:
            self.conn.send(self.h2.to_send())

    def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]] | dict[str, str] = (),
        body: bytes | None = None,
        host: str = "localhost",
        timeout: float = 5.0,
    ) -> Response:
        fields = list(headers.items()) if isinstance(headers, dict) else list(headers)
        if self.h2 is not None:
            return self._h2_request(method, target, fields, body, host, timeout)
        index = len(self.methods)
        self.methods.append(method)
        conn = self.conn
        conn.send(h1_request(method, target, fields, body, host))

        def answered() -> bool:
            return (
                conn.closed or len(parse_h1_responses(conn.transport.output, self.methods)) > index
            )

        conn.settle(answered, timeout)
        responses = parse_h1_responses(conn.transport.output, self.methods, closed=conn.closed)
        if len(responses) <= index:
            raise AssertionError(f"no answer to {method} {target} in {timeout} s")
        return responses[index]

    def _h2_request(
        self,
        method: str,
        target: str,
        fields: list[tuple[str, str]],
        body: bytes | None,
        host: str,
        timeout: float,
    ) -> Response:
        client = self.h2
        assert client is not None
        conn = self.conn
        sid = client.request(method, target, [(k.lower(), v) for k, v in fields], body, host)
        conn.send(client.to_send())

        def pump() -> bool:
            client.receive(conn.take_output())
            conn.deliver_now(client.to_send())
            return conn.closed or client.done(sid)

        conn.settle(pump, timeout)
        response = client.responses.get(sid)
        if response is None or not response.complete:
            raise AssertionError(f"no answer to {method} {target} in {timeout} s")
        return response


# ------------------------------------------------------------- the split tests' site
SPLIT_FILE_BODY = b"a static file\n" * 20


def split_site(backend_url: str, root: Path, files: dict[str, bytes] | None = None) -> str:
    """The site the split tests of both protocols run against: a proxied echo route, fixed
    answers, a method rule, a redirect and static files (`files` written under
    `root/files/`, with `a.txt` holding `SPLIT_FILE_BODY`)."""
    folder = root / "files"
    folder.mkdir(parents=True)
    for name, data in {"a.txt": SPLIT_FILE_BODY, **(files or {})}.items():
        (folder / name).write_bytes(data)
    return f"""
limits: {{max_header_bytes: 2048, max_uri_bytes: 1024, max_body_bytes: 4096}}
sites:
  - hosts: ["*"]
    routes:
      - path: /echo/
        proxy: {{upstreams: ["{backend_url}"]}}
      - path: /hello
        respond: {{body: "hello"}}
      - path: /only-get
        methods: [GET]
        respond: {{body: "got"}}
      - path: /old/
        redirect: {{to: /new/, status: 308}}
      - path: /files/
        static: {{root: "{root}"}}
"""
