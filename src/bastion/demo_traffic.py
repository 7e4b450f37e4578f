"""Traffic for `bastion demo`: a few requests a second through the gateway, so that its
dashboard and `bastion stats` have something to show from the first minute.

The mix touches what the demo configures: proxied answers, cache hits, a rate limit's 429s,
an API key's 401s, 404s, a backend error, several browsers, a bot and referrers. Plain
asyncio streams, one short connection per request: the demo needs no HTTP client library.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "curl/8.5.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
)
REFERRERS = ("", "", "https://example.com/docs", "https://news.example.org/item?id=42")
# (weight, method, path): most requests succeed; some are refused or fail on purpose
REQUESTS = (
    (30, "GET", "/api/hello"),
    (15, "GET", "/api/time"),
    (10, "GET", "/api/headers"),
    (8, "POST", "/api/echo"),
    (10, "GET", "/api/limited/hello"),
    (6, "GET", "/api/private/hello"),
    (5, "GET", "/api/missing"),
    (3, "GET", "/api/fail"),
    (3, "GET", "/favicon.ico"),
    (2, "GET", "/api/slow?seconds=0.3"),
)
_WEIGHTS = [weight for weight, _, _ in REQUESTS]


async def send(
    port: int, method: str, path: str, agent: str, referrer: str, source: str = "127.0.0.1"
) -> None:
    """One request on a connection of its own from the loopback address `source`; the
    answer is read and dropped."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        body = b'{"demo": true}' if method == "POST" else b""
        head = [
            f"{method} {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            f"User-Agent: {agent}",
            "Connection: close",
        ]
        if referrer:
            head.append(f"Referer: {referrer}")
        if body:
            head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()
        await asyncio.wait_for(reader.read(), 5.0)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def generate(port: int, per_second: float = 4.0, seed: int | None = None) -> None:
    """Send requests until cancelled, about `per_second` of them a second, in small bursts
    now and then (they are what the rate limit's 429s and the charts' peaks come from).
    They come from a few loopback addresses other than 127.0.0.1 (Linux answers on all of
    127.0.0.0/8): the clients table has several rows, and the rate limit per address that
    someone trying the demo from 127.0.0.1 meets is their own."""
    rng = random.Random(seed)
    while True:
        burst = 6 if rng.random() < 0.05 else 1
        source = f"127.0.0.{rng.randint(2, 9)}"
        for _ in range(burst):
            _, method, path = rng.choices(REQUESTS, _WEIGHTS)[0]
            agent = rng.choice(AGENTS)
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await send(port, method, path, agent, rng.choice(REFERRERS), source)
        await asyncio.sleep(rng.expovariate(per_second))
