"""The contracts between a wire protocol and what it calls are complete in every class that
implements them.

`Downstream`, `Router` and `Handler` are base classes (http/downstream.py and
http/router.py say why), whose members raise NotImplementedError: a class that derives from
one and forgets a member would pass mypy and fail only when the member is used. Each
implementation here must override every member of its contract, with a method, a property
or an attribute of its own (a class-level value, or a field of the compiled build).
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import bastion
from bastion.cache.capture import CaptureClient
from bastion.cache.handler import CachingHandler
from bastion.handlers.s3 import S3Handler
from bastion.handlers.simple import HttpsRedirectHandler, RedirectHandler, RespondHandler
from bastion.handlers.static import StaticHandler
from bastion.http.downstream import Downstream
from bastion.http.router import Handler, Router
from bastion.http1.server import HTTP1Connection
from bastion.http2.stream import Stream
from bastion.plan.routes import CanonicalRedirect
from bastion.plan.runtime import Plan
from bastion.policies.chain import PolicyHandler
from bastion.proxy.handler import ProxyHandler
from bastion.server.admin.handler import AdminHandler
from bastion.server.metrics import MetricsHandler, MetricsRouter
from bastion.server.own_listener import OwnRouter


def _members(contract: type) -> list[str]:
    return sorted(name for name in vars(contract) if not name.startswith("__"))


IMPLEMENTATIONS = [
    (Downstream, HTTP1Connection),
    (Downstream, Stream),
    (Downstream, CaptureClient),
    (Router, Plan),
    (Router, OwnRouter),
    (Router, MetricsRouter),
    *(
        (Handler, handler)
        for handler in (
            ProxyHandler,
            S3Handler,
            CachingHandler,
            PolicyHandler,
            StaticHandler,
            RedirectHandler,
            HttpsRedirectHandler,
            RespondHandler,
            CanonicalRedirect,
            AdminHandler,
            MetricsHandler,
        )
    ),
]


@pytest.mark.parametrize(
    ("contract", "cls"), IMPLEMENTATIONS, ids=[c.__name__ for _, c in IMPLEMENTATIONS]
)
def test_every_member_of_the_contract_is_implemented(contract: type, cls: type) -> None:
    assert issubclass(cls, contract)
    declared = _declared_below(cls, contract)
    missing = [name for name in _members(contract) if name not in declared]
    assert not missing, f"{cls.__name__} leaves {missing} of {contract.__name__} to the base"


def _declared_below(cls: type, contract: type) -> set[str]:
    """The names some class between `cls` and `contract` in its MRO defines: methods,
    properties, class-level values, the compiled build's fields. Not a bare annotation:
    interpreted, the base's property would still answer, and refuse an assignment."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is contract:
            break
        names |= set(vars(klass))
    return names


@pytest.mark.parametrize("contract", [Downstream, Router, Handler], ids=lambda c: c.__name__)
def test_every_implementation_is_checked_here(contract: type) -> None:
    """A new implementation, in any module of bastion, must join the list above."""
    for module in pkgutil.walk_packages(bastion.__path__, "bastion."):
        if module.name != "bastion.__main__":
            importlib.import_module(module.name)
    checked = {cls for base, cls in IMPLEMENTATIONS if base is contract}
    # the parts a checked class is built of (ProblemAnswers, the HTTP/1.1 connection's
    # chain, ExchangeHandler) are checked with it
    parts = {klass for cls in checked for klass in cls.__mro__}
    unchecked = _all_subclasses(contract) - parts
    assert not unchecked, f"unchecked: {sorted(c.__name__ for c in unchecked)}"


def _all_subclasses(cls: type) -> set[type]:
    out: set[type] = set()
    for sub in cls.__subclasses__():
        if sub.__module__.startswith("bastion."):
            out.add(sub)
            out |= _all_subclasses(sub)
    return out
