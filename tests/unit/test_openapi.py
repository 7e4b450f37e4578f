"""OpenAPI documents compiled into operations and validators (bastion.openapi)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion.openapi.operations import OperationTable, query_values
from bastion.openapi.schemas import SchemaSet, body_errors, compile_plain, pointer
from bastion.openapi.source import SpecUnavailable, load_document, parse_document, saved_copy_path

DOC = {
    "openapi": "3.0.3",
    "paths": {
        "/users/me": {"get": {"responses": {}}},
        "/users/{id}": {
            "get": {
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}},
                    {
                        "name": "ids",
                        "in": "query",
                        "schema": {"type": "array", "items": {"type": "integer"}},
                    },
                    {"name": "on", "in": "query", "schema": {"type": "boolean"}},
                    {"$ref": "#/components/parameters/Trace"},
                ],
                "responses": {},
            },
            "delete": {"responses": {}},
        },
        "/files/{name}.json": {"get": {"responses": {}}},
    },
    "components": {
        "parameters": {
            "Trace": {
                "name": "X-Trace",
                "in": "header",
                "schema": {"type": "string", "maxLength": 4},
            }
        },
        "schemas": {"N": {"type": "string", "nullable": True, "enum": ["a"]}},
    },
}


def test_literal_paths_win_over_templates_and_params_are_decoded() -> None:
    table = OperationTable(DOC, SchemaSet(DOC))
    item, values = table.find("/users/me")
    assert item is not None and values == {} and set(item.operations) == {"GET", "HEAD"}
    item, values = table.find("/users/a%20b")
    assert item is not None and values == {"id": "a b"}
    assert item.allow == "DELETE, GET, HEAD"
    assert table.find("/users/1/extra") == (None, {})
    item, values = table.find("/files/report.json")
    assert item is not None and values == {"name": "report"}
    assert table.find("/files/report.txt") == (None, {})


def test_parameters_are_converted_before_validation() -> None:
    table = OperationTable(DOC, SchemaSet(DOC))
    item, _ = table.find("/users/7")
    assert item is not None
    params = {p.name: p for p in item.operations["GET"].parameters}
    assert params["id"].convert(["7"]) == 7
    assert params["id"].convert(["x7"]) == "x7"  # left as is: the validator reports it
    assert params["ids"].convert(["1", "2"]) == [1, 2]
    assert params["on"].convert(["true"]) is True
    assert params["X-Trace"].required is False
    assert not params["X-Trace"].validator.is_valid("toolong")
    assert query_values("ids=1&ids=2&e=") == {"ids": ["1", "2"], "e": [""]}


def test_nullable_and_refs_in_30_documents() -> None:
    schemas = SchemaSet(DOC)
    validator = schemas.compile(["components", "schemas", "N"])
    assert validator.is_valid(None) and validator.is_valid("a") and not validator.is_valid("b")


def test_errors_carry_json_pointers() -> None:
    validator = compile_plain(
        {"type": "object", "properties": {"a/b": {"type": "array", "items": {"type": "integer"}}}}
    )
    assert body_errors(validator, {"a/b": [1, "x"]}, 10) == [
        {"detail": '"x" is not of type "integer"', "pointer": "#/a~1b/1"}
    ]
    assert pointer([]) == "#" and pointer(["~x"]) == "#/~0x"
    long = compile_plain({"maxLength": 1})
    (error,) = body_errors(long, "y" * 1000, 10)
    assert len(error["detail"]) <= 200


def test_documents_that_are_not_openapi_3_are_refused() -> None:
    with pytest.raises(ValueError, match=r"not an OpenAPI 3\.0 or 3\.1"):
        parse_document(b"swagger: '2.0'\npaths: {}\n", "x")
    with pytest.raises(ValueError, match="neither JSON nor YAML"):
        parse_document(b"{not json", "x")
    assert parse_document(json.dumps(DOC).encode(), "x")["openapi"] == "3.0.3"


def test_unreachable_url_uses_the_saved_copy(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/openapi.json"  # discard port: nothing listens
    with pytest.raises(SpecUnavailable, match="no earlier copy"):
        load_document(url, tmp_path, 2.0)
    saved = saved_copy_path(tmp_path, url)
    saved.parent.mkdir(parents=True)
    saved.write_text(json.dumps(DOC))
    assert load_document(url, tmp_path, 2.0)["paths"].keys() == DOC["paths"].keys()


def test_urls_in_logs_lose_credentials_and_query() -> None:
    from bastion.openapi.source import shown

    assert shown("https://user:pw@api.test:8443/openapi.json?token=abc") == (
        "https://api.test:8443/openapi.json"
    )
    assert shown("http://[::1]/o.json") == "http://[::1]/o.json"
