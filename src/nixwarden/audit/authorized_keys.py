"""authorized_keys lines as sshd reads them (auth2-pubkeyfile.c, auth-options.c), pure.

The audit reads these files as root from homes their owners control (a symlink to
/etc/shadow is possible), so problem messages never quote the file's content.

A line is `[options] keytype base64 [comment]`. Options are comma-separated, either a
flag (`restrict`, `no-pty`, `pty`, …) or `name="value"` with `\\"` escaping a quote;
names are case-insensitive. sshd ignores a line with an unknown option or a bad key, so
those come back as problems. `restrict` turns every capability off; flags after it
(`pty`, `port-forwarding`, …) turn single ones back on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nixwarden.sshkeys import KEY_TYPES, key_data_problem

CERT_SUFFIX = "-cert-v01@openssh.com"
VALUE_OPTIONS = frozenset(
    {"command", "environment", "expiry-time", "from", "permitlisten", "permitopen", "principals"}
    | {"tunnel"}
)
FLAG_OPTIONS = frozenset(
    {
        "agent-forwarding",
        "cert-authority",
        "no-agent-forwarding",
        "no-port-forwarding",
        "no-pty",
        "no-user-rc",
        "no-x11-forwarding",
        "no-touch-required",
        "port-forwarding",
        "pty",
        "restrict",
        "user-rc",
        "verify-required",
        "x11-forwarding",
    }
)
# Flags that undo part of `restrict` when they come after it.
REOPENING = frozenset({"agent-forwarding", "port-forwarding", "pty", "user-rc", "x11-forwarding"})
MAX_LINE = 16384
MAX_KEYS = 10_000  # lines with content per file; the audit reports the rest as cut


@dataclass(frozen=True)
class AuthorizedKey:
    options: tuple[tuple[str, str | None], ...]
    key_type: str
    key_data: str
    comment: str
    line: int

    def option(self, name: str) -> str | None:
        for key, val in self.options:
            if key == name:
                return val if val is not None else ""
        return None

    def has(self, name: str) -> bool:
        return any(key == name for key, _ in self.options)

    @property
    def restricted(self) -> bool:
        return self.has("restrict")

    @property
    def reopened(self) -> tuple[str, ...]:
        """Capabilities turned back on after `restrict`."""
        seen_restrict = False
        result: list[str] = []
        for key, _ in self.options:
            if key == "restrict":
                seen_restrict = True
            elif seen_restrict and key in REOPENING:
                result.append(key)
        return tuple(result)

    @property
    def command(self) -> str | None:
        return self.option("command")

    @property
    def short(self) -> str:
        data = self.key_data
        tail = f"…{data[-8:]}" if len(data) > 8 else data
        return f"{self.key_type} {tail}" + (f" {self.comment}" if self.comment else "")


@dataclass(frozen=True)
class KeyProblem:
    line: int
    detail: str


def _is_key_type(token: str) -> bool:
    base = token[: -len(CERT_SUFFIX)] if token.endswith(CERT_SUFFIX) else token
    return token in KEY_TYPES or base in KEY_TYPES or f"{base}@openssh.com" in KEY_TYPES


_OPTION_NAME = re.compile(r'[^,=" \t]*')
# A quoted value: `\"` is an escaped quote, any other backslash stays; deterministic (a
# backslash before a quote always escapes it), so a value without its closing quote fails
# in time linear in its length.
_OPTION_VALUE = re.compile(r'="([^"\\]*(?:\\(?:"|(?!"))[^"\\]*)*)"')
_ESCAPED_QUOTE = re.compile(r'\\"')


def _split_options(text: str) -> tuple[list[tuple[str, str | None]], str] | str:
    """Parse the options prefix; returns (options, rest of line) or an error message."""
    options: list[tuple[str, str | None]] = []
    index = 0
    while True:
        named = _OPTION_NAME.match(text, index)
        assert named is not None
        name = named[0].lower()
        index = named.end()
        if not name:
            return "empty option"
        value: str | None = None
        if index < len(text) and text[index] == "=":
            if index + 1 >= len(text) or text[index + 1] != '"':
                return "an option value must be in double quotes"
            quoted = _OPTION_VALUE.match(text, index)
            if quoted is None:
                return "an option value lacks its closing quote"
            value = _ESCAPED_QUOTE.sub('"', quoted[1])
            index = quoted.end()
        if (value is None and name not in FLAG_OPTIONS) or (
            value is not None and name not in VALUE_OPTIONS
        ):
            return "unknown option"
        options.append((name, value))
        if index < len(text) and text[index] == ",":
            index += 1
            continue
        if index >= len(text) or text[index] in " \t":
            return options, text[index:].strip()
        return "unexpected character after an option"


@dataclass(frozen=True)
class KeyList:
    keys: tuple[AuthorizedKey, ...]
    problems: tuple[KeyProblem, ...]
    cut_at: int | None = None  # the first line not read, when the file had more than MAX_KEYS


def parse(data: bytes) -> tuple[tuple[AuthorizedKey, ...], tuple[KeyProblem, ...]]:
    parsed = parse_file(data)
    return parsed.keys, parsed.problems


def parse_file(data: bytes) -> KeyList:
    keys: list[AuthorizedKey] = []
    problems: list[KeyProblem] = []
    seen = 0
    for number, raw in enumerate(data.decode("utf-8", "replace").split("\n"), start=1):
        line = raw.strip(" \t\r")
        if not line or line.startswith("#"):
            continue
        seen += 1
        if seen > MAX_KEYS:
            return KeyList(tuple(keys), tuple(problems), number)
        if len(line) > MAX_LINE:
            problems.append(KeyProblem(number, "line too long; sshd ignores it"))
            continue
        first, _, rest = line.replace("\t", " ").partition(" ")
        options: list[tuple[str, str | None]] = []
        if not _is_key_type(first):
            parsed = _split_options(line)
            if isinstance(parsed, str):
                problems.append(KeyProblem(number, f"{parsed}; sshd ignores this line"))
                continue
            options, rest_of_line = parsed
            first, _, rest = rest_of_line.replace("\t", " ").partition(" ")
            if not _is_key_type(first):
                problems.append(KeyProblem(number, "unknown key type; sshd ignores this line"))
                continue
        data_token, _, comment = rest.strip().partition(" ")
        problem = key_data_problem(first, data_token)
        if problem:
            problems.append(KeyProblem(number, f"{problem}; sshd ignores this line"))
            continue
        keys.append(AuthorizedKey(tuple(options), first, data_token, comment.strip(), number))
    return KeyList(tuple(keys), tuple(problems))
