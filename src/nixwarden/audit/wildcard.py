"""Wildcard matching as sshd and glob(3) do it, in O(len(name) * len(pattern)) time, pure.

Two dialects:
- sshd's `match_pattern` (OpenSSH match.c), used by `Match User/Group`: only `*` and
  `?` are special; `[` is an ordinary character. A sub-pattern of 1,023 characters or
  more makes `match_pattern_list` fail, as OpenSSH's fixed buffer does.
- glob(3) without flags, one path component at a time, used by sshd's `Include`: `*`,
  `?`, bracket expressions (`[a-z]`, `[!x]`, `[^x]`, `]` first is literal), a backslash
  escapes the next character, and a leading `.` in a name must be matched by a literal
  `.` in the pattern.

Every token but `*` matches exactly one character, so the classic greedy matcher with a
single backtracking point is exact and never exponential (fnmatch's regular
expressions can be, on patterns such as `*a*a*a*a*b`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

# A token: a literal character (str of length 1), ANY (`?`), STAR (`*`), or a bracket
# expression: (negated, characters, ranges).
ANY = 1
STAR = 2
Bracket = tuple[bool, frozenset[str], tuple[tuple[str, str], ...]]
Token = str | int | Bracket
SSHD_SUBPATTERN_MAX = 1023


def _one(token: Token, char: str) -> bool:
    if isinstance(token, str):
        return token == char
    if token == ANY:
        return True
    assert isinstance(token, tuple)
    negated, chars, ranges = token
    inside = char in chars or any(low <= char <= high for low, high in ranges)
    return inside != negated


def match_tokens(tokens: list[Token], name: str) -> bool:
    """Whether `name` matches the whole token list."""
    t = n = 0
    star = -1
    resume = 0
    while n < len(name):
        if t < len(tokens) and tokens[t] == STAR:
            star, resume = t, n
            t += 1
        elif t < len(tokens) and _one(tokens[t], name[n]):
            t += 1
            n += 1
        elif star >= 0:
            t = star + 1
            resume += 1
            n = resume
        else:
            return False
    while t < len(tokens) and tokens[t] == STAR:
        t += 1
    return t == len(tokens)


def _sshd_tokens(pattern: str) -> list[Token]:
    return [STAR if c == "*" else ANY if c == "?" else c for c in pattern]


def sshd_match(name: str, pattern: str) -> bool:
    """OpenSSH match_pattern: `*` and `?` only."""
    if "*" not in pattern and "?" not in pattern:
        return name == pattern
    return match_tokens(_sshd_tokens(pattern), name)


# (negated, the literal name or None, the tokens when it has wildcards)
_Compiled = tuple[tuple[bool, str | None, list[Token] | None], ...]


@lru_cache(maxsize=1 << 16)  # more than the sshd lines the parser keeps
def _sshd_list(patterns: str) -> _Compiled | None:
    """A pattern list split and compiled once (None: a sub-pattern too long, no match)."""
    result: list[tuple[bool, str | None, list[Token] | None]] = []
    for item in patterns.split(","):
        if not item:
            continue
        if len(item) >= SSHD_SUBPATTERN_MAX:
            return None
        negated = item.startswith("!")
        body = item[1:] if negated else item
        if "*" in body or "?" in body:
            result.append((negated, None, _sshd_tokens(body)))
        else:
            result.append((negated, body, None))
    return tuple(result)


@lru_cache(maxsize=1 << 16)
def sshd_list_matcher(patterns: str) -> Callable[[str], int]:
    """sshd_match_list for one pattern list, compiled once: plain names become set lookups."""
    compiled = _sshd_list(patterns)
    if compiled is None:
        return lambda name: 0
    if all(tokens is None for _, _, tokens in compiled):
        negative = frozenset(literal for negated, literal, _ in compiled if negated)
        positive = frozenset(literal for negated, literal, _ in compiled if not negated)
        return lambda name: -1 if name in negative else 1 if name in positive else 0

    def matcher(name: str) -> int:
        found = 0
        for negated, literal, tokens in compiled:
            if name == literal if tokens is None else match_tokens(tokens, name):
                if negated:
                    return -1
                found = 1
        return found

    return matcher


def sshd_match_list(name: str, patterns: str) -> int:
    """OpenSSH match_pattern_list: -1 a negated pattern matched, 1 a positive one, 0 none."""
    return sshd_list_matcher(patterns)(name)


def _bracket(pattern: str, start: int) -> tuple[Bracket, int] | None:
    """The bracket expression opening at `start`, and the index after it; None if unclosed."""
    index = start + 1
    negated = index < len(pattern) and pattern[index] in "!^"
    if negated:
        index += 1
    chars: set[str] = set()
    ranges: list[tuple[str, str]] = []
    first = True
    while index < len(pattern):
        char = pattern[index]
        if char == "]" and not first:
            return (negated, frozenset(chars), tuple(ranges)), index + 1
        first = False
        if char == "\\" and index + 1 < len(pattern):
            index += 1
            char = pattern[index]
        if index + 2 < len(pattern) and pattern[index + 1] == "-" and pattern[index + 2] != "]":
            high = pattern[index + 2]
            skip = 3
            if high == "\\" and index + 3 < len(pattern):
                high = pattern[index + 3]
                skip = 4
            ranges.append((char, high))
            index += skip
            continue
        chars.add(char)
        index += 1
    return None


def glob_tokens(component: str) -> list[Token]:
    tokens: list[Token] = []
    index = 0
    while index < len(component):
        char = component[index]
        if char == "*":
            tokens.append(STAR)
        elif char == "?":
            tokens.append(ANY)
        elif char == "\\" and index + 1 < len(component):
            index += 1
            tokens.append(component[index])
        elif char == "[" and (parsed := _bracket(component, index)) is not None:
            tokens.append(parsed[0])
            index = parsed[1]
            continue
        else:
            tokens.append(char)
        index += 1
    return tokens


def has_magic(component: str) -> bool:
    """Whether a glob component matches anything but one literal name."""
    return any(not isinstance(token, str) for token in glob_tokens(component))


def unescape(component: str) -> str:
    """A glob component without magic, as the literal name it stands for."""
    return "".join(t for t in glob_tokens(component) if isinstance(t, str))


def glob_matcher(component: str) -> Callable[[str], bool]:
    """A predicate for names in one directory, as glob(3) matches them (no GLOB_PERIOD)."""
    tokens = glob_tokens(component)
    explicit_dot = bool(tokens) and tokens[0] == "."

    def matches(name: str) -> bool:
        if name.startswith(".") and not explicit_dot:
            return False
        return match_tokens(tokens, name)

    return matches
