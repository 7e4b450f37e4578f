"""`bastion status`'s regrouping: routes sharing endpoints make one pool, counters once."""

from __future__ import annotations

from typing import Any

from bastion.balance.status import group, render


def endpoint(url: str, requests: int, **member: Any) -> dict[str, Any]:
    return {
        "url": url,
        "zone": member.get("zone"),
        "weight": member.get("weight", 1),
        "backup": member.get("backup", False),
        "workers": 1,
        "unhealthy_in": 0,
        "ejected_in": 0,
        "in_flight": 0,
        "requests": requests,
        "ejections": 0,
        "ewma_ms": 1.5,
        "health": "healthy",
    }


def test_routes_naming_the_same_endpoints_share_one_pool() -> None:
    shared = [endpoint("http://a:1", 7), endpoint("http://b:1", 3)]
    per_route = [
        {"name": "* /x/", "policy": "round_robin", "endpoints": shared},
        {
            "name": "* /y/",
            "policy": "least_requests",
            "endpoints": [endpoint("http://a:1", 7, weight=3), endpoint("http://b:1", 3)],
        },
        {"name": "* /z/", "policy": "round_robin", "endpoints": [endpoint("http://c:1", 1)]},
    ]
    grouped = group(per_route)
    first, second = grouped["pools"]
    assert [e["requests"] for e in first["endpoints"]] == [7, 3]
    assert first["routes"] == ["* /x/", "* /y/"] and second["routes"] == ["* /z/"]
    assert "weight" not in first["endpoints"][0]  # a route's own, not the endpoint's
    y = grouped["routes"][1]
    assert (y["pool"], y["policy"], y["endpoints"][0]["weight"]) == (1, "least_requests", 3)
    text = render(grouped)
    assert text.count("http://a:1  healthy") == 1
    assert "http://a:1 weight 3" in text


def test_two_endpoints_of_one_url_with_their_own_counters_stay_apart() -> None:
    # routes with other connection settings get endpoints of their own for the same URL
    per_route = [
        {"name": "r1", "policy": "round_robin", "endpoints": [endpoint("http://a:1", 4)]},
        {"name": "r2", "policy": "round_robin", "endpoints": [endpoint("http://a:1", 9)]},
    ]
    pools = group(per_route)["pools"]
    assert [p["endpoints"][0]["requests"] for p in pools] == [4, 9]
