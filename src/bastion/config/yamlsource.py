"""YAML text -> plain Python data plus the line of every key and list item.

PyYAML's ``safe_load`` forgets where values came from and silently keeps the last of two
duplicate keys. Composing the node graph and building the data ourselves keeps both: each key
path maps to its 1-based line, and a repeated key is reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from bastion.config.errors import Loc

__all__ = ["Problem", "YamlDocument", "parse_yaml"]

_MERGE_TAG = "tag:yaml.org,2002:merge"

Problem = tuple[Loc, int | None, str]
"""A problem found while reading: key path, line (1-based) and message."""


@dataclass
class YamlDocument:
    """The data of one YAML document, where each piece of it is, and what was wrong."""

    data: Any = None
    lines: dict[Loc, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    failed: set[Loc] = field(default_factory=set)
    """Key paths whose value could not be built (already reported; the data holds None)."""
    fatal: bool = False
    """True when the text could not be read at all (syntax error, empty file)."""


def _syntax_message(error: yaml.MarkedYAMLError) -> str:
    message = f"invalid YAML: {error.problem}"
    if error.context:
        message += f" {error.context}"
        if "alias" in error.context:
            message += "; quote values that start with '*', like \"*.example.test\""
    return message


def parse_yaml(text: str) -> YamlDocument:
    """Read one YAML document; syntax errors and an empty file are fatal problems."""
    document = YamlDocument()
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            document.problems.append(
                ((), None, "the file is empty; it needs at least a 'sites' section")
            )
            document.fatal = True
            return document
        document.data = _Builder(loader, document).build(node, ())
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else None
        document.problems.append(((), line, _syntax_message(error)))
        document.fatal = True
    except yaml.YAMLError as error:
        # A ReaderError (e.g. a control character): it has an offset rather than a mark.
        position = getattr(error, "position", None)
        line = text.count("\n", 0, position) + 1 if isinstance(position, int) else None
        document.problems.append(((), line, f"invalid YAML: {error}"))
        document.fatal = True
    finally:
        loader.dispose()
    if not document.fatal and not isinstance(document.data, dict):
        document.problems.append(
            ((), document.lines.get(()), "the top level must be a mapping of keys like sites:")
        )
        document.fatal = True
    return document


class _Builder:
    def __init__(self, loader: yaml.SafeLoader, document: YamlDocument) -> None:
        self.loader = loader
        self.document = document
        self.active: set[int] = set()  # nodes being built: an alias back to one is a cycle

    def problem(self, loc: Loc, node: Node, message: str) -> None:
        self.document.problems.append((loc, node.start_mark.line + 1, message))

    def build(self, node: Node, loc: Loc) -> Any:
        self.document.lines.setdefault(loc, node.start_mark.line + 1)
        if id(node) in self.active:
            self.problem(loc, node, "an alias refers back to itself")
            self.document.failed.add(loc)
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self.mapping(node, loc)
            if isinstance(node, SequenceNode):
                return [self.item(child, (*loc, i)) for i, child in enumerate(node.value)]
            try:
                return self.loader.construct_object(node, deep=True)
            except yaml.MarkedYAMLError as error:
                self.problem(loc, node, f"invalid value: {error.problem}")
                self.document.failed.add(loc)
                return None
        finally:
            self.active.discard(id(node))

    def item(self, node: Node, loc: Loc) -> Any:
        self.document.lines[loc] = node.start_mark.line + 1
        return self.build(node, loc)

    def mapping(self, node: MappingNode, loc: Loc) -> dict[str, Any]:
        result: dict[str, Any] = {}
        explicit = [(k, v) for k, v in node.value if k.tag != _MERGE_TAG]
        # Merge keys ("<<: *defaults") first, so that keys written in this mapping win.
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                self.merge(value_node, loc, result)
        first_line: dict[str, int] = {}
        for key_node, value_node in explicit:
            key = self.key(key_node, loc)
            if key is None:
                continue
            line = key_node.start_mark.line + 1
            if key in first_line:
                self.problem(
                    (*loc, key),
                    key_node,
                    f"duplicate key {key!r} (first defined on line {first_line[key]})",
                )
                continue
            first_line[key] = line
            self.document.lines[(*loc, key)] = line
            result[key] = self.build(value_node, (*loc, key))
        return result

    def key(self, node: Node, loc: Loc) -> str | None:
        if not isinstance(node, ScalarNode):
            self.problem(loc, node, "a key must be a plain name, not a list or mapping")
            return None
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as error:
            self.problem(loc, node, f"invalid key: {error.problem}")
            return None
        # Keys are names: `on:` or `1:` stay the text written, not true or 1.
        return value if isinstance(value, str) else node.value

    def merge(self, node: Node, loc: Loc, into: dict[str, Any]) -> None:
        sources = node.value if isinstance(node, SequenceNode) else [node]
        for source in sources:
            if not isinstance(source, MappingNode):
                self.problem(loc, node, "'<<' must refer to a mapping or a list of mappings")
                continue
            for key, value in self.mapping(source, loc).items():
                into.setdefault(key, value)
