"""systemd unit files, as far as confinement needs them. Pure.

`parse_unit` follows systemd's syntax (systemd.syntax(7)): `[Section]` headers,
`Key=Value` with surrounding whitespace dropped, `#`/`;` comment lines, and a
backslash at the end of a line continuing it on the next (comment lines inside a
continuation are skipped). An empty assignment (`ExecStart=`) resets a list.

`parse_exec` splits one `Exec*=` value the way systemd.service(5) describes: optional
prefixes (`@`, `-`, `:`, `+`, `!`, `!!`, `|`), words with single or double quotes and
C-style escapes, and `;` as a word of its own separating several command lines
(`\\;` is a literal semicolon).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from nixwarden.errors import InvalidInput

EXEC_KEYS = (
    "ExecCondition",
    "ExecStartPre",
    "ExecStart",
    "ExecStartPost",
    "ExecReload",
    "ExecStop",
    "ExecStopPost",
)


class ExecPrefix(enum.Enum):
    ARGV0 = "@"  # the second word is argv[0]
    IGNORE_FAILURE = "-"
    NO_SPECIFIERS = ":"
    FULL_PRIVILEGES = "+"  # runs outside the sandbox: RootDirectory= does not apply
    NO_CREDENTIALS = "!"
    AMBIENT = "!!"
    AS_USER = "|"


@dataclass(frozen=True)
class Assignment:
    section: str
    key: str
    value: str
    line: int  # 1-based line of the assignment's first physical line


@dataclass(frozen=True)
class Unit:
    assignments: tuple[Assignment, ...]

    def values(self, section: str, key: str) -> tuple[Assignment, ...]:
        """The effective list for `key` in `section`: an empty value resets it."""
        found: list[Assignment] = []
        for item in self.assignments:
            if item.section == section and item.key == key:
                if item.value == "":
                    found.clear()
                else:
                    found.append(item)
        return tuple(found)

    def last(self, section: str, key: str) -> str | None:
        """The value of a single-valued setting (the last assignment wins)."""
        value: str | None = None
        for item in self.assignments:
            if item.section == section and item.key == key:
                value = item.value
        return value


@dataclass(frozen=True)
class ExecCommand:
    prefixes: frozenset[ExecPrefix]
    argv: tuple[str, ...]  # for ARGV0: (executable, argv0, args…)

    @property
    def executable(self) -> str:
        return self.argv[0]


def parse_unit(text: str, origin: str = "unit") -> Unit:
    assignments: list[Assignment] = []
    section = ""
    pending: list[str] = []
    pending_line = 0
    lines = text.splitlines()
    for number, raw in enumerate(lines, start=1):
        stripped = raw.strip()
        if pending and stripped[:1] in ("#", ";"):
            continue  # a comment inside a continuation
        if raw.endswith("\\") and not raw.endswith("\\\\"):
            if not pending:
                pending_line = number
            pending.append(raw[:-1])
            continue
        if pending:
            pending.append(raw)
            stripped = " ".join(pending).strip()
            start = pending_line
            pending = []
        else:
            start = number
        if not stripped or stripped[0] in ("#", ";"):
            continue
        if stripped.startswith("["):
            if not stripped.endswith("]") or len(stripped) < 3:
                raise InvalidInput(f"{origin}:{start}: bad section header {stripped!r}")
            section = stripped[1:-1]
            continue
        key, equals, value = stripped.partition("=")
        key = key.strip()
        if not equals or not key:
            raise InvalidInput(f"{origin}:{start}: expected Key=Value, got {stripped!r}")
        if not section:
            raise InvalidInput(f"{origin}:{start}: assignment {key}= outside any section")
        assignments.append(Assignment(section, key, value.strip(), start))
    if pending:
        # systemd accepts a continuation at the end of the file as the last line.
        stripped = " ".join(pending).strip()
        key, equals, value = stripped.partition("=")
        if stripped and equals and section:
            assignments.append(Assignment(section, key.strip(), value.strip(), pending_line))
    return Unit(tuple(assignments))


_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
    "s": " ",
    ";": ";",
    " ": " ",
}


def _unescape(text: str, index: int, where: str) -> tuple[str, int]:
    """Decode the escape at text[index] (just after the backslash); return (char, next)."""
    if index >= len(text):
        raise InvalidInput(f"{where}: a backslash ends the command line")
    char = text[index]
    if char in _ESCAPES:
        return _ESCAPES[char], index + 1
    if char == "x":
        digits = text[index + 1 : index + 3]
        if len(digits) == 2 and all(c in "0123456789abcdefABCDEF" for c in digits):
            return chr(int(digits, 16)), index + 3
    if char in "01234567":
        digits = text[index : index + 3]
        if len(digits) == 3 and all(c in "01234567" for c in digits):
            return chr(int(digits, 8)), index + 3
    if char in "uU":
        size = 4 if char == "u" else 8
        digits = text[index + 1 : index + 1 + size]
        if len(digits) == size and all(c in "0123456789abcdefABCDEF" for c in digits):
            code = int(digits, 16)
            if code <= 0x10FFFF:
                return chr(code), index + 1 + size
    raise InvalidInput(f"{where}: bad escape '\\{char}'")


def split_words(value: str, where: str = "Exec") -> list[tuple[str, bool]]:
    """Split into (word, was_quoted_or_escaped) pairs; quotes may be parts of a word."""
    words: list[tuple[str, bool]] = []
    index = 0
    length = len(value)
    while True:
        while index < length and value[index] in " \t\n":
            index += 1
        if index >= length:
            return words
        word: list[str] = []
        literal = False
        while index < length and value[index] not in " \t\n":
            char = value[index]
            if char in ("'", '"'):
                literal = True
                end = index + 1
                while True:
                    if end >= length:
                        raise InvalidInput(f"{where}: unterminated {char} quote")
                    if value[end] == char:
                        break
                    if value[end] == "\\":
                        decoded, end = _unescape(value, end + 1, where)
                        word.append(decoded)
                        continue
                    word.append(value[end])
                    end += 1
                index = end + 1
            elif char == "\\":
                literal = True
                decoded, index = _unescape(value, index + 1, where)
                word.append(decoded)
            else:
                word.append(char)
                index += 1
        words.append(("".join(word), literal))


def parse_exec(value: str, where: str = "Exec") -> tuple[ExecCommand, ...]:
    """One `Exec*=` value → its command lines (several when separated by `;`)."""
    commands: list[ExecCommand] = []
    current: list[tuple[str, bool]] = []
    for word, literal in split_words(value, where):
        if word == ";" and not literal:
            if current:
                commands.append(_command(current, where))
            current = []
            continue
        current.append((word, literal))
    if current:
        commands.append(_command(current, where))
    return tuple(commands)


def _command(words: list[tuple[str, bool]], where: str) -> ExecCommand:
    first, literal = words[0]
    prefixes: set[ExecPrefix] = set()
    index = 0
    if not literal:
        while index < len(first):
            if first.startswith("!!", index):
                prefix = ExecPrefix.AMBIENT
            else:
                try:
                    prefix = ExecPrefix(first[index])
                except ValueError:
                    break
            if prefix in prefixes:
                raise InvalidInput(f"{where}: prefix {prefix.value!r} given twice")
            prefixes.add(prefix)
            index += len(prefix.value)
    executable = first[index:]
    rest = [word for word, _ in words[1:]]
    if not executable:
        if not rest:
            raise InvalidInput(f"{where}: prefixes without a command")
        raise InvalidInput(f"{where}: a space between the prefixes and the command")
    if ExecPrefix.ARGV0 in prefixes and not rest:
        raise InvalidInput(f"{where}: '@' needs the executable and argv[0]")
    exclusive = {ExecPrefix.FULL_PRIVILEGES, ExecPrefix.NO_CREDENTIALS, ExecPrefix.AMBIENT}
    if len(prefixes & exclusive) > 1:
        raise InvalidInput(f"{where}: '+', '!' and '!!' exclude each other")
    return ExecCommand(frozenset(prefixes), (executable, *rest))
