"""User-Agent strings to browser, OS, device and bot families (`ua_parser`, cached).

Parsing runs in the statistics writer's thread, never on the request path. A parse costs
about a millisecond (ua-parser's regular expressions), so results are cached per distinct
string in a bounded LRU, and a batch parses at most `budget` strings it has not seen
(the most frequent first): a client sending a new random User-Agent with every request
cannot make the writer fall behind; the strings left over count as "Other" until a later
batch parses them. Only the first `MAX_AGENT` characters of a string count: a parse costs
time in proportion to the string's length, with the interpreter's lock held (the event
loop waits), and the cache keeps its strings, which a client can make as long as its
header limit allows.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Mapping
from types import ModuleType
from typing import NamedTuple

__all__ = ["AgentFamilies", "Families"]

CACHE_SIZE = 20_000  # distinct User-Agent strings remembered
PARSE_BUDGET = 50  # strings parsed per batch (about 50 ms of a thread, once a second)
MAX_AGENT = 512  # characters of a User-Agent parsed and cached (real ones are shorter)
NONE = "(none)"  # no User-Agent header
OTHER = "Other"  # ua-parser's name for what it does not recognise

# crawlers ua-parser does not class as "Spider": generic markers of automated clients
_BOT_MARKERS = re.compile(r"bot\b|bot/|crawl|spider|slurp|scrapy|headless", re.IGNORECASE)


class Families(NamedTuple):
    browser: str
    os: str
    device: str
    bot: str | None  # the bot's name when the client is a crawler; then it counts only here


NO_AGENT = Families(NONE, NONE, NONE, None)
UNPARSED = Families(OTHER, OTHER, OTHER, None)


def parse_agent(agent: str) -> Families:
    """The families of one User-Agent string (uncached)."""
    if not agent:
        return NO_AGENT
    result = _ua_parser().parse(agent)
    browser = result.user_agent.family if result.user_agent else OTHER
    device = result.device.family if result.device else OTHER
    if device == "Spider" or _BOT_MARKERS.search(agent):
        return Families(browser, OTHER, OTHER, browser if browser != OTHER else clip_bot(agent))
    os_family = result.os.family if result.os else OTHER
    return Families(browser, os_family, device, None)


def _ua_parser() -> ModuleType:
    """ua-parser, imported on first use (it loads its regular expressions then).

    Its loaders import PyYAML when it is installed, only to read custom regex files,
    which bastion never asks for. A serving process holds no PyYAML otherwise (its config
    is validated by another process), so the import is refused while ua-parser loads:
    about 1.4 MiB kept out of the worker."""
    loaded = sys.modules.get("ua_parser")
    if loaded is not None:
        return loaded
    refusal = _RefuseYaml(threading.get_ident())  # this thread's imports only
    sys.meta_path.insert(0, refusal)
    try:
        import ua_parser
    finally:
        sys.meta_path.remove(refusal)
    return ua_parser


class _RefuseYaml:
    """An import finder that makes ``import yaml`` fail in one thread (unless PyYAML is
    loaded already: then ``sys.modules`` answers before any finder is asked)."""

    def __init__(self, thread: int) -> None:
        self.thread = thread

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.partition(".")[0] == "yaml" and threading.get_ident() == self.thread:
            raise ModuleNotFoundError("PyYAML is not imported by a serving process", name=name)


def clip_bot(agent: str) -> str:
    """A name for a bot ua-parser does not know: the product token of its string."""
    return agent.split(None, 1)[0].split("/", 1)[0][:60] or OTHER


class AgentFamilies:
    """Counts User-Agent strings into families, with a bounded LRU of parsed strings."""

    def __init__(self, cache_size: int = CACHE_SIZE, budget: int = PARSE_BUDGET) -> None:
        self.budget = budget
        self.cache_size = cache_size
        self._cache: dict[str, Families] = {}  # insertion order is recency: LRU first

    def families(self, agent: str) -> Families:
        """One string's families (parsed now if needed, whatever the budget)."""
        cache = self._cache
        families = cache.pop(agent, None)
        if families is None:
            families = parse_agent(agent)
            if len(cache) >= self.cache_size:
                del cache[next(iter(cache))]
        cache[agent] = families
        return families

    def __len__(self) -> int:
        return len(self._cache)

    def __contains__(self, agent: str) -> bool:
        return agent in self._cache

    def count(self, agents: Mapping[str, int]) -> dict[Families, int]:
        """Requests per families for one batch's User-Agent counts."""
        if any(len(agent) > MAX_AGENT for agent in agents):
            clipped: dict[str, int] = {}
            for agent, n in agents.items():
                agent = agent[:MAX_AGENT]
                clipped[agent] = clipped.get(agent, 0) + n
            agents = clipped
        cache = self._cache
        fresh = [agent for agent in agents if agent not in cache]
        skipped: set[str] = set()
        if len(fresh) > self.budget:
            fresh.sort(key=agents.__getitem__, reverse=True)
            skipped.update(fresh[self.budget :])
        out: dict[Families, int] = {}
        for agent, n in agents.items():
            families = UNPARSED if agent in skipped else self.families(agent)
            out[families] = out.get(families, 0) + n
        return out
