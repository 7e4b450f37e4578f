"""The config as plain objects: what a serving process holds instead of pydantic models.

A serving process never validates a config itself: a short-lived process does and hands it
over (``bastion.config.handoff``), each model turned into a ``ConfigNode`` whose class has
the model's name, its fields as attributes and the few properties that code reads off a
model (the mixins below, which the models inherit too). Pydantic and the 60 models'
classes cost a worker about 12 MiB that it would keep for its whole life.

The code that serves reads a node exactly as it reads a model: attributes, and the helpers
here where it once asked pydantic (``is_a`` for ``isinstance``, ``replaced`` for
``model_copy``, ``fingerprint`` for ``model_dump_json``), which take either.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

__all__ = [
    "AlertRuleNeeds",
    "AuthMethods",
    "ChannelType",
    "ConfigNode",
    "Secret",
    "fingerprint",
    "is_a",
    "node",
    "node_class",
    "replaced",
]


# ------------------------------------------------------------- models' properties
class ChannelType:
    """An alert channel's kind: the one of webhook, slack, email it sets."""

    __slots__ = ()

    @property
    def type(self) -> str:
        return next(k for k in ("webhook", "slack", "email") if getattr(self, k) is not None)


class AlertRuleNeeds:
    __slots__ = ()
    if TYPE_CHECKING:  # the rule's fields
        datapoints_to_alarm: int | None
        evaluation_periods: int

    @property
    def needed(self) -> int:
        """N: breaching periods out of the last M that fire the rule."""
        return self.datapoints_to_alarm or self.evaluation_periods


class AuthMethods:
    __slots__ = ()

    def methods(self) -> list[str]:
        """The names of the methods set, in the order they are tried."""
        return [k for k in ("api_keys", "jwt", "basic", "forward") if getattr(self, k)]


# model name -> the properties its nodes share with it
_BEHAVIOUR: dict[str, type] = {
    "AlertChannel": ChannelType,
    "AlertRule": AlertRuleNeeds,
    "Auth": AuthMethods,
}


# ------------------------------------------------------------------------ nodes
class ConfigNode:
    """One validated model's fields, frozen. Equal to another node of the same model with
    the same fields, and hashed as pydantic hashes a frozen model (a list field makes it
    unhashable, as there)."""

    _model: str = ""

    def __init__(self, fields: Mapping[str, Any]) -> None:
        object.__setattr__(self, "__dict__", dict(fields))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash((self._model, *self.__dict__.values()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"{type(self).__name__}({inner})"

    def __reduce__(self) -> tuple[Any, ...]:
        return node, (_lineage(type(self)), self.__dict__)


_CLASSES: dict[tuple[str, ...], type[ConfigNode]] = {}


def node_class(lineage: tuple[str, ...]) -> type[ConfigNode]:
    """The node class of a model, given its name and then its parent models' names (so
    that ``is_a(node, parent)`` holds as ``isinstance`` does for the models)."""
    cls = _CLASSES.get(lineage)
    if cls is None:
        name = lineage[0]
        parent = node_class(lineage[1:]) if len(lineage) > 1 else ConfigNode
        bases: tuple[type, ...] = (parent,)
        behaviour = _BEHAVIOUR.get(name)
        if behaviour is not None and not issubclass(parent, behaviour):
            bases += (behaviour,)
        cls = type(name, bases, {"_model": name, "__module__": __name__})
        _CLASSES[lineage] = cls
    return cls


def node(lineage: tuple[str, ...], fields: Mapping[str, Any]) -> ConfigNode:
    return node_class(lineage)(fields)


def _lineage(cls: type) -> tuple[str, ...]:
    return tuple(c._model for c in cls.__mro__ if issubclass(c, ConfigNode) and c._model)


class Secret:
    """A substituted secret, as pydantic's ``SecretStr`` holds it: shown as stars,
    read with ``get_secret_value()``."""

    __slots__ = ("_secret_value",)

    def __init__(self, value: str) -> None:
        self._secret_value = value

    def get_secret_value(self) -> str:
        return self._secret_value

    def __eq__(self, other: object) -> bool:
        get = getattr(other, "get_secret_value", None)
        return get is not None and get() == self._secret_value

    def __hash__(self) -> int:
        return hash(self._secret_value)

    def __len__(self) -> int:
        return len(self._secret_value)

    def __str__(self) -> str:
        return "**********" if self._secret_value else ""

    def __repr__(self) -> str:
        return f"SecretStr('{self}')"

    def __reduce__(self) -> tuple[Any, ...]:
        return Secret, (self._secret_value,)


# ---------------------------------------------------------------------- helpers
_KINDS: dict[tuple[type, str], bool] = {}


def is_a(value: object, model: str) -> bool:
    """``isinstance(value, <the model named model>)`` for a model or its node."""
    key = (type(value), model)
    found = _KINDS.get(key)
    if found is None:
        found = _KINDS[key] = any(c.__name__ == model for c in type(value).__mro__)
    return found


def replaced(value: Any, **changes: Any) -> Any:
    """A copy of a model or node with some fields changed (pydantic's ``model_copy``)."""
    if isinstance(value, ConfigNode):
        return type(value)({**value.__dict__, **changes})
    return value.model_copy(update=changes)


def fingerprint(value: Any) -> str:
    """A string equal for equal settings, to key caches on (secrets show as stars, as in
    pydantic's ``model_dump_json``)."""
    if isinstance(value, ConfigNode):
        return repr(value)
    text: str = value.model_dump_json()
    return text
