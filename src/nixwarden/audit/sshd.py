"""sshd_config as sshd evaluates it for one user (OpenSSH servconf.c), pure.

- lines end at `\\n`; keywords are case-insensitive; `Keyword value` or `Keyword=value`;
  arguments are split as OpenSSH's argv_split does (quotes, backslash escapes, a token
  starting with `#` ends the line), in one linear pass however long a token is;
- `Include` takes globs (relative: under /etc/ssh), expanded in sorted order and read in
  place, so a `Match` inside an included file stays in force after it, as in sshd; an
  include cycle is found by file identity, so a link to the same file is still a cycle;
- at connection time sshd re-reads the file and applies only lines of `Match` blocks
  whose criteria all match; the first value obtained wins, then falls back to the first
  value among the lines before the first `Match`, then to the compiled-in default.
Criteria about the connection (Address, Host, LocalPort, …) are unknown to an audit:
`effective()` evaluates them both ways so a caller can ask "in some connection" or
"in every connection".

Bounded: 20,000 keyword lines, 1,024 `Include` lines and 256 included files in all
(sshd's own depth limit of 16 stays a problem, as sshd refuses such a file); what a
bound stops, and what a glob bound cut, comes back as a `Cut`.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from nixwarden.audit.model import Bound, Cut, CutKind, GlobResult, LimitReached
from nixwarden.audit.wildcard import sshd_match_list

Reader = Callable[[str], bytes]
Globber = Callable[[str], GlobResult]
Identify = Callable[[str], str]
SSHDIR = "/etc/ssh"
MAX_DEPTH = 16  # sshd's READCONF_MAX_DEPTH
MAX_FILES = 256
MAX_LINES = 20_000
MAX_INCLUDES = 1_024
MAX_BYTES = 8 << 20  # of configuration text, all files together
MAX_PIECES = 200_000  # tokens and quoted strings, all lines together
MAX_EVALUATIONS = 500_000  # Match blocks evaluated for a user, all users together

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


# keyword → (the first global line, then every line inside a Match block, in order)
_Index = dict[str, tuple[Line | None, tuple[Line, ...]]]


@dataclass(frozen=True)
class SshdConfig:
    lines: tuple[Line, ...] = ()
    problems: tuple[SshdProblem, ...] = ()
    files: tuple[str, ...] = ()
    cuts: tuple[Cut, ...] = ()

    @cached_property
    def _index(self) -> _Index:
        global_: dict[str, Line] = {}
        matched: dict[str, list[Line]] = {}
        for line in self.lines:
            if line.keyword in ("match", "include"):
                continue
            if line.match is None:
                global_.setdefault(line.keyword, line)
            else:
                matched.setdefault(line.keyword, []).append(line)
        return {
            keyword: (global_.get(keyword), tuple(matched.get(keyword, ())))
            for keyword in global_.keys() | matched.keys()
        }

    @cached_property
    def _evaluations(self) -> list[int]:
        """How many Match blocks were evaluated for a user (a mutable cell in a frozen value):
        the audit asks for every user, so users times blocks is bounded by MAX_EVALUATIONS."""
        return [0]

    @property
    def evaluations_exhausted(self) -> bool:
        """Whether some Match block was left unevaluated (then counted as either way)."""
        return self._evaluations[0] > MAX_EVALUATIONS

    def applies(
        self, criteria: tuple[Criterion, ...], user: str, groups: Sequence[str]
    ) -> bool | None:
        """match_block, counted: past MAX_EVALUATIONS a block is undecided, like a connection
        criterion (it counts for "in some connection", not for "in every connection")."""
        self._evaluations[0] += 1
        if self._evaluations[0] > MAX_EVALUATIONS:
            return None
        return match_block(criteria, user, groups)

    def decide(
        self,
        keyword: str,
        user: str,
        groups: Sequence[str],
        *,
        unknown_matches: bool,
        memo: dict[int, bool | None] | None = None,
    ) -> Line | None:
        """The line that decides `keyword` for this user (None: compiled-in default)."""
        global_, matched = self._index.get(keyword, (None, ()))
        memo = {} if memo is None else memo
        for line in matched:
            assert line.match is not None
            if self._evaluations[0] >= MAX_EVALUATIONS:
                # Every block visited counts: past the bound the rest are undecided.
                self._evaluations[0] += 1
                return line if unknown_matches else global_
            key = id(line.match)  # one tuple per Match line, shared by its block
            if key in memo:
                self._evaluations[0] += 1
                applies = memo[key]
            else:
                applies = memo[key] = self.applies(line.match, user, groups)
            if applies is True or (applies is None and unknown_matches):
                return line
        return global_

    def effective(
        self, user: str, groups: Sequence[str], *, unknown_matches: bool
    ) -> dict[str, Line | None]:
        """keyword → the deciding line (None: compiled-in default) for this user."""
        memo: dict[int, bool | None] = {}
        result: dict[str, Line | None] = {}
        for keyword in self._index:
            line = self.decide(keyword, user, groups, unknown_matches=unknown_matches, memo=memo)
            if line is not None:
                result[keyword] = line
        return result


def value(decided: dict[str, Line | None], keyword: str) -> tuple[str, Line | None]:
    line = decided.get(keyword)
    if line is None:
        return DEFAULTS.get(keyword, ""), None
    return " ".join(line.args), line


def match_list(name: str, patterns: str) -> bool:
    return sshd_match_list(name, patterns) == 1


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
                outcomes = [sshd_match_list(g, criterion.patterns) for g in groups]
                if -1 in outcomes or 1 not in outcomes:
                    return False
            case _:
                result = None
    return result


# argv_split, as regular expressions: a token is a run of ordinary characters, escapes
# and quoted strings, up to a blank. OpenSSH recognises the escapes `\\`, `\'`, `\"`
# and, outside quotes, `\ `; any other backslash stays as it is. Each alternative is
# unambiguous (a backslash is an escape exactly when a recognised character follows),
# so a failing match backtracks over each character once: linear, whatever the input.
_OUTSIDE = r"""[^ \t\\'"]*(?:\\(?:[\\'" ]|(?![\\'" ]))[^ \t\\'"]*)*"""
_DOUBLE = r"""[^\\"]*(?:\\(?:[\\'"]|(?![\\'"]))[^\\"]*)*"""
_SINGLE = r"""[^\\']*(?:\\(?:[\\'"]|(?![\\'"]))[^\\']*)*"""
_SEGMENT = re.compile(rf""""({_DOUBLE})"|'({_SINGLE})'|({_OUTSIDE})""")
_BLANKS = re.compile(r"[ \t]*")
_ESCAPE_OUTSIDE = re.compile(r"""\\([\\'" ])""")
_ESCAPE_INSIDE = re.compile(r"""\\([\\'"])""")
_KEYWORD = re.compile(r"([^ \t\r\n=]*)[ \t\r\n]*(=[ \t\r\n]*)?")


def _unescape(text: str, escape: re.Pattern[str]) -> str:
    # split() keeps the escaped character (the group) and drops the backslash.
    return "".join(escape.split(text)) if "\\" in text else text


class _TooManyPieces(Exception):
    """A line would take the parse past MAX_PIECES tokens and quoted strings."""


_PLAIN_COMMENT = re.compile(r"(?:^|[ \t])#")
_BLANK_RUN = re.compile(r"[ \t]+")


def _split(text: str, limit: int = 1 << 62) -> tuple[list[str] | None, int]:
    """OpenSSH argv_split(…, terminate_on_comment=1): the tokens (None for an unterminated
    quote) and how many pieces they took; raises _TooManyPieces past `limit` of them.

    Linear in the length of `text`: each match consumes a whole unquoted run or quoted
    string, and every alternative is unambiguous (a backslash is an escape exactly when
    a recognised character follows), so no match backtracks more than its own length.
    """
    if "\\" not in text and '"' not in text and "'" not in text:
        comment = _PLAIN_COMMENT.search(text)
        kept = (text[: comment.start()] if comment else text).strip(" \t")
        plain = _BLANK_RUN.split(kept) if kept else []
        if len(plain) > limit:
            raise _TooManyPieces
        return plain, len(plain)
    tokens: list[str] = []
    position = 0
    end = len(text)
    pieces = 0
    while True:
        blanks = _BLANKS.match(text, position)
        assert blanks is not None
        position = blanks.end()
        if position >= end or text[position] == "#":
            return tokens, pieces
        parts: list[str] = []
        while position < end and text[position] not in " \t":
            segment = _SEGMENT.match(text, position)
            if segment is None or segment.end() == position:
                return None, pieces  # a quote that never closes
            pieces += 1
            if pieces > limit:
                raise _TooManyPieces
            outside = segment.lastindex == 3
            value = segment[segment.lastindex or 0]
            parts.append(_unescape(value, _ESCAPE_OUTSIDE if outside else _ESCAPE_INSIDE))
            position = segment.end()
        tokens.append("".join(parts))


@dataclass
class _State:
    read: Reader
    glob: Globber
    identify: Identify
    lines: list[Line] = field(default_factory=list)
    problems: list[SshdProblem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    cuts: list[Cut] = field(default_factory=list)
    match: tuple[Criterion, ...] | None = None
    match_line: tuple[str, int] | None = None
    stack: list[str] = field(default_factory=list)
    globs: dict[str, GlobResult] = field(default_factory=dict)
    keyword_lines: Bound = field(
        default_factory=lambda: Bound(MAX_LINES, "lines of sshd configuration")
    )
    bytes_left: int = MAX_BYTES
    pieces_left: int = MAX_PIECES
    includes: int = 0
    includes_skipped: int = 0
    files_skipped: int = 0
    stopped: bool = False


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


def _shown(text: str) -> str:
    return text if len(text) <= 120 else text[:120] + "…"


_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{0,39}")


def _keyword_shown(keyword: str) -> str:
    """The keyword, if it looks like one; never a line's content. An `Include` can pull in
    any file (a glob of /etc matches /etc/shadow), and reports are shared, so problems name
    the line, not what is written on it."""
    return repr(keyword) if _NAME.fullmatch(keyword) else "(not a keyword)"


def _stop(state: _State, path: str, number: int, detail: str) -> None:
    state.stopped = True
    state.cuts.append(Cut(CutKind.INPUT, path, number, f"{detail}: the rest was not read"))


def _parse(state: _State, text: str, path: str, depth: int) -> None:
    if len(text) > state.bytes_left:
        _stop(state, path, 0, f"sshd configuration larger than {MAX_BYTES >> 20} MiB in all")
        return
    state.bytes_left -= len(text)
    for number, raw in enumerate(text.split("\n"), start=1):
        if state.stopped:
            return
        stripped = raw.strip(" \t\r\n\f")
        if not stripped or stripped.startswith("#"):
            continue
        if not state.keyword_lines.step(path, number):
            state.stopped = True
            return
        head = _KEYWORD.match(stripped)
        assert head is not None
        keyword, rest = head[1], stripped[head.end() :]
        if not keyword:
            state.problems.append(SshdProblem(path, number, "cannot parse the line"))
            continue
        if not rest:
            state.problems.append(
                SshdProblem(path, number, f"no argument after keyword {_keyword_shown(keyword)}")
            )
            continue
        try:
            args, pieces = _split(rest, state.pieces_left)
        except _TooManyPieces:
            _stop(state, path, number, f"more than {MAX_PIECES} tokens in the sshd configuration")
            return
        state.pieces_left -= pieces
        if args is None:
            state.problems.append(
                SshdProblem(path, number, f"invalid quotes after keyword {_keyword_shown(keyword)}")
            )
            continue
        key = keyword.lower()
        if key == "match":
            criteria = _criteria(args)
            if criteria is None:
                state.problems.append(
                    SshdProblem(
                        path, number, "bad Match: a criterion without its value, or none at all"
                    )
                )
                criteria = (Criterion("unparsable", " ".join(args)),)
            state.match = criteria
            state.match_line = (path, number)
            state.lines.append(Line("match", tuple(args), path, number, criteria, state.match_line))
            continue
        state.lines.append(Line(key, tuple(args), path, number, state.match, state.match_line))
        if key == "include":
            state.includes += 1
            if state.includes > MAX_INCLUDES:
                if state.includes_skipped == 0:
                    state.cuts.append(
                        Cut(
                            CutKind.INPUT,
                            path,
                            number,
                            f"more than {MAX_INCLUDES} Include lines: this one and later ones "
                            "were not followed",
                        )
                    )
                state.includes_skipped += 1
                continue
            for pattern in args:
                _include(state, pattern, path, number, depth)


def _include(state: _State, pattern: str, path: str, number: int, depth: int) -> None:
    full = pattern if pattern.startswith("/") else posixpath.join(SSHDIR, pattern)
    if depth >= MAX_DEPTH:
        state.problems.append(SshdProblem(path, number, f"Include {_shown(pattern)}: too deep"))
        return
    result = state.globs.get(full)
    if result is None:
        result = state.globs[full] = state.glob(full)
    if result.cut:
        state.cuts.append(
            Cut(CutKind.GLOB, path, number, f"Include {_shown(pattern)}: {result.cut}")
        )
    for target in result.paths:
        identity = state.identify(target)
        if identity in state.stack:
            state.problems.append(SshdProblem(path, number, f"Include {target}: include cycle"))
            continue
        if len(state.files) > MAX_FILES:
            if state.files_skipped == 0:
                state.cuts.append(
                    Cut(
                        CutKind.INPUT,
                        path,
                        number,
                        f"Include {target}: more than {MAX_FILES} included files: this one and "
                        "later ones were not read",
                    )
                )
            state.files_skipped += 1
            continue
        try:
            data = state.read(target)
        except LimitReached:
            continue  # the reader recorded what it cut
        except OSError as error:
            state.problems.append(
                SshdProblem(path, number, f"Include {target}: {error.strerror or error}")
            )
            continue
        state.files.append(target)
        state.stack.append(identity)
        try:
            _parse(state, data.decode("utf-8", "replace"), target, depth + 1)
        finally:
            state.stack.pop()


def _counted(cuts: list[Cut], state: _State) -> tuple[Cut, ...]:
    result = []
    for cut in cuts:
        more = 0
        if "Include lines" in cut.detail:
            more = state.includes_skipped - 1
        elif "included files" in cut.detail:
            more = state.files_skipped - 1
        detail = f"{cut.detail} ({more} more)" if more > 0 else cut.detail
        result.append(Cut(cut.kind, cut.file, cut.line, detail))
    return tuple(result)


def parse(
    data: bytes,
    path: str = "/etc/ssh/sshd_config",
    read: Reader | None = None,
    glob: Globber | None = None,
    identify: Identify | None = None,
) -> SshdConfig:
    def no_files(name: str) -> bytes:
        raise FileNotFoundError(name)

    def literal(pattern: str) -> GlobResult:
        return GlobResult(() if any(c in pattern for c in "*?[") else (pattern,))

    state = _State(
        read=read or no_files, glob=glob or literal, identify=identify or (lambda name: name)
    )
    state.files.append(path)
    state.stack.append(state.identify(path))
    _parse(state, data.decode("utf-8", "replace"), path, 0)
    cuts = [*state.cuts, *([state.keyword_lines.cut] if state.keyword_lines.cut else [])]
    return SshdConfig(
        tuple(state.lines), tuple(state.problems), tuple(state.files), _counted(cuts, state)
    )
