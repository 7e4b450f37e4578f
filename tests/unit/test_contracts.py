"""The contracts between a wire protocol and what it calls are complete in every class that
implements them.

`Downstream`, `Router` and `Handler` are base classes (http/downstream.py and
http/router.py say why), whose members raise NotImplementedError: a class that derives from
one and forgets a member would pass mypy and fail only when the member is used. Each
implementation here must override every member of its contract, with a method, a property
or an attribute of its own (a class-level value, or a field of the compiled build).
"""

from __future__ import annotations

import pytest

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
from bastion.proxy.base import ExchangeHandler
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
    """The names some class between `cls` and `contract` in its MRO defines (methods,
    properties, class-level values, the compiled build's fields), or annotates."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is contract:
            break
        names |= set(vars(klass))
        names |= set(getattr(klass, "__annotations__", {}))
    return names


def test_every_handler_class_is_checked_here() -> None:
    """A new handler class (of the modules imported here) must join the list above."""
    checked = {cls for contract, cls in IMPLEMENTATIONS if contract is Handler}
    found = _all_subclasses(Handler)
    bases = {Handler, ExchangeHandler}  # (ExchangeHandler: the base of two of them)
    assert found <= checked | bases, f"unchecked: {sorted(c.__name__ for c in found - checked)}"


def _all_subclasses(cls: type) -> set[type]:
    out: set[type] = set()
    for sub in cls.__subclasses__():
        if sub.__module__.startswith("bastion."):
            out.add(sub)
            out |= _all_subclasses(sub)
    return out
