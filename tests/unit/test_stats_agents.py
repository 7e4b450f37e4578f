"""User-Agent strings become browser / OS / device / bot families (ua-parser), counted in
the top tables of the statistics."""

from __future__ import annotations

from pathlib import Path

from bastion.clock import ManualClock
from bastion.observe.stats import StatsStore, StatsWriter
from bastion.observe.stats.agents import OTHER, AgentFamilies, Families, parse_agent
from statskit import CHROME, CURL, FIREFOX, GOOGLEBOT, figures, interval

T0 = 1_800_000_000
BINGBOT = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)


def test_families_of_common_clients() -> None:
    assert parse_agent(CHROME) == Families("Chrome", "Windows", OTHER, None)
    assert parse_agent(FIREFOX) == Families("Firefox", "Linux", OTHER, None)
    assert parse_agent(CURL).browser == "curl" and parse_agent(CURL).bot is None
    assert parse_agent(IPHONE) == Families("Mobile Safari", "iOS", "iPhone", None)
    assert parse_agent(GOOGLEBOT).bot == "Googlebot"
    assert parse_agent(BINGBOT).bot == "bingbot"
    assert parse_agent("MyCrawler/1.0 (+https://example.net/crawler)").bot == "MyCrawler"
    assert parse_agent("") == Families("(none)", "(none)", "(none)", None)


def test_a_batch_parses_at_most_its_budget_most_frequent_first() -> None:
    agents = AgentFamilies(budget=2)
    counts = {CHROME: 50, FIREFOX: 40, CURL: 1, IPHONE: 2}
    first = agents.count(counts)
    assert first[parse_agent(CHROME)] == 50 and first[parse_agent(FIREFOX)] == 40
    assert first[Families(OTHER, OTHER, OTHER, None)] == 3  # left for a later batch
    second = agents.count(counts)  # Chrome and Firefox are cached: the other two get parsed
    assert second[parse_agent(IPHONE)] == 2 and second[parse_agent(CURL)] == 1


def test_the_cache_is_bounded_and_forgets_the_least_recent() -> None:
    agents = AgentFamilies(cache_size=2, budget=10)
    agents.count({CHROME: 1, FIREFOX: 1})
    agents.count({CHROME: 1})  # Chrome used again: Firefox is the least recent
    agents.count({CURL: 1})
    assert len(agents) == 2
    assert CHROME in agents and CURL in agents and FIREFOX not in agents


def test_huge_user_agents_are_parsed_and_kept_by_their_start() -> None:
    """A client can send User-Agents as long as its header limit: each would cost a parse
    in proportion to its length and stay in the cache whole. Only their start counts."""
    agents = AgentFamilies(budget=100)
    padding = "x" * 30_000
    counts = agents.count({f"{CHROME} {padding}{i}": 1 for i in range(20)})
    assert counts == {parse_agent(CHROME): 20}
    assert len(agents) == 1  # one string of at most MAX_AGENT characters is cached


def test_browsers_os_devices_and_bots_in_the_summary(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    writer = StatsWriter(tmp_path, clock)
    try:
        for i in range(3):
            writer.add(
                interval(
                    T0 + i,
                    {"site": figures(16)},
                    agents={CHROME: 5, FIREFOX: 4, CURL: 2, GOOGLEBOT: 3, IPHONE: 1, "": 1},
                )
            )
        assert writer.flush()
    finally:
        writer.close()
    clock.advance(3)
    top = StatsStore(tmp_path, clock).summary("5m")["top"]
    assert top["browsers"] == [
        {"key": "Chrome", "requests": 15},
        {"key": "Firefox", "requests": 12},
        {"key": "curl", "requests": 6},
        {"key": "(none)", "requests": 3},
        {"key": "Mobile Safari", "requests": 3},
    ]
    assert top["bots"] == [{"key": "Googlebot", "requests": 9}]
    assert {row["key"]: row["requests"] for row in top["os"]} == {
        "Windows": 15,
        "Linux": 12,
        OTHER: 6,
        "(none)": 3,
        "iOS": 3,
    }
    assert {row["key"]: row["requests"] for row in top["devices"]}["iPhone"] == 3
