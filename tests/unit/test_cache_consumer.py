"""The consumer part of cache keys and the shared mark of decisions, without a server."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.cache.consumer import CONSUMER_MARK, ConsumerKey, consumer_key
from bastion.cache.policy import Rules, decide
from bastion.config.policy_auth import Auth
from bastion.http.request import Request


def request(consumer: str = "", **fields: str) -> Request:
    req = Request()
    req.consumer = consumer
    req.headers = [
        (name.lower().encode(), name.encode(), value.encode()) for name, value in fields.items()
    ]
    return req


def rule(**auth: Any) -> ConsumerKey:
    made = consumer_key(Auth.model_validate(auth), False, False)
    assert made is not None
    return made


def test_no_rule_without_auth_or_when_shared() -> None:
    assert consumer_key(None, False, False) is None
    assert consumer_key(None, True, False) is None  # nobody to tell apart
    assert consumer_key(Auth.model_validate({"api_keys": {}}), False, True) is None


def test_identity_is_the_consumer_name_else_a_digest_of_the_credentials() -> None:
    keys = rule(api_keys={})
    key = "bk_1234abcd_secretsecretsecret"
    assert keys.identity(request("alice", **{"X-API-Key": key})) == "c:alice"
    # no consumer named: the credential fields, digested, never as text
    anonymous = keys.identity(request(**{"X-API-Key": key}))
    assert anonymous is not None and anonymous.startswith("h:")
    assert key not in anonymous and "secret" not in anonymous
    assert anonymous != keys.identity(request(**{"X-API-Key": key + "x"}))
    assert anonymous == keys.identity(request(**{"X-API-Key": key}))
    # nothing to tell the request apart: no entry of its own
    assert keys.identity(request(Accept="*/*")) is None
    assert keys.own_primary("http://h/x", request()) is None
    assert keys.own_primary("http://h/x", request("bob")) == "http://h/x" + CONSUMER_MARK + "c:bob"
    # a name with control characters cannot fake the marks around it
    odd = keys.identity(request("bob\x1dfr"))
    assert odd is not None and odd.startswith("d:") and "\x1d" not in odd


@pytest.mark.parametrize(
    ("auth", "fields"),
    [
        ({"api_keys": {"header": "X-Key", "bearer": True}}, {b"x-key", b"authorization"}),
        ({"basic": {"users": {"a": "$2b$04$" + "a" * 53}}}, {b"authorization"}),
        ({"forward": {"url": "http://auth.test/check"}}, {b"authorization", b"cookie"}),
        (
            {"forward": {"url": "http://auth.test/", "request_headers": ["X-Session"]}},
            {b"x-session"},
        ),
    ],
)
def test_credential_fields_of_each_method(auth: dict[str, Any], fields: set[bytes]) -> None:
    assert rule(**auth).fields == fields


def test_api_key_query_parameter_never_in_the_key() -> None:
    keys = rule(api_keys={"query": "api_key"})
    assert keys.key_query("api_key=bk_x_secret&page=2") == "page=2"
    assert keys.key_query("page=2") == "page=2"


@pytest.mark.parametrize(
    ("cache_control", "shared"),
    [
        ("max-age=60", False),
        ("must-revalidate, max-age=60", False),
        ("public, max-age=60", True),
        ("s-maxage=60", True),
    ],
)
def test_decision_says_whether_the_answer_is_for_everybody(
    cache_control: str, shared: bool
) -> None:
    decision = decide("GET", 200, {"cache-control": cache_control}, Rules(), False, 0.0)
    assert decision.store and decision.shared is shared
