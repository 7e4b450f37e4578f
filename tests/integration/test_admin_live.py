"""`/api/stats` and `/api/live` with a statistics source bound, as the worker binds the
statistics store: the admin endpoint of a worker context in this process, on a real
socket, read by a real client. The live stream sends one event a second while the client
reads, and stops when it leaves."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from test_admin_kit import TOKEN, TOKEN_ENV

from bastion.config import config_from_dict
from bastion.plan import compile_plan
from bastion.proxy.pool import PoolRegistry
from bastion.server.admin import AdminEndpoint, AlertSource, StatsSource
from bastion.server.context import WorkerContext
from bastion.state.stores import stores_for
from conftest import free_port


class Figures:
    """A statistics source that counts what it is asked."""

    def __init__(self) -> None:
        self.live_calls = 0
        self.windows: list[str] = []

    def summary(self, window: str) -> dict[str, Any]:
        self.windows.append(window)
        return {"window": window, "totals": {"requests": 42}}

    def live(self) -> dict[str, Any]:
        self.live_calls += 1
        return {"time": 1_800_000_000 + self.live_calls, "requests": self.live_calls}


class Rules:
    def status(self) -> list[dict[str, Any]]:
        return [{"name": "errors", "state": "FIRING", "since": 1.0, "value": 0.5,
                 "threshold": 0.1, "summary": "5xx above 10%"}]  # fmt: skip


async def request(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
    )
    await writer.drain()
    return reader, writer


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head, await reader.readexactly(length)


async def next_event(reader: asyncio.StreamReader) -> dict[str, Any]:
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        chunk = await reader.readexactly(size + 2)
        for line in chunk.decode().splitlines():
            if line.startswith("data: "):
                event: dict[str, Any] = json.loads(line[len("data: ") :])
                return event


async def scenario(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    port = free_port()
    loaded = config_from_dict(
        {
            "listen": {"http": "127.0.0.1:1"},  # compiled, never bound
            "data_dir": str(tmp_path / "data"),
            "admin": {"listen": f"127.0.0.1:{port}", "token": "${" + TOKEN_ENV + "}"},
            "sites": [{"hosts": ["*"], "routes": [{"path": "/", "respond": {}}]}],
        }
    )
    ctx = WorkerContext(loop, compile_plan(loaded.config, PoolRegistry(loop)))
    endpoint = AdminEndpoint(ctx, loaded, stores_for(tmp_path / "data"))
    await endpoint.start(False)
    try:
        reader, writer = await request(port, "/api/live")
        _, body = await read_answer(reader)
        assert b"statistics are off" in body
        writer.close()

        figures = Figures()
        rules = Rules()
        source: StatsSource = figures
        alerts: AlertSource = rules
        endpoint.bind_stats(source)
        endpoint.bind_alerts(alerts)

        reader, writer = await request(port, "/api/stats?window=7d")
        head, body = await read_answer(reader)
        assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["totals"]["requests"] == 42
        writer.close()
        reader, writer = await request(port, "/api/stats?window=2d")
        head, body = await read_answer(reader)
        assert head.startswith(b"HTTP/1.1 400") and b"5m, 1h, 24h, 7d, 30d" in body
        assert figures.windows == ["7d"]
        writer.close()
        reader, writer = await request(port, "/api/alerts")
        assert json.loads((await read_answer(reader))[1])["alerts"][0]["state"] == "FIRING"
        writer.close()
        reader, writer = await request(port, "/api/overview")
        assert json.loads((await read_answer(reader))[1])["alerts"] == {"firing": 1}
        writer.close()

        reader, writer = await request(port, "/api/live")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"Content-Type: text/event-stream" in head
        assert b"Transfer-Encoding: chunked" in head and b"Cache-Control: no-store" in head
        events = [await next_event(reader) for _ in range(3)]
        assert [e["requests"] for e in events] == [events[0]["requests"] + i for i in range(3)]
        assert all("in_flight" in e for e in events)
        assert len(endpoint.handler.live) == 1
        # the client goes away: the stream stops asking for figures
        writer.close()
        for _ in range(100):
            if not endpoint.handler.live:
                break
            await asyncio.sleep(0.05)
        assert not endpoint.handler.live
        asked = figures.live_calls
        await asyncio.sleep(1.5)
        assert figures.live_calls == asked

        # a stream still open when the listener closes ends cleanly (terminal chunk)
        reader, writer = await request(port, "/api/live")
        await reader.readuntil(b"\r\n\r\n")
        await next_event(reader)
        endpoint.close()
        rest = await asyncio.wait_for(reader.read(), 10)
        assert rest.endswith(b"0\r\n\r\n")
        writer.close()
    finally:
        endpoint.close()
        ctx.close()


def test_stats_and_live_stream_through_the_bound_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    asyncio.run(scenario(tmp_path))
