"""The requests the cache makes and the keys it files answers under, through the whole
gateway over HTTP/1.1 and HTTP/2: a revalidation or background refresh is the request as
the route's policies left it (the gateway's identity fields, never the client's
credentials or its forged copy of them); what a trusted proxy forwards as host and scheme
is part of the key; invalidations reach the other workers in batches, not one file per
request; PURGE finds the entries of routes that key on part of the query only."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from unittest.mock import ANY
from urllib.parse import SplitResult, urlsplit

import pytest

from authtokens import create_key
from cachekit import RecordingOrigin, Site, start_site
from conftest import Gateway

PROTOCOLS = ("h1", "h2")
ETAG = '"v1"'


class Origin(RecordingOrigin):
    """A GET is answered with the Cache-Control set for its path, an ETag, and a body
    naming the consumer it was sent and the link it would build from the forwarded host
    and scheme; a GET whose If-None-Match holds the ETag gets 304. Every answer is 10 s
    old (Age), so that one with a shorter max-age is stale as soon as it is stored. Other
    methods get 201."""

    def answer(
        self,
        handler: BaseHTTPRequestHandler,
        url: SplitResult,
        headers: dict[str, str],
        count: int,
    ) -> None:
        path = url.path
        if handler.command != "GET":
            handler.send_response(201)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        status = 304 if headers.get("if-none-match") == ETAG else 200
        doc = {
            "n": count,
            "consumer": headers.get("x-consumer"),
            "link": f"{headers.get('x-forwarded-proto')}://"
            f"{headers.get('x-forwarded-host')}{path}",
        }
        body = json.dumps(doc).encode() if status == 200 else b""
        handler.send_response(status)
        handler.send_header("Cache-Control", self.cache_control.get(path, "max-age=60"))
        handler.send_header("ETag", ETAG)
        handler.send_header("Age", "10")  # a max-age under 10 is stale at once
        if status == 200:
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


@pytest.fixture
def origin() -> Iterator[Origin]:
    o = Origin()
    yield o
    o.stop()


@pytest.fixture
def start(gateway: Callable[..., Gateway], tmp_path: Path) -> Iterator[Callable[..., Site]]:
    made: list[Site] = []

    def make(routes: list[dict[str, Any]], **top: Any) -> Site:
        site = start_site(gateway, tmp_path, routes, **top)
        made.append(site)
        return site

    yield make
    for site in made:
        site.close()


def cached(path: str, origin: Origin, **route: Any) -> dict[str, Any]:
    return {"path": path, "proxy": {"upstreams": [origin.url]}, "cache": {}, **route}


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_revalidation_is_sent_as_the_policies_left_the_request(
    proto: str, origin: Origin, start: Callable[..., Site], tmp_path: Path
) -> None:
    """alice forges the consumer field the gateway sets: her first request reaches the
    backend as alice without her key; so must the cache's revalidation of her entry and
    its background refresh, and what they store stays alice's."""
    data = tmp_path / "data"
    data.mkdir()
    alice = {"X-API-Key": create_key(data, "alice"), "X-Consumer": "admin"}
    bob = {"X-API-Key": create_key(data, "bob")}
    auth = {"api_keys": {"header": "X-API-Key"}, "consumer_header": "X-Consumer"}
    site = start([cached("/keys/", origin, auth=auth)])
    # stale as soon as stored (Age past max-age): every use is a revalidation
    origin.cache_control["/keys/r"] = "max-age=1"
    origin.cache_control["/keys/s"] = "max-age=1, stale-while-revalidate=600"

    assert site.get(proto, "/keys/r", **alice)[1]["consumer"] == "alice"
    for _ in range(2):
        assert site.get(proto, "/keys/r", **alice) == (
            "REVALIDATED",
            {"n": 1, "consumer": "alice", "link": ANY},
        )
    sent = origin.wait_for_gets("/keys/r", 3)
    assert len(sent) == 3
    assert [h.get("x-consumer") for h in sent] == ["alice"] * 3
    assert not any("x-api-key" in h for h in sent)
    assert [h.get("if-none-match") for h in sent[1:]] == [ETAG, ETAG]

    assert site.get(proto, "/keys/s", **alice)[0] == "MISS"
    assert site.get(proto, "/keys/s", **alice)[0] == "STALE"
    sent = origin.wait_for_gets("/keys/s", 2)  # the background refresh
    assert len(sent) == 2
    assert sent[1].get("if-none-match") == ETAG
    assert sent[1].get("x-consumer") == "alice" and "x-api-key" not in sent[1]
    # bob has his own entry, made for him
    assert site.get(proto, "/keys/s", **bob) == (
        "MISS",
        {"n": 3, "consumer": "bob", "link": f"{urlsplit(site.bases[proto]).scheme}://"
         f"{urlsplit(site.bases[proto]).netloc}/keys/s"},
    )  # fmt: skip


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_host_and_scheme_forwarded_by_a_trusted_proxy_are_in_the_key(
    proto: str, origin: Origin, start: Callable[..., Site]
) -> None:
    site = start([cached("/fwd/", origin)], trusted_proxies=["127.0.0.1"])
    base = urlsplit(site.bases[proto])
    own = f"{base.scheme}://{base.netloc}/fwd/page"
    evil = {"X-Forwarded-Host": "evil.test"}
    assert site.get(proto, "/fwd/page", **evil) == (
        "MISS",
        {"n": 1, "consumer": None, "link": f"{base.scheme}://evil.test/fwd/page"},
    )
    # another forwarded host, another scheme, or none: not the answer built for evil.test
    assert site.get(proto, "/fwd/page")[1]["link"] == own
    assert site.get(proto, "/fwd/page", **{"X-Forwarded-Host": "shop.test"})[1]["link"] == (
        f"{base.scheme}://shop.test/fwd/page"
    )
    assert site.get(proto, "/fwd/page", **evil, **{"X-Forwarded-Proto": "gopher"})[1] == {
        "n": 4,
        "consumer": None,
        "link": "gopher://evil.test/fwd/page",
    }
    # each is stored under its own key
    assert site.get(proto, "/fwd/page", **evil) == (
        "HIT",
        {"n": 1, "consumer": None, "link": f"{base.scheme}://evil.test/fwd/page"},
    )
    assert site.get(proto, "/fwd/page") == ("HIT", {"n": 2, "consumer": None, "link": own})
    assert len(origin.gets("/fwd/page")) == 4
    # and a POST still drops them all (the URL is the same)
    assert site.send(proto, "POST", "/fwd/page").status_code == 201
    assert site.get(proto, "/fwd/page", **evil)[0] == "MISS"
    assert site.get(proto, "/fwd/page")[0] == "MISS"


def test_invalidations_reach_the_other_workers_in_batches(
    origin: Origin, start: Callable[..., Site]
) -> None:
    """A flood of POSTs writes a few files for the other workers, not one per POST, and
    every invalidated URL is in them."""
    site = start([cached("/open/", origin)], workers=2)
    posts = 100
    began = time.monotonic()
    for i in range(posts):
        assert site.send("h1", "POST", f"/open/items/{i}").status_code == 201
    wanted = {f"/open/items/{i}" for i in range(posts)}
    directory = site.data / "cache-purge"
    deadline = time.monotonic() + 10
    while True:
        files = [p for p in directory.glob("*.json") if not p.name.startswith(".")]
        found = set()
        for path in files:
            value = json.loads(path.read_text())["value"]
            found.update(urlsplit(v).path for v in ([value] if isinstance(value, str) else value))
        if wanted <= found or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    elapsed = time.monotonic() - began
    assert wanted <= found
    # each worker: the first at once, then at most one per half second
    assert len(files) <= 2 * (2 + int(elapsed / 0.5)) < posts, (len(files), elapsed)


@pytest.mark.parametrize("query", ["ignore", ["page"]])
def test_purge_finds_entries_keyed_on_part_of_the_query(
    query: str | list[str], origin: Origin, start: Callable[..., Site]
) -> None:
    route = cached("/q/", origin)
    route["cache"] = {"key": {"query": query}}
    site = start([route], cache={"purge_from": ["127.0.0.1"]})
    target = "/q/list?page=2&utm=mail"
    assert site.get("h1", target)[0] == "MISS"
    assert site.get("h1", target)[0] == "HIT"
    purged = site.send("h1", "PURGE", target)
    assert purged.status_code == 200 and purged.json() == {"purged": 1}
    assert site.get("h1", target)[0] == "MISS"
