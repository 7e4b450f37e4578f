"""The cache on authenticated routes and after unsafe requests, through the whole gateway over
HTTP/1.1 and HTTP/2: one consumer's answer is never handed to another, answers said to be
shared are, and a successful POST/PUT/PATCH/DELETE drops the stored answers it made stale."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qs, urlsplit

import bcrypt
import pytest

from authtokens import HS_SECRET, ScriptedServer, check_refuses, claims, create_key, sign
from cachekit import RecordingOrigin, Site, start_site
from conftest import Gateway

PROTOCOLS = ("h1", "h2")


class Origin(RecordingOrigin):
    """GET answers who asked (the consumer header the gateway sent) and how many GETs of
    that path it has served, with the Cache-Control set for the path (and the Vary its
    query asks for); other methods answer the status, Location and Content-Location the
    request's X-Status, X-Location and X-Content-Location ask for."""

    def answer(
        self,
        handler: BaseHTTPRequestHandler,
        url: SplitResult,
        headers: dict[str, str],
        count: int,
    ) -> None:
        extra: dict[str, str] = {}
        if handler.command == "GET":
            status = 200
            extra["Cache-Control"] = self.cache_control.get(url.path, "max-age=60")
            if "vary" in (q := parse_qs(url.query)):
                extra["Vary"] = q["vary"][0]
            doc = {
                "n": count,
                "consumer": headers.get("x-consumer"),
                "lang": headers.get("accept-language"),
            }
            body = json.dumps(doc).encode()
        else:
            status = int(headers.get("x-status", "201"))
            for name in ("location", "content-location"):
                if "x-" + name in headers:
                    extra[name.title()] = headers["x-" + name]
            body = b"{}"
        handler.send_response(status)
        for name, value in extra.items():
            handler.send_header(name, value)
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
def sites() -> Iterator[list[Site]]:
    made: list[Site] = []
    yield made
    for site in made:
        site.close()


def cached(path: str, origin: Origin, auth: dict[str, Any] | None, **cache: Any) -> dict[str, Any]:
    route: dict[str, Any] = {"path": path, "proxy": {"upstreams": [origin.url]}, "cache": cache}
    if auth is not None:
        route["auth"] = auth
    return route


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def check_per_consumer(
    site: Site, origin: Origin, proto: str, path: str, alice: dict[str, str], bob: dict[str, str]
) -> None:
    """alice's answer is stored for alice alone: bob's request goes to the backend with
    bob's identity, and each then gets their own copy from the cache."""
    assert site.get(proto, path, **alice) == ("MISS", {"n": 1, "consumer": "alice", "lang": None})
    assert site.get(proto, path, **alice) == ("HIT", {"n": 1, "consumer": "alice", "lang": None})
    assert site.get(proto, path, **bob) == ("MISS", {"n": 2, "consumer": "bob", "lang": None})
    assert [h.get("x-consumer") for h in origin.gets(path)] == ["alice", "bob"]
    assert site.get(proto, path, **bob) == ("HIT", {"n": 2, "consumer": "bob", "lang": None})
    assert site.get(proto, path, **alice)[1]["consumer"] == "alice"
    assert len(origin.gets(path)) == 2


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_each_auth_method_keeps_answers_per_consumer(
    proto: str,
    origin: Origin,
    gateway: Callable[..., Gateway],
    tmp_path: Path,
    sites: list[Site],
) -> None:
    data = tmp_path / "data"
    alice_key, bob_key = create_key(data, "alice"), create_key(data, "bob")
    users = {
        name: bcrypt.hashpw(f"{name}-pw".encode(), bcrypt.gensalt(4)).decode()
        for name in ("alice", "bob")
    }
    sso = ScriptedServer(
        lambda path, headers: (
            (200, {"X-User": headers["authorization"].split()[1]}, b"")
            if headers.get("authorization", "").startswith("Sso ")
            else (401, {}, b"")
        )
    )
    jwt = {"jwt": {"algorithms": ["HS256"], "secret": HS_SECRET}}
    routes = [
        cached("/keys/", origin, {"api_keys": {}}),
        cached("/jwt/", origin, jwt),
        cached("/basic/", origin, {"basic": {"users": users}}),
        cached("/fwd/", origin, {"forward": {"url": sso.url, "consumer_from": "X-User"}}),
        cached("/any/", origin, {"api_keys": {}, **jwt, "satisfy": "any"}),
    ]
    site = start_site(gateway, tmp_path, routes)
    sites.append(site)
    try:
        check_per_consumer(
            site, origin, proto, "/keys/items", {"X-API-Key": alice_key}, {"X-API-Key": bob_key}
        )
        alice_jwt = "Bearer " + sign(claims(sub="alice"))
        bob_jwt = "Bearer " + sign(claims(sub="bob"))
        check_per_consumer(
            site,
            origin,
            proto,
            "/jwt/items",
            {"Authorization": alice_jwt},
            {"Authorization": bob_jwt},
        )
        check_per_consumer(
            site,
            origin,
            proto,
            "/basic/items",
            {"Authorization": basic("alice", "alice-pw")},
            {"Authorization": basic("bob", "bob-pw")},
        )
        check_per_consumer(
            site,
            origin,
            proto,
            "/fwd/items",
            {"Authorization": "Sso alice"},
            {"Authorization": "Sso bob"},
        )
        # satisfy: any, alice with her API key, bob with a token
        check_per_consumer(
            site, origin, proto, "/any/items", {"X-API-Key": alice_key}, {"Authorization": bob_jwt}
        )
    finally:
        sso.stop()


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_without_a_consumer_name_the_credentials_tell_consumers_apart(
    proto: str,
    origin: Origin,
    gateway: Callable[..., Gateway],
    tmp_path: Path,
    sites: list[Site],
) -> None:
    """Forward auth without consumer_from and a JWT without the consumer claim name nobody:
    the credentials the route's auth read decide whose answer it is. A request the auth
    let through without any gets no entry of its own."""
    sso = ScriptedServer(
        lambda path, headers: (
            (200, {}, b"")
            if "session=" in headers.get("cookie", "") or headers["x-forwarded-uri"] == "/door/x"
            else (401, {}, b"")
        )
    )
    jwt = {"jwt": {"algorithms": ["HS256"], "secret": HS_SECRET, "consumer_claim": None}}
    fwd = {"forward": {"url": sso.url}, "consumer_header": None}
    routes = [
        cached("/fwd/", origin, fwd),
        cached("/jwt/", origin, {**jwt, "consumer_header": None}),
        cached("/door/", origin, fwd),
    ]
    site = start_site(gateway, tmp_path, routes)
    sites.append(site)
    try:
        for path, alice, bob in (
            ("/fwd/items", {"Cookie": "session=alice"}, {"Cookie": "session=bob"}),
            (
                "/jwt/items",
                {"Authorization": "Bearer " + sign(claims(sub="alice"))},
                {"Authorization": "Bearer " + sign(claims(sub="bob"))},
            ),
        ):
            assert site.get(proto, path, **alice)[0] == "MISS"
            assert site.get(proto, path, **alice) == (
                "HIT",
                {"n": 1, "consumer": None, "lang": None},
            )
            assert site.get(proto, path, **bob) == (
                "MISS",
                {"n": 2, "consumer": None, "lang": None},
            )
            assert site.get(proto, path, **bob)[0] == "HIT"
            assert len(origin.gets(path)) == 2
        # let in with no credentials: nothing stored for "nobody", which would be everybody's
        assert site.get(proto, "/door/x")[0] == "MISS"
        assert site.get(proto, "/door/x") == ("MISS", {"n": 2, "consumer": None, "lang": None})
        # but an answer for everybody is shared with them
        origin.cache_control["/door/x"] = "public, max-age=60"
        assert site.get(proto, "/door/x")[0] == "MISS"
        assert site.get(proto, "/door/x")[0] == "HIT"
        assert site.get(proto, "/door/x", Cookie="session=carol")[0] == "HIT"
        assert len(origin.gets("/door/x")) == 3
    finally:
        sso.stop()


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_answers_said_to_be_shared_are_shared(
    proto: str,
    origin: Origin,
    gateway: Callable[..., Gateway],
    tmp_path: Path,
    sites: list[Site],
) -> None:
    data = tmp_path / "data"
    alice = {"X-API-Key": create_key(data, "alice")}
    bob = {"X-API-Key": create_key(data, "bob")}
    routes = [
        cached("/keys/", origin, {"api_keys": {}}),
        cached("/shared/", origin, {"api_keys": {}}, shared=True),
        cached("/mine/", origin, {"api_keys": {}}, key={"consumer": True}),
    ]
    site = start_site(gateway, tmp_path, routes)
    sites.append(site)
    origin.cache_control["/keys/public"] = "public, max-age=60"
    origin.cache_control["/keys/smaxage"] = "s-maxage=60"
    origin.cache_control["/mine/public"] = "public, max-age=60"
    # the response says so (public, s-maxage), or the route does (shared: true)
    for path in ("/keys/public", "/keys/smaxage", "/shared/items"):
        assert site.get(proto, path, **alice) == (
            "MISS",
            {"n": 1, "consumer": "alice", "lang": None},
        )
        assert site.get(proto, path, **bob) == ("HIT", {"n": 1, "consumer": "alice", "lang": None})
        assert len(origin.gets(path)) == 1
    # key.consumer: true keeps even a public answer per consumer
    assert site.get(proto, "/mine/public", **alice)[0] == "MISS"
    assert site.get(proto, "/mine/public", **bob) == (
        "MISS",
        {"n": 2, "consumer": "bob", "lang": None},
    )
    assert site.get(proto, "/mine/public", **alice) == (
        "HIT",
        {"n": 1, "consumer": "alice", "lang": None},
    )
    # private is never stored, not even for its own consumer
    origin.cache_control["/keys/private"] = "private, max-age=60"
    assert site.get(proto, "/keys/private", **alice)[0] == "MISS"
    assert site.get(proto, "/keys/private", **alice)[0] == "MISS"


def test_shared_and_per_consumer_key_refused(tmp_path: Path) -> None:
    route = {
        "path": "/",
        "auth": {"api_keys": {}},
        "proxy": {"upstreams": ["http://127.0.0.1:9"]},
        "cache": {"shared": True, "key": {"consumer": True}},
    }
    path = tmp_path / "bastion.yaml"
    path.write_text(json.dumps({"data_dir": str(tmp_path), "sites": [{"routes": [route]}]}))
    out = check_refuses(path)
    assert "shared" in out.stderr and "key.consumer" in out.stderr, out.stderr


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_unsafe_requests_invalidate_their_url(
    proto: str,
    origin: Origin,
    gateway: Callable[..., Gateway],
    tmp_path: Path,
    sites: list[Site],
) -> None:
    data = tmp_path / "data"
    alice = {"X-API-Key": create_key(data, "alice")}
    bob = {"X-API-Key": create_key(data, "bob")}
    routes = [cached("/keys/", origin, {"api_keys": {}}), cached("/open/", origin, None)]
    site = start_site(gateway, tmp_path, routes)
    sites.append(site)

    # POST /open/items drops the stored GET /open/items
    assert site.get(proto, "/open/items")[0] == "MISS"
    assert site.get(proto, "/open/items")[0] == "HIT"
    r = site.send(proto, "POST", "/open/items")
    assert r.status_code == 201 and r.headers["x-cache"] == "BYPASS"
    assert site.get(proto, "/open/items") == ("MISS", {"n": 2, "consumer": None, "lang": None})
    assert len(origin.gets("/open/items")) == 2

    # every variant, every method that is not known to be safe
    for method in ("PUT", "PATCH", "DELETE"):
        for lang in ("en", "fr"):
            site.get(proto, "/open/v?vary=Accept-Language", **{"Accept-Language": lang})
            assert (
                site.get(proto, "/open/v?vary=Accept-Language", **{"Accept-Language": lang})[0]
                == "HIT"
            )
        assert site.send(proto, method, "/open/v?vary=Accept-Language").status_code == 201
        for lang in ("en", "fr"):
            assert (
                site.get(proto, "/open/v?vary=Accept-Language", **{"Accept-Language": lang})[0]
                == "MISS"
            )
    # a safe method leaves the entries alone
    assert site.send(proto, "OPTIONS", "/open/v?vary=Accept-Language").status_code == 201
    assert site.get(proto, "/open/v?vary=Accept-Language", **{"Accept-Language": "en"})[0] == "HIT"

    # a failed POST changed nothing: the entry stays
    for status in (400, 404, 409, 500, 503):
        r = site.send(proto, "POST", "/open/items", **{"X-Status": str(status)})
        assert r.status_code == status
        assert site.get(proto, "/open/items")[0] == "HIT"
    assert len(origin.gets("/open/items")) == 2

    # bob's POST drops alice's entry too (all consumers of the URL)
    assert site.get(proto, "/keys/items", **alice)[0] == "MISS"
    assert site.get(proto, "/keys/items", **bob)[0] == "MISS"
    assert site.get(proto, "/keys/items", **alice)[0] == "HIT"
    assert site.send(proto, "POST", "/keys/items", **bob).status_code == 201
    assert site.get(proto, "/keys/items", **alice) == (
        "MISS",
        {"n": 3, "consumer": "alice", "lang": None},
    )
    assert site.get(proto, "/keys/items", **bob) == (
        "MISS",
        {"n": 4, "consumer": "bob", "lang": None},
    )
    # a refused POST (no key) reaches nothing and drops nothing
    assert site.send(proto, "POST", "/keys/items").status_code == 401
    assert site.get(proto, "/keys/items", **alice)[0] == "HIT"


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_location_of_the_same_origin_is_invalidated(
    proto: str,
    origin: Origin,
    gateway: Callable[..., Gateway],
    tmp_path: Path,
    sites: list[Site],
) -> None:
    site = start_site(gateway, tmp_path, [cached("/open/", origin, None)])
    sites.append(site)
    base = site.bases[proto]
    paths = ("/open/items/1", "/open/items/2", "/open/items/3", "/open/items/4", "/open/other/5")
    for path in paths:
        assert site.get(proto, path)[0] == "MISS"
        assert site.get(proto, path)[0] == "HIT"

    def post(**fields: str) -> None:
        sent = {"X-" + name.replace("_", "-"): value for name, value in fields.items()}
        assert site.send(proto, "POST", "/open/items", **sent).status_code == 201

    post(location="/open/items/1")  # absolute path
    post(content_location=base + "/open/items/2")  # absolute URL of this origin
    post(location="items/3")  # relative to /open/items
    # another origin, or this host on another scheme: not touched
    post(location="http://elsewhere.test/open/items/4")
    other = "https" if proto == "h1" else "http"
    post(location=f"{other}://{urlsplit(base).netloc}/open/other/5")
    assert site.get(proto, "/open/items/1")[0] == "MISS"
    assert site.get(proto, "/open/items/2")[0] == "MISS"
    assert site.get(proto, "/open/items/3")[0] == "MISS"
    assert site.get(proto, "/open/items/4")[0] == "HIT"
    assert site.get(proto, "/open/other/5")[0] == "HIT"


def test_invalidation_reaches_the_other_workers_without_credentials(
    origin: Origin, gateway: Callable[..., Gateway], tmp_path: Path, sites: list[Site]
) -> None:
    """With several workers the invalidation is queued for the others in the data dir:
    the file holds the URL as the cache keys it, never the API key of the request."""
    data = tmp_path / "data"
    key = create_key(data, "alice")
    auth = {"api_keys": {"query": "api_key"}}
    site = start_site(gateway, tmp_path, [cached("/keys/", origin, auth)], workers=2)
    sites.append(site)
    r = site.clients["h1"].post(site.bases["h1"] + f"/keys/items?api_key={key}&page=2")
    assert r.status_code == 201
    written = [p.read_text() for p in (data / "cache-purge").glob("*.json")]
    assert written
    assert any("/keys/items?page=2" in text for text in written)
    assert not any(key in text or key.split("_")[-1] in text for text in written)
