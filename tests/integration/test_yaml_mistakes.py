"""A config file that is not valid YAML: `bastion check` points at the line and column
and says in plain words what to fix, before PyYAML's own short text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

MISTAKES = [
    (
        "indentation",
        "sites:\n  - hosts: [a.test]\n    routes:\n      - path: /\n       respond: {}\n",
        "5:8",
        "the indentation of this line does not match the lines above: ",
    ),
    (
        "tab",
        "sites:\n\t- hosts: [a.test]\n",
        "2:1",
        "a tab character: YAML indents with spaces only; use spaces",
    ),
    (
        "unclosed quote",
        'listen:\n  http: "127.0.0.1:8080\nsites: []\n',
        "2:9",
        "the quote opened here is never closed: add the closing quote",
    ),
    (
        "unclosed bracket",
        "sites:\n  - hosts: [a.test, b.test\n    routes: []\n",
        "2:12",
        "the '[' opened here is not closed where expected: close it with ']'",
    ),
    (
        "colon in a value",
        "sites:\n  - hosts: [a.test]\n    routes:\n      - path: /\n        respond:\n"
        "          body: a: b\n",
        "6:18",
        "a ':' where none can be: quote a value that contains ': '",
    ),
    (
        "missing colon",
        "listen:\n  http: 127.0.0.1:8080\nsites\n",
        "3:1",
        "this line is neither 'key: value' nor a '- ' list item",
    ),
    (
        "unquoted wildcard",
        "sites:\n  - hosts: [*.example.test]\n",
        "2:14",
        "a value starting with '*' is read as an alias: quote it",
    ),
    (
        "duplicate key",
        "listen:\n  http: 127.0.0.1:8080\n  http: 127.0.0.1:8081\nsites: []\n",
        "3:3",
        "listen.http: duplicate key 'http': it is already defined on line 2; keep one",
    ),
]


@pytest.mark.parametrize(
    ("text", "where", "sentence"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES]
)
def test_a_yaml_mistake_is_explained_where_it_is(
    tmp_path: Path, text: str, where: str, sentence: str
) -> None:
    path = tmp_path / "bastion.yaml"
    path.write_text(text)
    out = subprocess.run(
        [sys.executable, "-m", "bastion", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith(f"{path}:{where}: ")]
    assert lines, out.stderr
    assert lines[0].removeprefix(f"{path}:{where}: ").startswith(sentence), out.stderr
    if "duplicate" not in sentence:
        # PyYAML's words come after the sentence, short, in parentheses
        assert lines[0].endswith(")") and "(YAML: " in lines[0]
