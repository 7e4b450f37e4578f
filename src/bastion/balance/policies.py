"""Balancing policies: pure choices over a list of usable members.

A member is an endpoint as seen by one pool: its `weight` (configured), `eff`
(weight after slow start), `current` (smooth round robin state) and `ep` (the
shared `Endpoint`: in-flight count and latency estimate).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from bastion.balance.endpoint import EWMA_DECAY
from bastion.registry import Registry

if TYPE_CHECKING:
    from bastion.balance.balancer import Member
    from bastion.config.errors import Loc
    from bastion.http.request import Request


class Policy:
    """What a balancer asks of its policy: the member for the next try among `members`
    (never empty). A base class rather than a protocol: compiled (docs/compiled.md), the
    balancer calls `choose` through the class's method table, where through a protocol the
    call was a lookup by name."""

    def choose(self, members: Sequence[Member], req: Request | None, now: float) -> Member:
        raise NotImplementedError


class RoundRobin(Policy):
    """Smooth weighted round robin (as nginx does it): weights 5,1,1 give
    a a b a c a a, not a a a a a b c."""

    def __init__(self) -> None:
        self.seen: Sequence[Member] | None = None
        self.uniform = False
        self.turn = 0

    def choose(self, members: Sequence[Member], req: Request | None, now: float) -> Member:
        best = members[0]
        n = len(members)
        if n == 1:
            return best
        if members is not self.seen:
            # a new candidate list (the balancer rebuilds it only on changes): with equal
            # weights the smooth sequence is plain rotation, which costs O(1)
            self.seen = members
            self.uniform = all(m.eff == best.eff for m in members)
        if self.uniform:
            turn = self.turn % n
            self.turn = turn + 1
            return members[turn]
        total = 0.0
        top = -math.inf
        for m in members:
            m.current += m.eff
            total += m.eff
            if m.current > top:
                top = m.current
                best = m
        best.current -= total
        return best


class LeastRequests(Policy):
    """Fewest requests in flight relative to weight; ties go round robin."""

    def __init__(self) -> None:
        self.offset = 0

    def choose(self, members: Sequence[Member], req: Request | None, now: float) -> Member:
        n = len(members)
        if n == 1:
            return members[0]
        self.offset = start = (self.offset + 1) % n
        best = members[start]
        best_score = (best.ep.inflight + 1) / best.eff
        for i in range(1, n):
            m = members[(start + i) % n]
            score = (m.ep.inflight + 1) / m.eff
            if score < best_score:
                best, best_score = m, score
        return best


def _two(members: Sequence[Member], rand: Callable[[], float]) -> tuple[Member, Member]:
    n = len(members)
    i = int(rand() * n)
    j = int(rand() * (n - 1))
    if j >= i:
        j += 1
    return members[i], members[j]


class RandomTwo(Policy):
    """Power of two random choices: the less loaded of two picked at random."""

    def __init__(self, rand: Callable[[], float] = random.random) -> None:
        self.rand = rand

    def choose(self, members: Sequence[Member], req: Request | None, now: float) -> Member:
        if len(members) == 1:
            return members[0]
        a, b = _two(members, self.rand)
        if (a.ep.inflight + 1) / a.eff <= (b.ep.inflight + 1) / b.eff:
            return a
        return b


class PeakEwma(Policy):
    """Two random choices compared by latency * (in flight + 1) / weight: load moves
    away from an endpoint as soon as it turns slow, and back once it recovers."""

    def __init__(self, rand: Callable[[], float] = random.random) -> None:
        self.rand = rand

    def choose(self, members: Sequence[Member], req: Request | None, now: float) -> Member:
        n = len(members)
        if n == 1:
            return members[0]
        # inlined (this runs per request): two distinct members, then their costs
        rand = self.rand
        i = int(rand() * n)
        j = int(rand() * (n - 1))
        if j >= i:
            j += 1
        a = members[i]
        b = members[j]
        ea = a.ep
        eb = b.ep
        la = ea.ewma if now - ea.ewma_at < EWMA_DECAY else ea.latency(now)
        lb = eb.ewma if now - eb.ewma_at < EWMA_DECAY else eb.latency(now)
        return a if la * (ea.inflight + 1) * b.eff <= lb * (eb.inflight + 1) * a.eff else b


def rendezvous_score(key: bytes, member_id: bytes, weight: float) -> float:
    """Weighted rendezvous (highest random weight) hashing: each key goes to the member
    with the highest score, so when a member leaves only its own keys move."""
    digest = hashlib.blake2b(key + b"\x00" + member_id, digest_size=8).digest()
    u = (int.from_bytes(digest, "big") + 1) / 18446744073709551617.0  # in (0, 1)
    return -weight / math.log(u)


def key_reader(spec: str) -> Callable[[Request], bytes | None]:
    """The function that reads a hash key from a request, resolved once per plan."""
    if spec == "client_ip":
        return lambda req: req.client_ip.encode() or None
    if spec == "path":
        return lambda req: req.path.encode()
    kind, _, name = spec.partition(":")
    if kind == "header":
        lname = name.lower().encode()
        return lambda req: req.header(lname)
    cookie = name.encode()
    return lambda req: read_cookie(req, cookie)


def read_cookie(req: Request, name: bytes) -> bytes | None:
    prefix = name + b"="
    for lname, _, value in req.headers:
        if lname != b"cookie":
            continue
        for part in value.split(b";"):
            part = part.strip()
            if part.startswith(prefix):
                return part[len(prefix) :].strip(b'"') or None
    return None


class Hash(Policy):
    """Consistent hashing on a request key; requests without the key go round robin."""

    def __init__(self, spec: str) -> None:
        self.read = key_reader(spec)
        self.fallback = RoundRobin()

    def choose(self, members: Sequence[Member], req: Request | None, now: float) -> Member:
        key = self.read(req) if req is not None else None
        if key is None or len(members) == 1:
            return self.fallback.choose(members, req, now)
        best = members[0]
        top = -1.0
        for m in members:
            score = rendezvous_score(key, m.key, m.weight)
            if score > top:
                top, best = score, m
        return best


class Sticky(Policy):
    """The endpoint named by the request's cookie while it is usable; otherwise
    least requests (the exchange then sets the cookie on the response)."""

    def __init__(self, cookie: str) -> None:
        self.cookie = cookie.encode()
        self.fallback = LeastRequests()

    def choose(self, members: Sequence[Member], req: Request | None, now: float) -> Member:
        if req is not None:
            wanted = read_cookie(req, self.cookie)
            if wanted is not None:
                for m in members:
                    if m.key == wanted:
                        return m
        return self.fallback.choose(members, req, now)


# Each balancing policy by its name in the config (``proxy.balance``); a builder takes
# the hash key spec and the sticky cookie name, whichever it uses.
POLICIES: Registry[Callable[[str, str], Policy]] = Registry(
    "balancing policy",
    {
        "round_robin": lambda hash_key, cookie: RoundRobin(),
        "least_requests": lambda hash_key, cookie: LeastRequests(),
        "random_two": lambda hash_key, cookie: RandomTwo(),
        "peak_ewma": lambda hash_key, cookie: PeakEwma(),
        "hash": lambda hash_key, cookie: Hash(hash_key),
        "sticky": lambda hash_key, cookie: Sticky(cookie),
    },
)


def make_policy(name: str, hash_key: str, cookie: str, loc: Loc, source: str) -> Policy:
    """The policy called ``name``; ``loc`` is the key path that chose it and ``source`` the
    config file (an unknown name is a ``ConfigError``)."""
    return POLICIES.get(name, loc, source)(hash_key, cookie)
