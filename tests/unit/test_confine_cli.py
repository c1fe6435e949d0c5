"""`nixwarden closure`'s arguments, parsed by hand (argparse costs more than the query)."""

from __future__ import annotations

import pytest

from nixwarden.confine import cli
from nixwarden.errors import UsageError

R = "/nix/store/" + "a" * 32 + "-r"


@pytest.mark.parametrize(
    ("argv", "parsed"),
    [
        ([R], (None, [R])),
        ([R, "./result"], (None, [R, "./result"])),
        (["--db", "/x.sqlite", R], ("/x.sqlite", [R])),
        ([R, "--db=/x.sqlite"], ("/x.sqlite", [R])),
        (["--db", "/a", "--db", "/b", R], ("/b", [R])),
        (["--", "-odd-name", R], (None, ["-odd-name", R])),
        (["-"], (None, ["-"])),
        (["-h"], None),
        ([R, "--help"], None),
    ],
)
def test_closure_arguments(argv: list[str], parsed: tuple[str | None, list[str]] | None) -> None:
    assert cli._closure_arguments(argv) == parsed


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "no ROOT given"),
        (["--db", "/x"], "no ROOT given"),
        ([R, "--db"], "--db needs a FILE"),
        (["--verbose", R], "unknown option '--verbose'"),
        (["-x", R], "unknown option '-x'"),
    ],
)
def test_closure_argument_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        cli._closure_arguments(argv)
    assert "usage: nixwarden closure" in str(caught.value)


def test_closure_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main("closure", ["--help"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("usage: nixwarden closure") and "--db FILE" in shown
