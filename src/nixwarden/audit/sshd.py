"""sshd_config as sshd evaluates it for one user (OpenSSH servconf.c), pure.

- keywords are case-insensitive; `Keyword value` or `Keyword=value`; a token starting
  with `#` ends the line;
- `Include` takes globs (relative: under /etc/ssh), expanded in sorted order and read in
  place, so a `Match` inside an included file stays in force after it, as in sshd;
- at connection time sshd re-reads the file and applies only lines of `Match` blocks
  whose criteria all match; the first value obtained wins, then falls back to the first
  value among the lines before the first `Match`, then to the compiled-in default.
Criteria about the connection (Address, Host, LocalPort, …) are unknown to an audit:
`effective()` evaluates them both ways so a caller can ask "in some connection" or
"in every connection".
"""

from __future__ import annotations

import fnmatch
import posixpath
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Reader = Callable[[str], bytes]
Globber = Callable[[str], list[str]]
SSHDIR = "/etc/ssh"
MAX_DEPTH = 16  # sshd's READCONF_MAX_DEPTH
MAX_FILES = 256

# OpenSSH 9.x compiled-in defaults for the keywords the audit looks at.
DEFAULTS = {
    "permittty": "yes",
    "allowtcpforwarding": "yes",
    "allowagentforwarding": "yes",
    "allowstreamlocalforwarding": "yes",
    "x11forwarding": "no",
    "permittunnel": "no",
    "disableforwarding": "no",
    "authorizedkeysfile": ".ssh/authorized_keys .ssh/authorized_keys2",
    "permituserrc": "yes",
}


@dataclass(frozen=True)
class Criterion:
    keyword: str  # lower case: user, group, host, address, localaddress, localport, rdomain, all
    patterns: str


@dataclass(frozen=True)
class Line:
    keyword: str  # lower case
    args: tuple[str, ...]
    file: str
    line: int
    match: tuple[Criterion, ...] | None  # None: before any Match (global)
    match_line: tuple[str, int] | None = None


@dataclass(frozen=True)
class SshdProblem:
    file: str
    line: int
    detail: str


@dataclass(frozen=True)
class SshdConfig:
    lines: tuple[Line, ...] = ()
    problems: tuple[SshdProblem, ...] = ()
    files: tuple[str, ...] = ()

    def effective(
        self, user: str, groups: Sequence[str], *, unknown_matches: bool
    ) -> dict[str, Line | None]:
        """keyword → the deciding line (None: compiled-in default) for this user."""
        matched: dict[str, Line] = {}
        global_: dict[str, Line] = {}
        for line in self.lines:
            if line.keyword in ("match", "include"):
                continue
            if line.match is None:
                global_.setdefault(line.keyword, line)
                continue
            applies = match_block(line.match, user, groups)
            if applies is True or (applies is None and unknown_matches):
                matched.setdefault(line.keyword, line)
        result: dict[str, Line | None] = dict(global_)
        result.update(matched)
        return result


def value(decided: dict[str, Line | None], keyword: str) -> tuple[str, Line | None]:
    line = decided.get(keyword)
    if line is None:
        return DEFAULTS.get(keyword, ""), None
    return " ".join(line.args), line


def _match_pattern(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern)


def _match_tri(name: str, patterns: str) -> int:
    """OpenSSH match_pattern_list: -1 a negated pattern matched, 1 a positive one, 0 none."""
    found = 0
    for item in patterns.split(","):
        if not item:
            continue
        if item.startswith("!"):
            if _match_pattern(name, item[1:]):
                return -1
        elif _match_pattern(name, item):
            found = 1
    return found


def match_list(name: str, patterns: str) -> bool:
    return _match_tri(name, patterns) == 1


def match_block(criteria: tuple[Criterion, ...], user: str, groups: Sequence[str]) -> bool | None:
    """True/False when decided by user and groups alone; None when it depends on the connection."""
    result: bool | None = True
    for criterion in criteria:
        match criterion.keyword:
            case "all":
                continue
            case "user":
                if not match_list(user, criterion.patterns):
                    return False
            case "group":
                # ga_match_pattern_list: a negated match on any group wins.
                outcomes = [_match_tri(g, criterion.patterns) for g in groups]
                if -1 in outcomes or 1 not in outcomes:
                    return False
            case _:
                result = None
    return result


def _split(text: str) -> list[str] | None:
    """sshd's argv_split: shell-like quoting, a token starting with # ends the line."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        tokens = list(lexer)
    except ValueError:
        return None
    for index, token in enumerate(tokens):
        if token.startswith("#"):
            return tokens[:index]
    return tokens


@dataclass
class _State:
    read: Reader
    glob: Globber
    lines: list[Line] = field(default_factory=list)
    problems: list[SshdProblem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    match: tuple[Criterion, ...] | None = None
    match_line: tuple[str, int] | None = None
    stack: list[str] = field(default_factory=list)


def _criteria(args: list[str]) -> tuple[Criterion, ...] | None:
    result: list[Criterion] = []
    index = 0
    while index < len(args):
        keyword = args[index].lower()
        if keyword == "all":
            result.append(Criterion("all", ""))
            index += 1
            continue
        if index + 1 >= len(args):
            return None
        result.append(Criterion(keyword, args[index + 1]))
        index += 2
    return tuple(result) if result else None


def _parse(state: _State, text: str, path: str, depth: int) -> None:
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword, _, rest = stripped.replace("\t", " ").partition(" ")
        if "=" in keyword:
            keyword, _, head = keyword.partition("=")
            rest = f"{head} {rest}"
        else:
            rest = rest.lstrip()
            if rest.startswith("="):
                rest = rest[1:]
        args = _split(rest)
        if args is None or not keyword:
            state.problems.append(SshdProblem(path, number, f"cannot parse: {stripped[:120]}"))
            continue
        key = keyword.lower()
        if key == "match":
            criteria = _criteria(args)
            if criteria is None:
                state.problems.append(SshdProblem(path, number, f"bad Match: {stripped[:120]}"))
                criteria = (Criterion("unparsable", " ".join(args)),)
            state.match = criteria
            state.match_line = (path, number)
            state.lines.append(Line("match", tuple(args), path, number, criteria, state.match_line))
            continue
        if key == "include":
            state.lines.append(Line(key, tuple(args), path, number, state.match, state.match_line))
            for pattern in args:
                _include(state, pattern, path, number, depth)
            continue
        state.lines.append(Line(key, tuple(args), path, number, state.match, state.match_line))


def _include(state: _State, pattern: str, path: str, number: int, depth: int) -> None:
    full = pattern if pattern.startswith("/") else posixpath.join(SSHDIR, pattern)
    if depth >= MAX_DEPTH:
        state.problems.append(SshdProblem(path, number, f"Include {pattern}: too deep"))
        return
    for target in sorted(state.glob(full)):
        if target in state.stack:
            state.problems.append(SshdProblem(path, number, f"Include {target}: include cycle"))
            continue
        if len(state.files) >= MAX_FILES:
            state.problems.append(SshdProblem(path, number, f"Include {target}: too many files"))
            return
        try:
            data = state.read(target)
        except OSError as error:
            state.problems.append(
                SshdProblem(path, number, f"Include {target}: {error.strerror or error}")
            )
            continue
        state.files.append(target)
        state.stack.append(target)
        try:
            _parse(state, data.decode("utf-8", "replace"), target, depth + 1)
        finally:
            state.stack.pop()


def parse(
    data: bytes,
    path: str = "/etc/ssh/sshd_config",
    read: Reader | None = None,
    glob: Globber | None = None,
) -> SshdConfig:
    def no_files(name: str) -> bytes:
        raise FileNotFoundError(name)

    def literal(pattern: str) -> list[str]:
        return [] if any(c in pattern for c in "*?[") else [pattern]

    state = _State(read=read or no_files, glob=glob or literal)
    state.files.append(path)
    state.stack.append(path)
    _parse(state, data.decode("utf-8", "replace"), path, 0)
    return SshdConfig(tuple(state.lines), tuple(state.problems), tuple(state.files))
