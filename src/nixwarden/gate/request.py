"""What the client asked for: `SSH_ORIGINAL_COMMAND` (or one stdin line) parsed, never executed.

The grammar is the handful of command lines Nix and Lix send, nothing more:

    [exec ] PROGRAM ARGS [--store URL]
    PROGRAM  nix-daemon | nix-store | an absolute path ending in /nix-daemon or /nix-store
    ARGS     --stdio                 (after nix-daemon; the ssh-ng protocol)
             --serve [--write]       (after nix-store; the legacy ssh protocol)

Words are separated by spaces. A word is made of plain characters and of the
single-quoted pieces that Nix's `shellEscape` produces (`'…'` and `'\\''`), so a
`--store` URL can be quoted as Nix quotes it. Every other shell character is refused
before anything else is looked at, and so is every control or non-ASCII character,
inside quotes too: a quoted piece holds printable ASCII only. This module is on the
gate's start-up path: it imports nothing but the error types and `display.escape`.
"""

from __future__ import annotations

from nixwarden.display import escape
from nixwarden.errors import Refused

MAX_REQUEST_BYTES = 4096
PROTOCOL_SSH_NG = "ssh-ng"
PROTOCOL_SSH = "ssh"

DAEMON = "nix-daemon"
STORE = "nix-store"

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._/:@%+=,-")
_LINE_MODE_SHELLS = ("", "bash", "sh")


class RequestRefused(Refused):
    """The request is not one the gate understands; the message says why."""


class Request:
    """A parsed, well-formed Nix remote command. Immutable."""

    __slots__ = ("program", "program_path", "protocol", "store", "text", "write")

    program: str  # DAEMON or STORE
    program_path: str | None  # the absolute remote-program the client named, if any
    protocol: str  # PROTOCOL_SSH_NG or PROTOCOL_SSH
    write: bool
    store: str | None  # the --store URL the client asked for, if any
    text: str  # the request as received (decoded)

    def __init__(  # noqa: PLR0917 - one positional per field, like a dataclass
        self,
        program: str,
        program_path: str | None,
        protocol: str,
        write: bool,
        store: str | None,
        text: str,
    ) -> None:
        for name, value in (
            ("program", program),
            ("program_path", program_path),
            ("protocol", protocol),
            ("write", write),
            ("store", store),
            ("text", text),
        ):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Request is immutable: cannot set {name}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Request(program={self.program!r}, program_path={self.program_path!r}, "
            f"protocol={self.protocol!r}, write={self.write!r}, store={self.store!r})"
        )

    def _key(self) -> tuple[object, ...]:
        return (self.program, self.program_path, self.protocol, self.write, self.store, self.text)


def is_line_mode(raw: bytes) -> bool:
    """Lix 2.93 runs `bash` (RemoteCommand) and writes its commands on stdin."""
    return raw.strip(b" ") in (shell.encode() for shell in _LINE_MODE_SHELLS)


def describe(raw: bytes) -> str:
    """The request as text for logs and messages: undecodable bytes kept visible, escaped."""
    return raw.decode("utf-8", "backslashreplace")


def parse(raw: bytes) -> Request:
    """Parse one command line as sent by a Nix or Lix client, or raise `RequestRefused`."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise RequestRefused(
            f"request too long ({len(raw)} bytes; the limit is {MAX_REQUEST_BYTES})"
        )
    if b"\0" in raw:
        raise RequestRefused("request contains a NUL byte")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestRefused("request is not valid UTF-8") from None
    words = _split(text)
    if words and words[0] == "exec":
        words = words[1:]
    if not words:
        raise RequestRefused("empty command")
    program, program_path = _program(words[0])
    args = words[1:]
    store: str | None = None
    if len(args) >= 2 and args[-2] == "--store":
        store = args[-1]
        args = args[:-2]
        if not store:
            raise RequestRefused("--store with an empty URL")
    if "--store" in args:
        raise RequestRefused("--store may appear once, at the end")
    if program == DAEMON:
        if args != ["--stdio"]:
            raise RequestRefused(
                f"nix-daemon is only allowed as 'nix-daemon --stdio', not with {_shown(args)}"
            )
        return Request(program, program_path, PROTOCOL_SSH_NG, False, store, text)
    if args == ["--serve"]:
        write = False
    elif args == ["--serve", "--write"]:
        write = True
    else:
        raise RequestRefused(
            "nix-store is only allowed as 'nix-store --serve [--write]', not with " + _shown(args)
        )
    return Request(program, program_path, PROTOCOL_SSH, write, store, text)


def _shown(args: list[str]) -> str:
    return quoted(" ".join(args)) if args else "no arguments"


def quoted(text: str) -> str:
    """Client text in a message: escaped (one line, nothing hidden), in single quotes."""
    return f"'{escape(text)}'"


def _program(word: str) -> tuple[str, str | None]:
    if word in (DAEMON, STORE):
        return word, None
    if word.startswith("/"):
        base = word.rsplit("/", 1)[1]
        if base in (DAEMON, STORE) and "/../" not in word + "/":
            return base, word
    raise RequestRefused(f"program {quoted(word)} is not nix-daemon or nix-store")


def _split(text: str) -> list[str]:
    """Split on spaces, undoing only Nix's own single-quote escaping; refuse everything else."""
    words: list[str] = []
    current: list[str] = []
    in_word = False
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        if char == " ":
            if in_word:
                words.append("".join(current))
                current = []
                in_word = False
            index += 1
        elif char in _PLAIN:
            current.append(char)
            in_word = True
            index += 1
        elif char == "'":
            end = text.find("'", index + 1)
            if end < 0:
                raise RequestRefused("unterminated quote")
            piece = text[index + 1 : end]
            if not (piece.isascii() and piece.isprintable()):
                bad = next(c for c in piece if not (c.isascii() and c.isprintable()))
                raise RequestRefused(f"character {_char_name(bad)} is not allowed, even quoted")
            current.append(piece)
            in_word = True
            index = end + 1
        elif char == "\\" and text.startswith("\\'", index):
            current.append("'")
            in_word = True
            index += 2
        else:
            raise RequestRefused(f"character {_char_name(char)} is not allowed")
    if in_word:
        words.append("".join(current))
    return words


def _char_name(char: str) -> str:
    """ASCII whatever the character: a name, the character quoted, or its code point."""
    names = {"\n": "newline", "\r": "carriage return", "\t": "tab"}
    if char in names:
        return names[char]
    if char.isascii() and char.isprintable():
        return repr(char)
    return f"U+{ord(char):04X}"
