"""nix.conf as Nix reads it: pure, with the file reader injected.

Semantics follow Nix's `AbstractConfig::applyConfig` (src/libutil/config.cc):
- a line ends at `\\n`; `#` starts a comment anywhere on the line;
- tokens are separated by space, tab, CR or LF; a setting is exactly `name = value…`
  (`name=value` without spaces is an illegal line, and Nix refuses the whole file);
- `include PATH` / `!include PATH` (exactly one argument; relative to the including
  file's directory) are read *when the line is reached*, so an included file's settings
  take effect before the including file's own settings;
- an include that exists but cannot be read is silently skipped; a missing `include` is
  an error, a missing `!include` is ignored; Nix has no cycle detection (it recurses
  until it crashes), so cycles are reported and broken here;
- within one file `experimental-features` settings are applied first;
- `extra-NAME` appends to a list setting; a later plain `NAME` replaces everything before;
- unknown settings are kept (Nix warns about them and passes them on).
Nothing here raises on bad input: problems are returned as values. Bounded: 256
files and 20,000 settings in all; what a bound stops comes back as a `Cut`, and an
include cycle is found by file identity (a link to an including file is a cycle).
"""

from __future__ import annotations

import enum
import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from nixwarden.audit.model import Bound, Cut, CutKind, LimitReached

# Reads a file of the audited system; raises FileNotFoundError when it does not exist
# and another OSError when it exists but cannot be read.
Reader = Callable[[str], bytes]
# A name for the file a path leads to (the audit resolves links), for cycle detection.
Identify = Callable[[str], str]

MAX_INCLUDE_DEPTH = 32
MAX_FILES = 256
MAX_SETTINGS = 20_000  # non-empty lines, all files together
_SEPARATORS = re.compile(r"[ \t\r\n]+")

# Settings whose values are lists (Nix: Strings/StringSet/StringMap/feature sets): the only
# ones `extra-` may append to. Names as of Nix 2.3-2.34 and Lix 2.90-2.94.
LIST_SETTINGS = frozenset(
    {
        "access-tokens",
        "allowed-impure-host-deps",
        "allowed-uris",
        "allowed-users",
        "build-hook",
        "deprecated-features",
        "experimental-features",
        "extra-platforms",
        "hashed-mirrors",
        "ignored-acls",
        "impure-env",
        "nix-path",
        "plugin-files",
        "sandbox-paths",
        "secret-key-files",
        "substituters",
        "system-features",
        "trusted-public-keys",
        "trusted-substituters",
        "trusted-users",
    }
)

# Old names Nix still accepts for a setting.
ALIASES = {
    "binary-caches": "substituters",
    "binary-cache-public-keys": "trusted-public-keys",
    "trusted-binary-caches": "trusted-substituters",
    "build-use-sandbox": "sandbox",
    "build-use-chroot": "sandbox",
    "build-chroot-dirs": "sandbox-paths",
    "build-sandbox-paths": "sandbox-paths",
    "build-max-jobs": "max-jobs",
    "build-cores": "cores",
    "build-max-silent-time": "max-silent-time",
    "build-timeout": "timeout",
    "build-max-log-size": "max-build-log-size",
    "build-keep-log": "keep-build-log",
    "build-compress-log": "compress-build-log",
    "build-fallback": "fallback",
    "build-use-substitutes": "substitute",
    "use-binary-caches": "substitute",
    "build-repeat": "repeat",
    "gc-keep-outputs": "keep-outputs",
    "gc-keep-derivations": "keep-derivations",
    "env-keep-derivations": "keep-env-derivations",
    "build-extra-chroot-dirs": "extra-sandbox-paths",
    "build-extra-sandbox-paths": "extra-sandbox-paths",
}

_SCALAR_SETTINGS = frozenset(
    {
        "abort-on-warn",
        "accept-flake-config",
        "allow-dirty",
        "allow-dirty-locks",
        "allow-import-from-derivation",
        "allow-new-privileges",
        "allow-symlinked-store",
        "allow-unsafe-native-code-during-evaluation",
        "always-allow-substitutes",
        "auto-allocate-uids",
        "auto-optimise-store",
        "bash-prompt",
        "bash-prompt-prefix",
        "bash-prompt-suffix",
        "build-dir",
        "build-poll-interval",
        "build-users-group",
        "builders",
        "builders-use-substitutes",
        "commit-lock-file-summary",
        "commit-lockfile-summary",
        "compress-build-log",
        "connect-timeout",
        "cores",
        "darwin-log-sandbox-violations",
        "debugger-on-trace",
        "debugger-on-warn",
        "diff-hook",
        "download-attempts",
        "download-buffer-size",
        "download-speed",
        "enforce-determinism",
        "eval-cache",
        "eval-system",
        "external-builders",
        "fallback",
        "filter-syscalls",
        "flake-registry",
        "fsync-metadata",
        "fsync-store-paths",
        "gc-reserved-space",
        "http-connections",
        "http2",
        "id-count",
        "ignore-try",
        "impersonate-linux-26",
        "json-log-path",
        "keep-build-log",
        "keep-derivations",
        "keep-env-derivations",
        "keep-failed",
        "keep-going",
        "keep-outputs",
        "lint-absolute-path-literals",
        "lint-short-path-literals",
        "lint-url-literals",
        "log-lines",
        "max-build-log-size",
        "max-call-depth",
        "max-free",
        "max-jobs",
        "max-log-size",
        "max-silent-time",
        "max-substitution-jobs",
        "min-free",
        "min-free-check-interval",
        "nar-buffer-size",
        "narinfo-cache-negative-ttl",
        "narinfo-cache-positive-ttl",
        "netrc-file",
        "nix-shell-always-looks-for-shell-nix",
        "nix-shell-shebang-arguments-relative-to-script",
        "pasta-path",
        "post-build-hook",
        "pre-build-hook",
        "preallocate-contents",
        "print-missing",
        "pure-eval",
        "repeat",
        "repl-overlays",
        "require-drop-supplementary-groups",
        "require-sigs",
        "restrict-eval",
        "run-diff-hook",
        "sandbox",
        "sandbox-build-dir",
        "sandbox-dev-shm-size",
        "sandbox-fallback",
        "show-trace",
        "ssl-cert-file",
        "stalled-download-timeout",
        "start-id",
        "store",
        "substitute",
        "system",
        "tarball-ttl",
        "timeout",
        "trace-function-calls",
        "trace-import-from-derivation",
        "trace-verbose",
        "trust-tarballs-from-git-forges",
        "upgrade-nix-store-path-url",
        "use-case-hack",
        "use-cgroups",
        "use-registries",
        "use-sqlite-wal",
        "use-xdg-base-directories",
        "user-agent-suffix",
        "warn-dirty",
        "warn-large-path-threshold",
    }
)
KNOWN_SETTINGS = LIST_SETTINGS | _SCALAR_SETTINGS

BOOLEAN_SETTINGS = frozenset(
    {
        "accept-flake-config",
        "allow-import-from-derivation",
        "allow-new-privileges",
        "allow-unsafe-native-code-during-evaluation",
        "auto-allocate-uids",
        "builders-use-substitutes",
        "filter-syscalls",
        "pure-eval",
        "require-drop-supplementary-groups",
        "require-sigs",
        "restrict-eval",
        "run-diff-hook",
        "sandbox-fallback",
    }
)
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})


class ProblemKind(enum.Enum):
    ILLEGAL_LINE = "illegal-line"
    BAD_VALUE = "bad-value"
    INCLUDE_MISSING = "include-missing"
    OPTIONAL_INCLUDE_MISSING = "optional-include-missing"
    INCLUDE_UNREADABLE = "include-unreadable"
    INCLUDE_CYCLE = "include-cycle"
    INCLUDE_TOO_DEEP = "include-too-deep"
    UNKNOWN_SETTING = "unknown-setting"


@dataclass(frozen=True)
class Setting:
    """One `name = value` line: `name` is canonical (alias resolved, `extra-` removed)."""

    name: str
    written: str
    value: str
    file: str
    line: int
    append: bool

    @property
    def tokens(self) -> tuple[str, ...]:
        return tuple(t for t in _SEPARATORS.split(self.value) if t)


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    file: str
    line: int
    detail: str
    setting: str | None = None


@dataclass(frozen=True)
class NixConf:
    """The effective configuration: every setting in the order Nix applies it."""

    files: tuple[str, ...] = ()
    settings: tuple[Setting, ...] = ()
    problems: tuple[Problem, ...] = ()
    includes: tuple[tuple[str, str, int], ...] = ()  # (included file, includer, line)
    cuts: tuple[Cut, ...] = ()

    def last(self, name: str) -> Setting | None:
        """The setting that decides a scalar's value (the last one applied)."""
        for setting in reversed(self.settings):
            if setting.name == name and not setting.append:
                return setting
        return None

    def value(self, name: str) -> str | None:
        setting = self.last(name)
        return None if setting is None else setting.value

    def items(self, name: str) -> tuple[tuple[str, Setting], ...]:
        """A list setting's effective elements, each with the line that contributed it."""
        result: list[tuple[str, Setting]] = []
        for setting in self.settings:
            if setting.name != name:
                continue
            if not setting.append:
                result = []
            result.extend((token, setting) for token in setting.tokens)
        return tuple(result)

    def is_set(self, name: str) -> bool:
        return any(s.name == name for s in self.settings)

    def boolean(self, name: str, default: bool) -> tuple[bool, Setting | None]:
        """A boolean's effective value; an invalid value counts as the default (Nix refuses it)."""
        setting = self.last(name)
        if setting is None:
            return default, None
        parsed = parse_bool(setting.value)
        return (default if parsed is None else parsed), setting


def parse_bool(value: str) -> bool | None:
    text = value.strip()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


def valid_value(name: str, value: str) -> bool:
    """Whether Nix accepts the value for the settings whose type the audit relies on."""
    if name in BOOLEAN_SETTINGS:
        return parse_bool(value) is not None
    if name == "sandbox":
        return value in ("true", "false", "relaxed")
    return True


def split_tokens(line: str) -> list[str]:
    return [t for t in _SEPARATORS.split(line) if t]


def canonical(written: str) -> tuple[str, bool, bool]:
    """(canonical name, append, known) for a name as written."""
    if written in ALIASES:
        target = ALIASES[written]
        if target.startswith("extra-"):
            return target[6:], True, True
        return target, False, True
    if written in KNOWN_SETTINGS:
        return written, False, True
    if written.startswith("extra-"):
        base = ALIASES.get(written[6:], written[6:])
        if base in LIST_SETTINGS:
            return base, True, True
    return written, False, False


@dataclass
class _State:
    read: Reader
    identify: Identify
    files: list[str] = field(default_factory=list)
    settings: list[Setting] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    includes: list[tuple[str, str, int]] = field(default_factory=list)
    stack: list[str] = field(default_factory=list)
    cuts: list[Cut] = field(default_factory=list)
    lines: Bound = field(default_factory=lambda: Bound(MAX_SETTINGS, "lines of Nix configuration"))
    files_skipped: int = 0


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _apply_text(state: _State, text: str, path: str) -> None:
    own: list[Setting] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        if state.lines.cut is not None:
            break
        line = raw.split("#", 1)[0]
        tokens = split_tokens(line)
        if not tokens:
            continue
        if not state.lines.step(path, number):
            break
        shown = line.strip()[:120]
        if len(tokens) < 2:
            state.problems.append(Problem(ProblemKind.ILLEGAL_LINE, path, number, shown))
            continue
        if tokens[0] in ("include", "!include"):
            if len(tokens) != 2:
                state.problems.append(Problem(ProblemKind.ILLEGAL_LINE, path, number, shown))
                continue
            target = posixpath.normpath(posixpath.join(posixpath.dirname(path), tokens[1]))
            _include(state, target, path, number, optional=tokens[0] == "!include")
            continue
        if tokens[1] != "=":
            state.problems.append(Problem(ProblemKind.ILLEGAL_LINE, path, number, shown))
            continue
        written = tokens[0]
        name, append, known = canonical(written)
        setting = Setting(name, written, " ".join(tokens[2:]), path, number, append)
        if not known:
            state.problems.append(
                Problem(ProblemKind.UNKNOWN_SETTING, path, number, written, setting=written)
            )
        elif not valid_value(name, setting.value):
            state.problems.append(
                Problem(ProblemKind.BAD_VALUE, path, number, f"{written} = {setting.value}", name)
            )
        own.append(setting)
    own.sort(key=lambda s: s.name != "experimental-features")  # stable: features first
    state.settings.extend(own)


def _include(state: _State, target: str, includer: str, line: int, *, optional: bool) -> None:
    state.includes.append((target, includer, line))
    identity = state.identify(target)
    if identity in state.stack:
        names = state.stack[state.stack.index(identity) :]
        cycle = " → ".join([*names, target])
        state.problems.append(Problem(ProblemKind.INCLUDE_CYCLE, includer, line, cycle))
        return
    if len(state.stack) >= MAX_INCLUDE_DEPTH:
        state.problems.append(Problem(ProblemKind.INCLUDE_TOO_DEEP, includer, line, target))
        return
    if len(state.files) >= MAX_FILES:
        if state.files_skipped == 0:
            detail = f"include {target}: more than {MAX_FILES} files: this one and later ones"
            state.cuts.append(Cut(CutKind.INPUT, includer, line, f"{detail} were not read"))
        state.files_skipped += 1
        return
    try:
        data = state.read(target)
    except FileNotFoundError:
        kind = ProblemKind.OPTIONAL_INCLUDE_MISSING if optional else ProblemKind.INCLUDE_MISSING
        state.problems.append(Problem(kind, includer, line, target))
        return
    except LimitReached:
        return  # the reader recorded what it cut
    except OSError as error:
        reason = error.strerror or str(error)
        state.problems.append(
            Problem(ProblemKind.INCLUDE_UNREADABLE, includer, line, f"{target}: {reason}")
        )
        return
    _apply_file(state, target, data)


def _apply_file(state: _State, path: str, data: bytes) -> None:
    state.files.append(path)
    state.stack.append(state.identify(path))
    try:
        _apply_text(state, _decode(data), path)
    finally:
        state.stack.pop()


def load(
    paths: Sequence[str], read: Reader, identify: Identify | None = None
) -> tuple[NixConf, tuple[str, ...]]:
    """Apply each top-level file in order (later ones override); returns the configuration
    and the top-level files that did not exist (Nix silently skips those)."""
    state = _State(read=read, identify=identify or (lambda name: name))
    missing: list[str] = []
    for path in paths:
        try:
            data = read(path)
        except FileNotFoundError:
            missing.append(path)
            continue
        except LimitReached:
            continue  # the reader recorded what it cut
        except OSError as error:
            state.problems.append(
                Problem(ProblemKind.INCLUDE_UNREADABLE, path, 0, f"{path}: {error.strerror}")
            )
            continue
        _apply_file(state, path, data)
    conf = NixConf(
        files=tuple(dict.fromkeys(state.files)),
        settings=tuple(state.settings),
        problems=tuple(state.problems),
        includes=tuple(state.includes),
        cuts=_counted(state),
    )
    return conf, tuple(missing)


def _counted(state: _State) -> tuple[Cut, ...]:
    more = state.files_skipped - 1
    cuts = [
        Cut(cut.kind, cut.file, cut.line, f"{cut.detail} ({more} more)") if more > 0 else cut
        for cut in state.cuts  # only the file bound is recorded here
    ]
    return (*cuts, *([state.lines.cut] if state.lines.cut else []))


def parse(data: bytes, path: str = "/etc/nix/nix.conf", read: Reader | None = None) -> NixConf:
    """Parse one file's bytes; includes go through `read` (none: every include is missing)."""

    def no_files(name: str) -> bytes:
        raise FileNotFoundError(name)

    files = {path: data}

    def reader(name: str) -> bytes:
        if name in files:
            return files[name]
        return (read or no_files)(name)

    conf, _ = load([path], reader)
    return conf
