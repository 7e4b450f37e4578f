import httpx

from conftest import Backend, Gateway


def test_get_through_gateway(proxied: Gateway, backend: Backend) -> None:
    r = httpx.get(proxied.url + "/hello?x=1")
    assert r.status_code == 200
    seen = backend.requests[-1]
    assert seen["path"] == "/hello?x=1"
    headers = dict(seen["headers"])
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-request-id"] == r.headers["x-request-id"]
