"""The CLI's contract: --help, unknown commands, exit codes, one-line errors."""

from __future__ import annotations

import pytest

from nixwarden import cli, errors


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in cli.COMMANDS:
        assert command in out


def test_no_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["frobnicate"]) == 2
    assert "nixwarden: error: unknown command 'frobnicate'" in capsys.readouterr().err


def test_debug_flag_is_removed_before_the_command() -> None:
    assert cli._split_debug(["--debug", "audit", "-x"]) == (True, ["audit", "-x"])
    assert cli._split_debug(["confine", "run", "--", "--debug"]) == (
        False,
        ["confine", "run", "--", "--debug"],
    )


def test_cli_exit_codes_are_the_error_hierarchys() -> None:
    # cli names them itself so that importing it does not import the error classes.
    assert (cli.EXIT_REFUSED, cli.EXIT_USAGE) == (errors.EXIT_REFUSED, errors.EXIT_USAGE)
