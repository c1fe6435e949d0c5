"""The audit's vocabulary: severities, rules and findings (frozen values, no I/O)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Severity(enum.Enum):
    """How bad a finding is; ordered critical > high > medium > low > info."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        match self:
            case Severity.CRITICAL:
                return 4
            case Severity.HIGH:
                return 3
            case Severity.MEDIUM:
                return 2
            case Severity.LOW:
                return 1
            case Severity.INFO:
                return 0

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank >= other.rank

    @classmethod
    def parse(cls, text: str) -> Severity:
        return cls(text.lower())


# Most severe first: the order reports use.
SEVERITIES = tuple(sorted(Severity, reverse=True))


@dataclass(frozen=True)
class Rule:
    """A check with a stable identifier; `why` is one sentence, `fix` a configuration line."""

    id: str
    severity: Severity
    title: str
    why: str
    fix: str
    family: str

    def finding(
        self,
        *,
        evidence: str,
        file: str | None = None,
        line: int | None = None,
        setting: str | None = None,
        fix: str | None = None,
        severity: Severity | None = None,
        title: str | None = None,
    ) -> Finding:
        return Finding(
            rule=self.id,
            severity=severity or self.severity,
            title=title or self.title,
            file=file,
            line=line if line else None,
            setting=setting,
            evidence=evidence,
            why=self.why,
            fix=fix or self.fix,
        )


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: Severity
    title: str
    file: str | None
    line: int | None
    setting: str | None
    evidence: str
    why: str
    fix: str

    def sort_key(self) -> tuple[int, str, str, int, str]:
        return (-self.severity.rank, self.rule, self.file or "", self.line or 0, self.evidence)


@dataclass(frozen=True)
class FileStat:
    """What the rules need to know about a file: owner, group and mode (with type bits)."""

    path: str
    uid: int
    gid: int
    mode: int

    @property
    def is_dir(self) -> bool:
        return (self.mode & 0o170000) == 0o040000

    @property
    def is_regular(self) -> bool:
        return (self.mode & 0o170000) == 0o100000

    @property
    def permissions(self) -> int:
        return self.mode & 0o7777


def octal(mode: int) -> str:
    return f"{mode & 0o7777:04o}"


class CutKind(enum.Enum):
    """Why the audit did not look at everything: each kind is one rule (rules_limits.py)."""

    GLOB = "glob"  # an Include glob matched or walked more than the audit follows
    INPUT = "input"  # a size or count limit stopped reading


@dataclass(frozen=True)
class Cut:
    """Something the audit left unread because a bound was reached: reported, never silent."""

    kind: CutKind
    file: str | None
    line: int | None
    detail: str


class LimitReached(OSError):  # an OSError, so every reader's `except OSError` still holds
    """A read refused because a bound was reached; the reader has already recorded the Cut."""


@dataclass(frozen=True)
class GlobResult:
    """What a glob matched (sorted, paths of the audited system) and, if cut, why."""

    paths: tuple[str, ...]
    cut: str | None = None


@dataclass
class Bound:
    """A count toward a limit (lines, entries): the first step past it becomes a `Cut`."""

    limit: int
    what: str  # plural, e.g. "lines of sshd configuration"
    used: int = 0
    cut: Cut | None = None

    def step(self, file: str, line: int) -> bool:
        """Count one more; False past the limit (the Cut recorded once, where it stopped)."""
        self.used += 1
        if self.used <= self.limit:
            return True
        if self.cut is None:
            detail = f"more than {self.limit} {self.what}: the rest was not read"
            self.cut = Cut(CutKind.INPUT, file, line, detail)
        return False
