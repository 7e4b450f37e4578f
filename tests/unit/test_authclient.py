"""The auth policies' small HTTP/1.1 client against a raw socket server: framings,
kept-alive connections, and answers that are not HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from bastion.policies.authclient import AuthClient, AuthClientError, loggable_url

Script = Callable[[bytes], bytes | None]  # request head -> raw answer (None: close)


async def serve(script: Script) -> tuple[asyncio.Server, list[int]]:
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                answer = script(head)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if b"Connection: close" in answer or (
                    b"Content-Length" not in answer and (b"chunked" not in answer)
                ):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, connections


def run(script: Script, calls: int = 1) -> tuple[list[object], int]:
    async def main() -> tuple[list[object], int]:
        server, connections = await serve(script)
        port = server.sockets[0].getsockname()[1]
        client = AuthClient(f"http://127.0.0.1:{port}/auth?x=1")
        results: list[object] = []
        for _ in range(calls):
            try:
                results.append(await client.get([("X-Test", b"1")], 5.0))
            except AuthClientError as exc:
                results.append(exc)
        client.close()
        server.close()
        return results, len(connections)

    return asyncio.run(main())


def test_content_length_and_keep_alive() -> None:
    seen: list[bytes] = []

    def script(head: bytes) -> bytes:
        seen.append(head)
        return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-User: alice\r\n\r\nok"

    results, connections = run(script, calls=3)
    assert connections == 1
    for answer in results:
        assert answer.status == 200 and answer.body == b"ok"
        assert answer.header(b"x-user") == b"alice"  # type: ignore[attr-defined]
    assert seen[0].startswith(b"GET /auth?x=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"X-Test: 1\r\n" in seen[0]


def test_chunked_and_close_delimited() -> None:
    answers = iter(
        [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 401 No\r\nWWW-Authenticate: Bearer\r\n\r\nuntil close",
        ]
    )
    results, connections = run(lambda head: next(answers), calls=2)
    assert results[0].body == b"abcde"
    assert results[1].status == 401 and results[1].body == b"until close"
    assert connections == 1


@pytest.mark.parametrize(
    "answer",
    [b"garbage\r\n\r\n", b"HTTP/1.1 abc OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n"],
)
def test_not_http_is_an_error(answer: bytes) -> None:
    results, _ = run(lambda head: answer)
    assert isinstance(results[0], AuthClientError)


def test_server_closing_a_kept_connection_is_retried_once() -> None:
    count = {"n": 0}

    def script(head: bytes) -> bytes | None:
        count["n"] += 1
        if count["n"] == 2:
            return None  # closes the kept-alive connection instead of answering
        return b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

    results, connections = run(script, calls=2)
    assert [getattr(r, "status", r) for r in results] == [200, 200]
    assert connections == 2


def test_unreachable_and_too_large() -> None:
    async def main() -> None:
        client = AuthClient("http://127.0.0.1:9/")
        with pytest.raises(AuthClientError):
            await client.get([], 2.0)

    asyncio.run(main())
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n"
    results, _ = run(lambda head: big)
    assert isinstance(results[0], AuthClientError)


def test_loggable_url() -> None:
    assert (
        loggable_url("https://user:pw@idp.test:8443/jwks?token=s") == "https://idp.test:8443/jwks"
    )
