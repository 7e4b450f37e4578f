"""The response cache through the whole gateway, against a backend that counts its hits.
Freshness, Age and the stale windows are tested on a manual clock in test_cache_clock.py;
revalidation here waits for an entry to go stale in real time, through the whole gateway."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from cacheorigin import CountingBackend, Reply

from conftest import Gateway, free_port, wait_for_port


@pytest.fixture
def origin() -> Iterator[CountingBackend]:
    b = CountingBackend()
    yield b
    b.stop()


def cache_config(
    tmp_path: Path, upstream: str, route_cache: dict[str, Any] | None = None, **top: Any
) -> dict[str, Any]:
    route: dict[str, Any] = {
        "path": "/",
        "proxy": {"upstreams": [upstream], "timeouts": {"read": "2s", "connect": "1s"}},
        "cache": route_cache or {},
    }
    config: dict[str, Any] = {
        "access_log": {"format": "off"},
        "data_dir": str(tmp_path / "data"),
        "sites": [{"hosts": ["*"], "routes": [route]}],
    }
    config.update(top)
    return config


Start = Callable[..., Gateway]


def get(gw: Gateway, path: str, **headers: str) -> httpx.Response:
    return httpx.get(gw.url + path, headers=headers, timeout=10)


def test_backend_max_age_hit_and_headers(origin: CountingBackend, gateway: Start, tmp_path: Path):
    origin.replies["/a"] = Reply(headers={"Cache-Control": "max-age=60"}, body=b"n={n}")
    gw = gateway(cache_config(tmp_path, origin.url))
    first = get(gw, "/a")
    assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
    second = get(gw, "/a")
    assert second.text == "n=1"
    assert second.headers["x-cache"] == "HIT"
    assert int(second.headers["age"]) >= 0
    assert second.headers["cache-control"] == "max-age=60"
    assert origin.hits_of("/a") == 1
    # the query is normalised: parameter order does not make another entry
    get(gw, "/a?x=1&y=2")
    assert get(gw, "/a?y=2&x=1").headers["x-cache"] == "HIT"
    assert origin.hits_of("/a") == 2
    # POST is not cached
    assert httpx.post(gw.url + "/a", content=b"x").headers["x-cache"] == "BYPASS"


def test_uncacheable_responses(origin: CountingBackend, gateway: Start, tmp_path: Path):
    origin.replies["/nostore"] = Reply(headers={"Cache-Control": "no-store, max-age=60"})
    origin.replies["/plain"] = Reply()  # no freshness information, heuristic off
    origin.replies["/star"] = Reply(headers={"Cache-Control": "max-age=60", "Vary": "*"})
    gw = gateway(cache_config(tmp_path, origin.url))
    for path in ("/nostore", "/plain", "/star"):
        for _ in range(3):
            assert get(gw, path).headers["x-cache"] == "MISS"
        assert origin.hits_of(path) == 3, path


def test_vary_splits_entries(origin: CountingBackend, gateway: Start, tmp_path: Path):
    origin.replies["/v"] = Reply(
        headers={"Cache-Control": "max-age=60", "Vary": "Accept-Language"}, body=b"{lang}"
    )
    gw = gateway(cache_config(tmp_path, origin.url))
    assert get(gw, "/v", **{"Accept-Language": "fr"}).text == "fr"
    assert get(gw, "/v", **{"Accept-Language": "de"}).text == "de"
    fr = get(gw, "/v", **{"Accept-Language": "fr"})
    de = get(gw, "/v", **{"Accept-Language": "de"})
    assert (fr.text, fr.headers["x-cache"]) == ("fr", "HIT")
    assert (de.text, de.headers["x-cache"]) == ("de", "HIT")
    assert origin.hits_of("/v") == 2


def _create_key(data_dir: Path, consumer: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "bastion", "keys", "create", "--consumer", consumer,
         "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=30, check=True,
    )
    return out.stdout.split()[0]


def test_consumer_in_the_key_behind_api_keys(
    origin: CountingBackend, gateway: Start, tmp_path: Path
):
    origin.replies["/me"] = Reply(headers={"Cache-Control": "max-age=60"}, body=b"n={n}")
    config = cache_config(tmp_path, origin.url, {"key": {"consumer": True}})
    config["sites"][0]["routes"][0]["auth"] = {"api_keys": {}}
    alice = _create_key(tmp_path / "data", "alice")
    bob = _create_key(tmp_path / "data", "bob")
    gw = gateway(config)
    assert get(gw, "/me").status_code == 401  # no key: refused before the cache
    a1 = get(gw, "/me", **{"X-API-Key": alice})
    b1 = get(gw, "/me", **{"X-API-Key": bob})
    a2 = get(gw, "/me", **{"X-API-Key": alice})
    assert (a1.headers["x-cache"], b1.headers["x-cache"]) == ("MISS", "MISS")
    assert (a2.text, a2.headers["x-cache"]) == (a1.text, "HIT")
    assert b1.text != a1.text and origin.hits_of("/me") == 2
    assert get(gw, "/me", **{"X-API-Key": "not-a-key"}).status_code == 401


def test_revalidation_with_304_and_client_conditionals(
    origin: CountingBackend, gateway: Start, tmp_path: Path
):
    origin.replies["/r"] = Reply(headers={"Cache-Control": "max-age=1"}, etag='"v1"', body=b"r")
    gw = gateway(cache_config(tmp_path, origin.url))
    assert get(gw, "/r").headers["x-cache"] == "MISS"
    # a client's own If-None-Match is answered by the cache
    cond = get(gw, "/r", **{"If-None-Match": '"v1"'})
    assert cond.status_code == 304 and cond.headers["x-cache"] == "HIT"
    assert origin.hits_of("/r") == 1
    time.sleep(1.6)
    again = get(gw, "/r")
    assert again.headers["x-cache"] == "REVALIDATED"
    assert again.text == "r"
    assert origin.hits_of("/r") == 2
    assert origin.requests[-1][1].get("if-none-match") == '"v1"'
    # the 304 made the entry fresh again
    assert get(gw, "/r").headers["x-cache"] == "HIT"
    assert origin.hits_of("/r") == 2


def test_coalescing_100_misses_one_hit(origin: CountingBackend, gateway: Start, tmp_path: Path):
    origin.replies["/c"] = Reply(headers={"Cache-Control": "max-age=60"}, delay=1.0, body=b"c")
    gw = gateway(cache_config(tmp_path, origin.url))
    limits = httpx.Limits(max_connections=100)
    with httpx.Client(limits=limits, timeout=20) as client, ThreadPoolExecutor(100) as pool:
        answers = list(pool.map(lambda _: client.get(gw.url + "/c"), range(100)))
    assert [a.status_code for a in answers] == [200] * 100
    assert {a.text for a in answers} == {"c"}
    assert origin.hits_of("/c") == 1


def test_coalesced_waiters_time_out(origin: CountingBackend, gateway: Start, tmp_path: Path):
    origin.replies["/w"] = Reply(headers={"Cache-Control": "max-age=60"}, delay=2.0, body=b"w")
    config = cache_config(tmp_path, origin.url, cache={"lock_timeout": "0.3s"})
    config["sites"][0]["routes"][0]["proxy"]["timeouts"]["read"] = "5s"
    gw = gateway(config)
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: get(gw, "/w"), range(3)))
    assert [a.status_code for a in answers] == [200] * 3
    assert origin.hits_of("/w") == 3  # the waiters gave up waiting and asked themselves


def test_private_and_set_cookie_never_shared(
    origin: CountingBackend, gateway: Start, tmp_path: Path
):
    origin.replies["/cookie"] = Reply(
        headers={"Cache-Control": "max-age=60", "Set-Cookie": "sid=n{n}"}, body=b"{n}"
    )
    origin.replies["/private"] = Reply(headers={"Cache-Control": "private, max-age=60"})
    origin.replies["/auth"] = Reply(headers={"Cache-Control": "max-age=60"}, body=b"{n}")
    gw = gateway(cache_config(tmp_path, origin.url, {"ttl": "1m"}))
    alice = get(gw, "/cookie")
    bob = get(gw, "/cookie")
    assert alice.headers["set-cookie"] == "sid=n1"
    assert bob.headers["set-cookie"] == "sid=n2"
    get(gw, "/private")
    assert get(gw, "/private").headers["x-cache"] == "MISS"
    assert get(gw, "/auth", Authorization="Bearer a").text == "1"
    assert get(gw, "/auth").text == "2"  # the authorized answer was not stored
    assert origin.hits_of("/private") == 2


def purge(gw: Gateway, *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bastion", "cache", "purge", *args, "-c", str(gw.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


def wait_miss(gw: Gateway, path: str) -> None:
    deadline = time.monotonic() + 10
    while get(gw, path).headers["x-cache"] == "HIT":
        assert time.monotonic() < deadline, f"{path} was not purged"
        time.sleep(0.2)


def test_purge_by_tag_url_and_prefix(origin: CountingBackend, gateway: Start, tmp_path: Path):
    for path, tags in (("/p/1", "red"), ("/p/2", "red blue"), ("/p/3", "blue"), ("/q/1", "")):
        origin.replies[path] = Reply(
            headers={"Cache-Control": "max-age=600", "Surrogate-Key": tags}, body=b"{n}"
        )
    gw = gateway(cache_config(tmp_path, origin.url, workers=2))
    paths = ["/p/1", "/p/2", "/p/3", "/q/1"]
    # with two workers, make sure both hold entries: many connections spread over them
    for _ in range(6):
        for path in paths:
            with httpx.Client() as client:
                client.get(gw.url + path)
    purge(gw, "--tag", "red")
    wait_miss(gw, "/p/1")
    time.sleep(1.2)  # every worker has polled by now
    for _ in range(6):
        for path in ("/p/1", "/p/2"):
            with httpx.Client() as client:
                client.get(gw.url + path)
    # both workers dropped the tagged entries: never more than one refetch per worker
    assert origin.hits_of("/p/1") <= 4
    # /p/3 (blue only) was kept: more requests, spread over both workers, never fetch it
    # again (one fetch per worker in all; asking one request for a HIT failed when the
    # kernel had sent every earlier /p/3 connection to the other worker)
    for _ in range(6):
        with httpx.Client() as client:
            client.get(gw.url + "/p/3")
    assert origin.hits_of("/p/3") <= 2
    purge(gw, f"http://127.0.0.1:{gw.port}/p/3")
    wait_miss(gw, "/p/3")
    purge(gw, "--prefix", "/q/")
    wait_miss(gw, "/q/1")


def test_memory_stays_within_the_bound(origin: CountingBackend, gateway: Start, tmp_path: Path):
    body = b"x" * (256 * 1024)
    for i in range(200):
        origin.replies[f"/m/{i}"] = Reply(headers={"Cache-Control": "max-age=600"}, body=body)
    gw = gateway(cache_config(tmp_path, origin.url, cache={"max_size": "4MiB"}))
    with httpx.Client(timeout=10) as client:
        for i in range(5):
            client.get(f"{gw.url}/m/{i}")
        baseline = gw.rss_kb()
        for i in range(5, 160):  # 40 MiB of cacheable responses: 10x the bound
            assert client.get(f"{gw.url}/m/{i}").status_code == 200
        grown = gw.rss_kb() - baseline
        assert grown < 20 * 1024, f"RSS grew by {grown} KiB"
        # the newest are kept, the oldest evicted
        assert client.get(f"{gw.url}/m/159").headers["x-cache"] == "HIT"
        assert client.get(f"{gw.url}/m/6").headers["x-cache"] == "MISS"


def test_large_objects_stream_through(origin: CountingBackend, gateway: Start, tmp_path: Path):
    origin.replies["/big"] = Reply(headers={"Cache-Control": "max-age=600"}, body=b"y" * 300_000)
    gw = gateway(cache_config(tmp_path, origin.url, cache={"max_object_size": "100KiB"}))
    assert len(get(gw, "/big").content) == 300_000
    assert get(gw, "/big").headers["x-cache"] == "MISS"
    assert origin.hits_of("/big") == 2


def test_hit_over_http2(origin: CountingBackend, gateway: Start, tmp_path: Path):
    origin.replies["/h2"] = Reply(headers={"Cache-Control": "max-age=60"}, body=b"two")
    https = free_port()
    config = cache_config(tmp_path, origin.url)
    config["listen"] = {"http": f"127.0.0.1:{free_port()}", "https": f"127.0.0.1:{https}"}
    config["sites"][0]["hosts"] = ["localhost"]
    gateway(config)
    wait_for_port(https)
    ca = ssl.create_default_context(cafile=str(tmp_path / "data" / "ca" / "root.crt"))
    with httpx.Client(http2=True, verify=ca, timeout=10) as client:
        first = client.get(f"https://localhost:{https}/h2")
        second = client.get(f"https://localhost:{https}/h2")
    assert second.http_version == "HTTP/2"
    assert first.headers["x-cache"] == "MISS"
    assert (second.text, second.headers["x-cache"]) == ("two", "HIT")
    assert origin.hits_of("/h2") == 1


def test_purge_method_from_allowed_addresses(
    origin: CountingBackend, gateway: Start, tmp_path: Path
):
    origin.replies["/x"] = Reply(headers={"Cache-Control": "max-age=600"}, body=b"{n}")
    gw = gateway(cache_config(tmp_path, origin.url, cache={"purge_from": ["127.0.0.1"]}))
    get(gw, "/x")
    assert get(gw, "/x").headers["x-cache"] == "HIT"
    answer = httpx.request("PURGE", gw.url + "/x", timeout=10)
    assert answer.status_code == 200 and answer.json() == {"purged": 1}
    again = get(gw, "/x")
    assert (again.headers["x-cache"], again.text) == ("MISS", "2")


def test_purge_method_refused_elsewhere(origin: CountingBackend, gateway: Start, tmp_path: Path):
    origin.replies["/x"] = Reply(headers={"Cache-Control": "max-age=600"}, body=b"{n}")
    gw = gateway(cache_config(tmp_path, origin.url, cache={"purge_from": ["10.0.0.0/8"]}))
    get(gw, "/x")
    # not from an allowed address: an ordinary request for the backend
    assert httpx.request("PURGE", gw.url + "/x", timeout=10).headers["x-cache"] == "BYPASS"
    assert get(gw, "/x").headers["x-cache"] == "HIT"


def test_cache_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "sites:\n"
        "  - hosts: ['*']\n"
        "    routes:\n"
        "      - path: /\n"
        "        respond: {body: hi}\n"
        "        cache: {ttl: 5m}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "bastion", "check", "-c", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "cache only applies to proxy routes" in result.stderr


def test_head_from_stored_get_and_if_modified_since(
    origin: CountingBackend, gateway: Start, tmp_path: Path
):
    modified = "Mon, 13 Nov 2023 22:13:20 GMT"
    origin.replies["/hd"] = Reply(
        headers={"Cache-Control": "max-age=60", "Last-Modified": modified}, body=b"body!"
    )
    gw = gateway(cache_config(tmp_path, origin.url))
    get(gw, "/hd")
    head = httpx.head(gw.url + "/hd", timeout=10)
    assert head.status_code == 200 and head.headers["x-cache"] == "HIT"
    assert head.headers["content-length"] == "5" and head.content == b""
    later = get(gw, "/hd", **{"If-Modified-Since": "Tue, 14 Nov 2023 22:13:20 GMT"})
    assert later.status_code == 304 and later.headers["last-modified"] == modified
    older = get(gw, "/hd", **{"If-Modified-Since": "Sun, 12 Nov 2023 22:13:20 GMT"})
    assert older.status_code == 200 and older.text == "body!"
    assert origin.hits_of("/hd") == 1
