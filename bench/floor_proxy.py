"""Reference point for the benchmark: the least a Python proxy can do per request.

One upstream connection per client connection, requests and responses relayed
byte for byte (httptools only finds where each message ends), no routing, no
header rewriting, no timeouts, no logging. Not a usable proxy: it shows what
uvloop + httptools cost on this machine, so that bastion's figure can be read as
"the floor plus what bastion's features cost".

    python bench/floor_proxy.py LISTEN_PORT UPSTREAM_PORT
"""

from __future__ import annotations

import asyncio
import sys

import httptools
import uvloop


class Upstream(asyncio.Protocol):
    def __init__(self, client: Client) -> None:
        self.client = client
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.client.upstream_ready(self)

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client.transport is not None:
            client.transport.write(data)
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.client.response_done()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client.transport is not None:
            self.client.transport.close()


class Client(asyncio.Protocol):
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.upstream: Upstream | None = None
        self.pending: list[bytes] = []
        self.close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        self.connecting = loop.create_task(
            loop.create_connection(lambda: Upstream(self), "127.0.0.1", self.upstream_port)
        )

    def upstream_ready(self, upstream: Upstream) -> None:
        self.upstream = upstream
        if self.pending and upstream.transport is not None:
            upstream.transport.write(b"".join(self.pending))
            self.pending.clear()

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)
        upstream = self.upstream_transport()
        if upstream is None:
            self.pending.append(data)
        else:
            upstream.write(data)

    def upstream_transport(self) -> asyncio.Transport | None:
        return None if self.upstream is None else self.upstream.transport

    def on_message_complete(self) -> None:
        self.close_after = not self.parser.should_keep_alive()

    def response_done(self) -> None:
        if self.close_after and self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        upstream = self.upstream_transport()
        if upstream is not None:
            upstream.close()


def main() -> None:
    listen_port, upstream_port = int(sys.argv[1]), int(sys.argv[2])

    async def serve() -> None:
        loop = asyncio.get_running_loop()

        server = await loop.create_server(
            lambda: Client(upstream_port), "127.0.0.1", listen_port, backlog=2048
        )
        async with server:
            await server.serve_forever()

    uvloop.run(serve())


if __name__ == "__main__":
    main()
