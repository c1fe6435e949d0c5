"""Unit-file and Exec*= parsing: continuations, comments, quoting, prefixes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nixwarden.confine.unitfile import ExecPrefix, parse_exec, parse_unit, split_words
from nixwarden.errors import InvalidInput

P = ExecPrefix


def test_sections_comments_and_continuations() -> None:
    unit = parse_unit(
        "# a comment\n"
        "[Unit]\n"
        "Description = hello  \n"
        "\n"
        "[Service]\n"
        "; another comment\n"
        "ExecStart=/bin/a \\\n"
        "   --one \\\n"
        "# a comment inside the continuation is skipped\n"
        "   --two\n"
        "Environment=A=1 B=2\n"
    )
    assert unit.last("Unit", "Description") == "hello"
    (start,) = unit.values("Service", "ExecStart")
    assert start.line == 7
    assert split_words(start.value) == [("/bin/a", False), ("--one", False), ("--two", False)]
    assert unit.last("Service", "Environment") == "A=1 B=2"


def test_empty_assignment_resets_a_list() -> None:
    unit = parse_unit("[Service]\nExecStartPre=/a\nExecStartPre=\nExecStartPre=/b\n")
    assert [a.value for a in unit.values("Service", "ExecStartPre")] == ["/b"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Key=value\n", "outside any section"),
        ("[Service]\njust words\n", "expected Key=Value"),
        ("[Service\n", "bad section header"),
    ],
)
def test_bad_unit_files(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_unit(text, "x.service")


@pytest.mark.parametrize(
    ("value", "prefixes", "argv"),
    [
        ("/bin/true", set(), ("/bin/true",)),
        ("-/bin/true", {P.IGNORE_FAILURE}, ("/bin/true",)),
        ("@/bin/x argv0 a", {P.ARGV0}, ("/bin/x", "argv0", "a")),
        ("-@:/bin/x y", {P.IGNORE_FAILURE, P.ARGV0, P.NO_SPECIFIERS}, ("/bin/x", "y")),
        ("+/bin/x", {P.FULL_PRIVILEGES}, ("/bin/x",)),
        ("!/bin/x", {P.NO_CREDENTIALS}, ("/bin/x",)),
        ("!!/bin/x", {P.AMBIENT}, ("/bin/x",)),
        ("-!!/bin/x", {P.IGNORE_FAILURE, P.AMBIENT}, ("/bin/x",)),
        ("|/bin/x", {P.AS_USER}, ("/bin/x",)),
        ("/bin/echo 'a b' \"c d\"", set(), ("/bin/echo", "a b", "c d")),
        ("/bin/echo a\\ b", set(), ("/bin/echo", "a b")),
        ('/bin/echo "x\\"y" \'\\x41\\101\\u00e9\'', set(), ("/bin/echo", 'x"y', "AAé")),
        ("/bin/echo pre'quoted'post", set(), ("/bin/echo", "prequotedpost")),
        ("'-/bin/x'", set(), ("-/bin/x",)),
    ],
)
def test_exec_prefixes_and_quoting(
    value: str, prefixes: set[ExecPrefix], argv: tuple[str, ...]
) -> None:
    (command,) = parse_exec(value)
    assert command.prefixes == frozenset(prefixes)
    assert command.argv == argv


def test_semicolon_separates_commands() -> None:
    commands = parse_exec("/bin/a 1 ; -/bin/b 2 \\; ';'")
    assert [c.argv for c in commands] == [("/bin/a", "1"), ("/bin/b", "2", ";", ";")]
    assert commands[1].prefixes == {P.IGNORE_FAILURE}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("--/bin/x", "given twice"),
        ("+!/bin/x", "exclude each other"),
        ("- /bin/x", "space between"),
        ("@/bin/x", "argv\\[0\\]"),
        ("/bin/x 'open", "unterminated"),
        ("/bin/x \\q", "bad escape"),
        ("/bin/x trailing\\", "backslash ends"),
        ("-", "prefixes without a command"),
    ],
)
def test_bad_exec_lines(value: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_exec(value)


def quote(word: str) -> str:
    """Quote a word the way a unit author could, for the round-trip property."""
    escaped = word.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


words = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=12
)


@given(st.lists(words, min_size=1, max_size=6), st.sets(st.sampled_from(["-", "@", ":", "+"])))
def test_exec_round_trip(argv: list[str], prefixes: set[str]) -> None:
    if "@" in prefixes and len(argv) < 2:
        argv = [*argv, "argv0"]
    executable = "/nix/store/" + "a" * 32 + "-x/bin/x"
    value = "".join(sorted(prefixes)) + executable + "".join(" " + quote(w) for w in argv)
    (command,) = parse_exec(value)
    assert command.argv == (executable, *argv)
    assert {p.value for p in command.prefixes} == prefixes


@given(st.text(max_size=60))
def test_exec_parser_fails_only_with_invalid_input(value: str) -> None:
    try:
        commands = parse_exec(value)
    except InvalidInput:
        return
    for command in commands:
        assert command.argv and command.executable
