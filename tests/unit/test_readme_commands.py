"""Every `bastion ...` command the README shows is one the CLI takes, as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from bastion.cli import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_commands() -> list[str]:
    commands = []
    for block in re.findall(r"```(?:sh|console)\n(.*?)```", README.read_text(), re.DOTALL):
        for line in block.splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("bastion "):
                # what the shell does after the command is not the command's business
                commands.append(re.split(r"\s+(?:#|>|\||&&)", line)[0])
    return commands


def test_the_readme_shows_commands() -> None:
    assert len(readme_commands()) >= 5


@pytest.mark.parametrize("command", readme_commands())
def test_a_readme_command_parses(command: str) -> None:
    try:
        build_parser().parse_args(shlex.split(command)[1:])
    except SystemExit as exc:  # argparse's way of refusing
        pytest.fail(f"`{command}` is refused by the CLI (exit {exc.code})")


def test_commands_named_in_the_readme_text_exist(capsys: pytest.CaptureFixture[str]) -> None:
    named = set(re.findall(r"`bastion ([a-z]+)", README.read_text()))
    assert named
    for name in named:
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args([name, "--help"])
        assert exc.value.code == 0, f"`bastion {name}` is no command of the CLI"
    capsys.readouterr()
