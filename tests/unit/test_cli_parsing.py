"""The command line is parsed by the parser of the command's module alone, with the same
results, help and errors as the whole parser's, and without argparse's `shutil`."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from bastion.cli import COMMANDS, MODULES, build_parser, parse
from bastion.cli.formatting import HelpFormatter, RawDescriptionHelpFormatter, terminal_columns


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_every_command_names_the_module_that_registers_it() -> None:
    assert sorted(_subcommands(build_parser())) == sorted(COMMANDS)
    assert set(COMMANDS.values()) == set(MODULES)
    for command, module in COMMANDS.items():
        assert command in _subcommands(build_parser((module,)))


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "-c", "bastion.yaml"],
        ["proxy", "--from", "127.0.0.1:9000", "--to", "http://127.0.0.1:8000"],
        ["check", "-c", "x.yaml"],
        ["status", "--json"],
        ["certs", "list"],
    ],
)
def test_one_module_parses_as_the_whole_parser(argv: list[str]) -> None:
    assert vars(parse(argv)) == vars(build_parser().parse_args(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--no-such-flag"],
        ["run", "--version"],
        ["certs", "sideways"],
        ["proxy", "--help"],
        ["run", "--help"],
        ["--help"],
        ["nothing"],
        [],
    ],
)
def test_help_and_mistakes_read_as_ever(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as ours:
        parse(argv)
    got = capsys.readouterr()
    with pytest.raises(SystemExit) as whole:
        build_parser().parse_args(argv)
    expected = capsys.readouterr()
    assert (ours.value.code, got.out, got.err) == (whole.value.code, expected.out, expected.err)


@pytest.mark.parametrize("columns", ["100", "61", None])
def test_the_help_is_argparse_own(columns: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The formatters lay out help as argparse's, whose width comes from shutil."""
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    import shutil

    assert terminal_columns() == shutil.get_terminal_size().columns
    assert HelpFormatter("bastion")._width == argparse.HelpFormatter("bastion")._width
    stock = {
        HelpFormatter: argparse.HelpFormatter,
        RawDescriptionHelpFormatter: argparse.RawDescriptionHelpFormatter,
    }
    for name, sub in _subcommands(build_parser()).items():
        text = sub.format_help()
        sub.formatter_class = stock[sub.formatter_class]
        assert sub.format_help() == text, name


def test_a_gateway_command_line_imports_neither_shutil_nor_other_commands() -> None:
    probe = (
        "import sys; from bastion.cli import parse; "
        "parse(['run', '-c', 'bastion.yaml']); parse(['proxy', '--to', 'http://127.0.0.1:1']); "
        "print(' '.join(m for m in ('shutil', 'tempfile', 'bastion.cli.operate', "
        "'bastion.cli.service', 'bastion.cli.init', 'bastion.cli.doctor') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == []
