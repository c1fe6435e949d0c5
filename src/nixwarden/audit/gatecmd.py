"""Recognise a command that runs nixwarden's gate, in every form the project writes, pure.

sshd runs an authorized_keys `command=` (or a `ForceCommand`) through the user's
shell, so the command is split into words as a POSIX shell would, and then must be one
of:

    [PYTHON [interpreter options]] …/nixwarden-gate ARGS   (authorized-keys-line's form)
    [PYTHON [interpreter options]] …/nixwarden gate ARGS   (its fallback, and the docs')

where PYTHON is any `python`, `python3`, `python3.11`… and `--debug` may appear anywhere
(nixwarden's command line drops it). ARGS are read by the gate's own argument parser, so
a line the gate refuses (no `--principal`, an unknown or repeated argument) is known as
such. Shell syntax around the gate (`;`, `&&`, `|`, `$(…)`, backquotes, redirections)
means the key runs more than the gate; it is reported, not hidden.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from functools import lru_cache

from nixwarden.defaults import DEFAULT_CONFIG_PATH
from nixwarden.errors import UsageError
from nixwarden.gate.cli import _parse_gate_args  # the gate's own parser: read lines as it does

_PYTHON = re.compile(r"python[0-9.]*")
_FLAG_OPTIONS = re.compile(r"-[bBdEhiIOqsSuvRP]+")  # interpreter flags that take no value
_VALUE_OPTIONS = ("-X", "-W")
# POSIX shell words: runs of ordinary characters, backslash escapes, single-quoted
# strings and double-quoted strings without substitutions. Whatever else appears
# unquoted (; & | < > ( ) $ ` or a newline) is shell syntax.
_PIECE = re.compile(
    r"""([^ \t\n;&|<>()$`\\"']+)|\\(.)|'([^']*)'|"((?:[^"\\$`]|\\.)*)"|([ \t]+)""", re.DOTALL
)
_DOUBLE_ESCAPE = re.compile(r"""\\([$`"\\\n])""")


@dataclass(frozen=True)
class GateCommand:
    """A command that runs the gate: what it asks for, and what is wrong with it."""

    principal: str | None  # None when the gate refuses its arguments
    config: str | None  # --config as written; None: the gate's default
    problem: str | None = None  # why the gate refuses every connection this way
    shell: str | None = None  # shell syntax around the gate: the key can run more than it


def shell_words(command: str) -> tuple[list[str], str | None]:
    """The words a POSIX shell would run, and the first shell-syntax character, if any.

    A `#` that starts a word begins a comment. Linear: one regular-expression match per
    piece."""
    words: list[str] = []
    current: list[str] | None = None
    position = 0
    while position < len(command):
        if current is None and command[position] == "#":
            break
        piece = _PIECE.match(command, position)
        if piece is None:
            if current is not None:
                words.append("".join(current))
            return words, command[position]
        position = piece.end()
        match piece.lastindex:
            case 5:
                if current is not None:
                    words.append("".join(current))
                current = None
                continue
            case 4:
                text = _DOUBLE_ESCAPE.sub(r"\1", piece[4])
            case index:
                text = piece[index or 0]
        if current is None:
            current = [text]
        else:
            current.append(text)
    if current is not None:
        words.append("".join(current))
    return words, None


def _program(words: list[str]) -> list[str] | None:
    """The gate's arguments (what follows `gate`), or None when this is not the gate."""
    if not words:
        return None
    index = 0
    if _PYTHON.fullmatch(posixpath.basename(words[0])):
        index = 1
        while index < len(words) and words[index].startswith("-"):
            if words[index] in _VALUE_OPTIONS:
                index += 2
            elif words[index] == "--":
                index += 1
                break
            elif _FLAG_OPTIONS.fullmatch(words[index]):
                index += 1
            else:
                return None  # -c, -m or anything else: not a script we know
        if index >= len(words):
            return None
    name = posixpath.basename(words[index])
    rest = words[index + 1 :]
    # nixwarden's command line drops --debug wherever it appears before `--`.
    if "--" in rest:
        cut = rest.index("--")
        rest = [word for word in rest[:cut] if word != "--debug"] + rest[cut:]
    else:
        rest = [word for word in rest if word != "--debug"]
    if name == "nixwarden-gate":
        return rest
    if name == "nixwarden" and rest[:1] == ["gate"]:
        return rest[1:]
    return None


@lru_cache(maxsize=4096)
def parse(command: str) -> GateCommand | None:
    """The gate invocation in `command`, or None when it does not run the gate."""
    words, shell = shell_words(command)
    arguments = _program(words)
    if arguments is None:
        return None
    if shell is not None and shell in "'\"\\":
        return GateCommand(None, None, "an unterminated quote: the shell runs nothing", None)
    if arguments[:1] == ["--compile"]:
        return GateCommand(None, None, "runs `gate --compile`, not the gate", shell)
    try:
        parsed = _parse_gate_args(arguments)
    except UsageError as error:
        return GateCommand(None, None, str(error).removeprefix("nixwarden gate: "), shell)
    if parsed is None:
        return GateCommand(None, None, "--help: prints the usage and serves nothing", shell)
    principal, config, check, _ = parsed
    if check is not None:
        return GateCommand(principal, config, "runs `gate --check`, not the gate", shell)
    return GateCommand(principal, config, None, shell)


def config_path(gate: GateCommand, home: str) -> str:
    """The configuration the gate reads for this line: its --config (relative to the home,
    where sshd starts the command), else the default; never $NIXWARDEN_CONFIG, which the
    live gate ignores."""
    if gate.config is None:
        return DEFAULT_CONFIG_PATH
    return posixpath.normpath(posixpath.join(home or "/", gate.config))
