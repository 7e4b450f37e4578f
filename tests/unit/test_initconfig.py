"""`bastion init`'s derivation: OpenAPI documents (written here) → routes, validation and
auth; every config written is then checked by `bastion check` itself (load and compile)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from authtokens import ScriptedServer, json_reply
from bastion.initconfig import InitError, Setup, derive, load_document, write_all
from bastion.initconfig.document import parse
from bastion.initconfig.yamltext import scalar
from initdocs import fastapi_doc, with_schemes

UPSTREAM = "http://127.0.0.1:8000"


def bastion_check(config: Path, **env: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "bastion", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, done.stderr
    return done


def written(
    tmp_path: Path, doc: dict[str, Any] | None, text: str | None = None, **setup: Any
) -> tuple[Path, dict[str, Any]]:
    """Derive and write a config from `doc` (JSON) or `text` (a YAML document); return its
    path and what it reads back as."""
    source = tmp_path / "source.yaml"
    document = None
    if doc is not None or text is not None:
        source.write_text(text if text is not None else json.dumps(doc))
        document = load_document(str(source))
    settings = Setup(upstream=UPSTREAM, openapi_file="openapi.json" if document else None)
    settings = Setup(**{**settings.__dict__, **setup})
    derived = derive(settings, document)
    config = tmp_path / "bastion.yaml"
    write_all(str(config), derived, document, False, io.StringIO())
    return config, yaml.safe_load(config.read_text())


def routes_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    return list(data["sites"][0]["routes"])


def by_path(data: dict[str, Any]) -> dict[tuple[str, tuple[str, ...]], dict[str, Any]]:
    return {(r["path"], tuple(r.get("methods") or ())): r for r in routes_of(data)}


def test_fastapi_items_api(tmp_path: Path) -> None:
    config, data = written(tmp_path, fastapi_doc())
    routes = by_path(data)
    assert set(routes) == {
        ("= /health", ("GET",)),
        ("= /token", ("POST",)),
        ("= /items", ("GET",)),
        ("= /items", ("POST",)),
        ("/items/", ("GET", "PUT")),
        ("/items/", ("DELETE",)),
    }
    # security: [] and the global requirement
    assert "auth" not in routes["= /health", ("GET",)]
    assert "auth" not in routes["= /items", ("GET",)]
    key = {"header": "X-API-Key", "bearer": False}
    assert routes["= /items", ("POST",)]["auth"] == {"api_keys": key}
    assert routes["/items/", ("GET", "PUT")]["auth"] == {"api_keys": key}
    # the app's own token URL: HS256 tokens, the secret from the environment
    jwt = routes["/items/", ("DELETE",)]["auth"]["jwt"]
    assert jwt == {"algorithms": ["HS256"], "secret": "${JWT_SECRET}", "scopes": ["items:write"]}
    for route in routes.values():
        assert route["validation"] == {"openapi": "openapi.json", "unknown_operation": 405}
        assert route["proxy"]["upstreams"] == [UPSTREAM]
    saved = json.loads((tmp_path / "openapi.json").read_text())
    assert saved == fastapi_doc()
    text = config.read_text()
    assert "# rate_limits:" in text and "# cache:" in text
    assert "bastion keys create --consumer NAME" in text
    out = bastion_check(config, JWT_SECRET="j" * 40).stdout
    assert "/items/ [DELETE]" in out and "auth jwt" in out


def test_yaml_document_gives_the_same_config(tmp_path: Path) -> None:
    (tmp_path / "json").mkdir()
    (tmp_path / "yaml").mkdir()
    _, from_json = written(tmp_path / "json", fastapi_doc())
    _, from_yaml = written(tmp_path / "yaml", None, yaml.safe_dump(fastapi_doc()))
    assert routes_of(from_json) == routes_of(from_yaml)


def test_same_method_different_credentials_under_one_prefix_uses_regex_routes(
    tmp_path: Path,
) -> None:
    doc = fastapi_doc()
    doc["paths"]["/items/{item_id}/owner"] = {
        "get": {"security": [], "parameters": [doc["paths"]["/items/{item_id}"]["get"]
                                                ["parameters"][0]], "responses": {}}
    }  # fmt: skip
    config, data = written(tmp_path, doc)
    paths = [r["path"] for r in routes_of(data)]
    assert "/items/" not in paths
    owner = paths.index("~ ^/items/[^/]+/owner$")
    item = paths.index("~ ^/items/[^/]+$")
    assert owner < item  # the more literal path first, as OpenAPI matching does
    assert "auth" not in routes_of(data)[owner]
    bastion_check(config, JWT_SECRET="j" * 40)


def test_no_paths_writes_a_plain_proxy(tmp_path: Path) -> None:
    doc = {"openapi": "3.0.3", "info": {"title": "Empty", "version": "1"}, "paths": {}}
    source = tmp_path / "empty.json"
    source.write_text(json.dumps(doc))
    document = load_document(str(source))
    derived = derive(Setup(upstream=UPSTREAM, openapi_file="openapi.json"), document)
    assert derived.routes is None and "describes no operations" in derived.warnings[0]
    config = tmp_path / "bastion.yaml"
    write_all(str(config), derived, document, False, io.StringIO())
    assert routes_of(yaml.safe_load(config.read_text())) == [
        {
            "path": "/",
            "proxy": {"upstreams": [UPSTREAM], "timeouts": {"connect": "5s", "read": "60s"}},
        }
    ]
    assert not (tmp_path / "openapi.json").exists()
    bastion_check(config)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"swagger": "2.0", "paths": {}}', "is a Swagger 2.0 document; bastion reads OpenAPI 3"),
        (b'{"openapi": "4.0"}', "is not an OpenAPI 3.0 or 3.1 document"),
        (b"paths: [unclosed", "is neither JSON nor YAML"),
        (b"- a list", "not a mapping"),
        (
            b'{"openapi": "3.1.0", "paths": {"/a": {"post": {"requestBody": {"content": '
            b'{"application/json": {"schema": {"$ref": "#/components/schemas/Nope"}}}}}}}}',
            "Nope",
        ),
    ],
)
def test_invalid_documents_are_clear_errors(content: bytes, message: str) -> None:
    with pytest.raises(InitError) as caught:
        parse(content, "doc.json")
    assert message in str(caught.value)
    assert str(caught.value).startswith("doc.json")


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InitError, match=r"cannot read .*nope\.json: No such file"):
        load_document(str(tmp_path / "nope.json"))


def test_query_key_bearer_opaque_and_satisfy_any(tmp_path: Path) -> None:
    schemes = {
        "q": {"type": "apiKey", "in": "query", "name": "api_key"},
        "tok": {"type": "http", "scheme": "bearer", "bearerFormat": "opaque"},
        "jwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
    }
    config, data = written(tmp_path, with_schemes(schemes, [{"q": []}, {"tok": []}, {"jwt": []}]))
    (route,) = routes_of(data)
    assert route["path"] == "/things/"
    auth = route["auth"]
    assert auth["satisfy"] == "any"
    assert auth["api_keys"] == {"header": None, "bearer": True, "query": "api_key"}
    assert auth["jwt"]["jwks_url"] == "https://issuer.invalid/.well-known/jwks.json"
    assert "TODO set jwks_url" in config.read_text()
    bastion_check(config)


def test_basic_auth_gets_an_empty_htpasswd(tmp_path: Path) -> None:
    schemes = {"b": {"type": "http", "scheme": "basic"}}
    config, data = written(tmp_path, with_schemes(schemes, [{"b": []}]))
    assert routes_of(data)[0]["auth"] == {"basic": {"users_file": "htpasswd"}}
    htpasswd = tmp_path / "htpasswd"
    assert htpasswd.stat().st_mode & 0o777 == 0o600
    assert all(line.startswith("#") for line in htpasswd.read_text().splitlines())
    bastion_check(config)


def test_what_bastion_cannot_check_is_left_to_the_app(tmp_path: Path) -> None:
    schemes = {
        "cookie": {"type": "apiKey", "in": "cookie", "name": "session"},
        "key": {"type": "apiKey", "in": "header", "name": "X-Key"},
        "mtls": {"type": "mutualTLS"},
    }
    # cookie OR key: requiring the key would lock out cookie callers
    config, data = written(tmp_path, with_schemes(schemes, [{"cookie": []}, {"key": []}]))
    assert "auth" not in routes_of(data)[0]
    assert "leaves authentication to the app" in config.read_text()
    # mtls AND key: the key is checked, the app checks the certificate
    (tmp_path / "and").mkdir()
    config, data = written(tmp_path / "and", with_schemes(schemes, [{"key": [], "mtls": []}]))
    assert routes_of(data)[0]["auth"] == {"api_keys": {"header": "X-Key", "bearer": False}}
    bastion_check(config)


def test_openid_connect_from_its_discovery_document(tmp_path: Path) -> None:
    discovery = {
        "issuer": "https://login.example.test/",
        "jwks_uri": "https://login.example.test/keys",
    }
    server = ScriptedServer(lambda path, headers: json_reply(discovery))
    try:
        url = f"{server.url}/realm/.well-known/openid-configuration"
        schemes = {"oidc": {"type": "openIdConnect", "openIdConnectUrl": url}}
        from bastion.initconfig import discover_oidc

        source = tmp_path / "doc.json"
        source.write_text(json.dumps(with_schemes(schemes, [{"oidc": ["read"]}])))
        document = load_document(str(source))
        derived = derive(Setup(UPSTREAM, openapi_file="openapi.json"), document, discover_oidc)
    finally:
        server.stop()
    assert [p for p, _ in server.seen] == ["/realm/.well-known/openid-configuration"]
    config = tmp_path / "bastion.yaml"
    write_all(str(config), derived, document, False, io.StringIO())
    jwt = routes_of(yaml.safe_load(config.read_text()))[0]["auth"]["jwt"]
    assert jwt["jwks_url"] == "https://login.example.test/keys"
    assert jwt["issuer"] == "https://login.example.test/" and jwt["scopes"] == ["read"]
    bastion_check(config)


def test_openid_connect_unreachable_is_guessed_and_said(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/realm/.well-known/openid-configuration"
    schemes = {"oidc": {"type": "openIdConnect", "openIdConnectUrl": url}}
    config, data = written(tmp_path, with_schemes(schemes, [{"oidc": []}]))
    jwt = routes_of(data)[0]["auth"]["jwt"]
    assert jwt["issuer"] == "http://127.0.0.1:9/realm"
    assert jwt["jwks_url"] == "http://127.0.0.1:9/realm/.well-known/jwks.json"
    assert "could not be fetched" in config.read_text()


def test_public_setup_with_a_domain(tmp_path: Path) -> None:
    config, data = written(
        tmp_path, fastapi_doc(), domain="api.example.com", email="ops@example.com"
    )
    assert data["listen"] == {"http": ":80", "https": ":443"}
    assert data["acme"] == {"email": "ops@example.com"}
    assert data["sites"][0]["hosts"] == ["api.example.com"] and data["sites"][0]["tls"] == "auto"
    assert "tls: auto: ACME" in bastion_check(config, JWT_SECRET="j" * 40).stdout


def test_values_from_the_document_cannot_read_the_environment(tmp_path: Path) -> None:
    schemes = {"k": {"type": "apiKey", "in": "query", "name": "${HOME}"}}
    assert scalar("${HOME}") == '"$${HOME}"'
    for text in (
        "a: b",
        "#x",
        "- x",
        "~",
        "null",
        "yes",
        "1.5",
        "[x]",
        "é",
        "\x01",
        "= /a",
        "it's",
        "a\\.b",
        "a@b",
        "50%",
        "x: ",
        "a #b",
        "ok:",
    ):
        assert yaml.safe_load(f"k: {scalar(text)}") == {"k": text}
        assert yaml.safe_load(f"k: [{scalar(text, flow=True)}]") == {"k": [text]}
    config, data = written(tmp_path, with_schemes(schemes, [{"k": []}]))
    assert "auth" not in routes_of(data)[0]
    assert "is not one bastion can read" in config.read_text()


def test_existing_files_are_not_overwritten(tmp_path: Path) -> None:
    config, _ = written(tmp_path, fastapi_doc())
    before = config.read_text()
    document = load_document(str(tmp_path / "source.yaml"))
    derived = derive(Setup(UPSTREAM, openapi_file="openapi.json"), document)
    with pytest.raises(InitError, match=r"already exists: not overwritten\. Use --force"):
        write_all(str(config), derived, document, False, io.StringIO())
    assert config.read_text() == before
    write_all(str(config), derived, document, True, io.StringIO())


def _matched(routes: list[dict[str, Any]], path: str, method: str) -> dict[str, Any] | None:
    """The route bastion's router picks for `method path` (None: 404 or 405)."""
    from bastion.config.matching import parse_route_path
    from bastion.routing import PathTable

    table: PathTable[dict[str, Any]] = PathTable()
    for route in routes:
        parsed = parse_route_path(route["path"])
        table.add(parsed.kind, parsed.value, route)
    for candidate in table.match(path) or []:
        methods = candidate.get("methods")
        if methods is None or method in methods:
            return candidate
    return None


def test_every_operation_reaches_a_route_asking_its_credentials(tmp_path: Path) -> None:
    """Overlapping templates, a root template, a template inside a segment, trailing slashes:
    the router sends each described request to a route with the document's credentials."""
    key, cookie = [{"key": []}], [{"cookie": []}]
    schemes = {
        "key": {"type": "apiKey", "in": "header", "name": "X-Key"},
        "cookie": {"type": "apiKey", "in": "cookie", "name": "sid"},
    }

    def op(security: list[Any]) -> dict[str, Any]:
        return {"security": security, "responses": {}}

    doc = {
        "openapi": "3.0.3",
        "info": {"title": "t", "version": "1"},
        "components": {"securitySchemes": schemes},
        "paths": {
            "/items/": {"get": op([]), "post": op(key)},
            "/items/{id}": {"get": op([]), "delete": op(key)},
            "/items/{id}/secret": {"get": op(key)},
            "/items/mine": {"get": op(key)},
            "/files/{name}.json": {"get": op([])},
            "/files/{name}.yaml": {"get": op(key)},
            "/a/{x}": {"get": op([])},
            "/a/b/{y}": {"get": op(key)},
            "/{slug}": {"get": op(cookie)},
        },
    }
    _, data = written(tmp_path, doc)
    routes = routes_of(data)
    expect = {
        ("GET", "/items/"): False,
        ("POST", "/items/"): True,
        ("GET", "/items/x1"): False,
        ("DELETE", "/items/x1"): True,
        ("GET", "/items/x1/secret"): True,
        ("GET", "/items/mine"): True,
        ("GET", "/files/x1.json"): False,
        ("GET", "/files/x1.yaml"): True,
        ("GET", "/a/x1"): False,
        ("GET", "/a/b"): False,
        ("GET", "/a/b/x1"): True,
        ("GET", "/x1"): False,  # a cookie: left to the app
    }
    for (method, path), needs_key in expect.items():
        route = _matched(routes, path, method)
        assert route is not None, (method, path)
        assert ("auth" in route) == needs_key, (method, path, route["path"])
    assert _matched(routes, "/items/x1", "PATCH") is None  # 405 from the router


def test_scheme_names_that_make_the_same_anchor(tmp_path: Path) -> None:
    schemes = {
        "a b": {"type": "apiKey", "in": "header", "name": "X-Key"},
        "a-b": {"type": "http", "scheme": "basic"},
    }
    config, data = written(tmp_path, with_schemes(schemes, [{"a b": []}, {"a-b": []}]))
    assert routes_of(data)[0]["auth"] == {
        "satisfy": "any",
        "api_keys": {"header": "X-Key", "bearer": False},
        "basic": {"users_file": "htpasswd"},
    }
    assert "&auth-a-b\n" in config.read_text() and "&auth-a-b-2\n" in config.read_text()
    bastion_check(config)


def test_roles_of_a_key_scheme_are_not_jwt_scopes(tmp_path: Path) -> None:
    """OpenAPI 3.1 lets any scheme list roles; bastion's api_keys has no scopes."""
    schemes = {"key": {"type": "apiKey", "in": "header", "name": "X-Key"}}
    config, data = written(tmp_path, with_schemes(schemes, [{"key": ["admin"]}]))
    assert routes_of(data)[0]["auth"] == {"api_keys": {"header": "X-Key", "bearer": False}}
    bastion_check(config)
