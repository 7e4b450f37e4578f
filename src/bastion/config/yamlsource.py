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
    columns: dict[int, int] = field(default_factory=dict)
    """The 1-based column of some problems, by their index in ``problems``."""


def _short(error: yaml.MarkedYAMLError) -> str:
    """PyYAML's own words, for those who know them, after the plain sentence."""
    words = f"{error.context}: {error.problem}" if error.context else str(error.problem)
    return f" (YAML: {words})"


def _plain(error: yaml.MarkedYAMLError) -> tuple[yaml.Mark | None, str]:
    """Where to point and what to fix, for the syntax errors people make."""
    problem, context = error.problem or "", error.context or ""
    opened = error.context_mark
    if "'\\t'" in problem or "'\t'" in problem:
        return error.problem_mark, "a tab character: YAML indents with spaces only; use spaces"
    if "<block end>" in problem and "parsing a block" in context:
        return error.problem_mark, (
            "the indentation of this line does not match the lines above: indent it like "
            "the other keys (or list items) of the same level, with spaces"
        )
    if "scanning a quoted scalar" in context and "end of stream" in problem:
        return opened, "the quote opened here is never closed: add the closing quote"
    if "scanning a double-quoted scalar" in context and "escape" in problem:
        return error.problem_mark, (
            "an unknown escape in a double-quoted value: write \\\\ for a backslash, "
            "or use single quotes"
        )
    for kind, closer in (("flow sequence", "]"), ("flow mapping", "}")):
        if kind in context:
            return opened, (
                f"the '{'[' if closer == ']' else '{'}' opened here is not closed where "
                f"expected: close it with '{closer}', and separate its items with ','"
            )
    if problem == "mapping values are not allowed here":
        return error.problem_mark, (
            "a ':' where none can be: quote a value that contains ': ', or check the "
            "indentation of this line and the one above"
        )
    if "scanning a simple key" in context:
        return opened, (
            "this line is neither 'key: value' nor a '- ' list item: add the ':' or "
            "the '- ', or indent it to continue the value above"
        )
    if "alias" in context or "alias" in problem:
        return error.problem_mark, (
            "a value starting with '*' is read as an alias: quote it, like \"*.example.test\""
        )
    return error.problem_mark or opened, "this is not valid YAML here"


def _syntax_problem(error: yaml.MarkedYAMLError) -> tuple[int | None, int | None, str]:
    """(line, column, message) of a syntax error, both 1-based."""
    mark, message = _plain(error)
    mark = mark or error.problem_mark or error.context_mark
    if mark is None:
        return None, None, message + _short(error)
    return mark.line + 1, mark.column + 1, message + _short(error)


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
        line, column, message = _syntax_problem(error)
        if column is not None:
            document.columns[len(document.problems)] = column
        document.problems.append(((), line, message))
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
        self.document.columns[len(self.document.problems)] = node.start_mark.column + 1
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
                    f"duplicate key {key!r}: it is already defined on line {first_line[key]}; "
                    "keep one of the two (YAML would silently use the last)",
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
