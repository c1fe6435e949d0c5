"""The machines file and the `builders` setting, as Nix reads them (src/libstore/machines.cc).

Entries are separated by newlines and `;`; `#` starts a comment; a line `@FILE` reads
another machines file (a missing one is skipped). Columns, whitespace-separated, `-` or
absent meaning the default: 1 store URI (no scheme: `ssh://`), 2 systems, 3 SSH identity
file, 4 max jobs, 5 speed factor, 6 supported features, 7 mandatory features, 8 the
base64 of the builder's public host key line (empty: root's known_hosts decides).
Pure: `@file` goes through the injected reader; nothing raises on bad input. Bounded:
256 files and 20,000 entries in all; what a bound stops comes back as a `Cut`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from nixwarden.audit.model import Bound, Cut, CutKind, LimitReached
from nixwarden.sshkeys import KEY_TYPES, key_data_problem

Reader = Callable[[str], bytes]
Identify = Callable[[str], str]
MAX_DEPTH = 16
MAX_FILES = 256
MAX_ENTRIES = 20_000


@dataclass(frozen=True)
class Machine:
    uri: str
    scheme: str
    user: str | None
    host: str
    identity_file: str | None
    host_key: str | None
    file: str
    line: int
    params: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class MachineProblem:
    file: str
    line: int
    detail: str


@dataclass(frozen=True)
class Machines:
    entries: tuple[Machine, ...] = ()
    problems: tuple[MachineProblem, ...] = ()
    files: tuple[str, ...] = ()
    cuts: tuple[Cut, ...] = ()


def check_public_key_line(text: str) -> str | None:
    """None when `text` is `TYPE BASE64 [comment]` of a known type; else what is wrong."""
    parts = text.split()
    if len(parts) < 2:
        return "not a public key line (expected 'TYPE BASE64')"
    key_type, data = parts[0], parts[1]
    if key_type not in KEY_TYPES:
        return f"unknown key type {key_type[:40]!r}"
    return key_data_problem(key_type, data)


def check_host_key_column(column: str) -> str | None:
    """None when the 8th column is base64 of a valid public key line; else what is wrong."""
    try:
        decoded = base64.b64decode(column, validate=True)
    except (binascii.Error, ValueError):
        return "not valid base64"
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        return "does not decode to a public key line"
    return check_public_key_line(text.strip())


def _split_uri(uri: str) -> tuple[str, str | None, str, tuple[tuple[str, str], ...]]:
    full = uri if "://" in uri else f"ssh://{uri}"
    scheme = full.split("://", 1)[0]
    try:
        parts = urlsplit(full)
        params = tuple(parse_qsl(parts.query, keep_blank_values=True))
        netloc = parts.netloc
    except ValueError:
        rest = full.split("://", 1)[1]
        netloc, params = rest.split("/", 1)[0].split("?", 1)[0], ()
    user, _, host = netloc.rpartition("@")
    return scheme, (user or None), host, params


@dataclass
class _State:
    read: Reader
    identify: Identify
    entries: list[Machine] = field(default_factory=list)
    problems: list[MachineProblem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    stack: list[str] = field(default_factory=list)
    cuts: list[Cut] = field(default_factory=list)
    entries_seen: Bound = field(default_factory=lambda: Bound(MAX_ENTRIES, "machines entries"))

    def result(self) -> Machines:
        cuts = [*self.cuts, *([self.entries_seen.cut] if self.entries_seen.cut else [])]
        return Machines(tuple(self.entries), tuple(self.problems), tuple(self.files), tuple(cuts))


def _is_set(tokens: list[str], index: int) -> bool:
    return len(tokens) > index and tokens[index] not in ("", "-")


def _parse(state: _State, text: str, file: str, base_line: int) -> None:
    # Nix splits on both newline and ';'; line numbers count newlines only.
    for offset, physical in enumerate(text.split("\n")):
        number = base_line + offset if base_line else offset + 1
        for entry in physical.split(";"):
            line = entry.strip().split("#", 1)[0].strip()
            if not line:
                continue
            if not state.entries_seen.step(file, number):
                return
            if line.startswith("@"):
                _at_file(state, line[1:].strip(), file, number)
                continue
            _entry(state, line, file, number)


def _entry(state: _State, line: str, file: str, number: int) -> None:
    tokens = line.split()
    for index, what in ((3, "max jobs"), (4, "speed factor")):
        if _is_set(tokens, index):
            try:
                value = float(tokens[index]) if index == 4 else int(tokens[index])
                if value < 0:
                    raise ValueError
            except ValueError:
                state.problems.append(
                    MachineProblem(file, number, f"{what} {tokens[index][:40]!r} is not a number")
                )
    scheme, user, host, params = _split_uri(tokens[0])
    state.entries.append(
        Machine(
            uri=tokens[0],
            scheme=scheme,
            user=user,
            host=host,
            identity_file=tokens[2] if _is_set(tokens, 2) else None,
            host_key=tokens[7] if _is_set(tokens, 7) else None,
            file=file,
            line=number,
            params=params,
        )
    )


def _at_file(state: _State, path: str, file: str, number: int) -> None:
    if not path:
        state.problems.append(MachineProblem(file, number, "'@' without a file name"))
        return
    identity = state.identify(path)
    if identity in state.stack or len(state.stack) >= MAX_DEPTH:
        state.problems.append(MachineProblem(file, number, f"@{path}: include cycle"))
        return
    if len(state.files) >= MAX_FILES:
        detail = f"@{path}: more than {MAX_FILES} machines files: not read"
        state.cuts.append(Cut(CutKind.INPUT, file, number, detail))
        return
    try:
        data = state.read(path)
    except FileNotFoundError:
        return  # Nix skips a missing machines file silently
    except LimitReached:
        return  # the reader recorded what it cut
    except OSError as error:
        state.problems.append(
            MachineProblem(file, number, f"@{path}: cannot read ({error.strerror or error})")
        )
        return
    state.files.append(path)
    state.stack.append(identity)
    try:
        _parse(state, data.decode("utf-8", "replace"), path, 0)
    finally:
        state.stack.pop()


def _identity(name: str) -> str:
    return name


def parse_builders(
    value: str, file: str, line: int, read: Reader, identify: Identify = _identity
) -> Machines:
    """The `builders` setting's value (inline entries and `@file` references)."""
    state = _State(read=read, identify=identify)
    _parse(state, value, file, line)
    return state.result()


def parse(
    data: bytes,
    path: str = "/etc/nix/machines",
    read: Reader | None = None,
    identify: Identify = _identity,
) -> Machines:
    """One machines file's bytes."""

    def no_files(name: str) -> bytes:
        raise FileNotFoundError(name)

    state = _State(read=read or no_files, identify=identify)
    state.files.append(path)
    state.stack.append(identify(path))
    _parse(state, data.decode("utf-8", "replace"), path, 0)
    return state.result()
