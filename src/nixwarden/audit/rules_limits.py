"""Rules on what the audit itself did not see: every bound it hit is a finding.

The audit bounds what it reads (system.py, the parsers) so a hostile or broken tree
cannot hang it or exhaust memory. A bound that stops reading is never silent: what it
cut is reported here, at the file and line where the audit stopped, and the report
lists at most MAX_PER_FILE findings of one rule per file (the rest are counted).
"""

from __future__ import annotations

from collections.abc import Sequence

from nixwarden.audit.facts import Facts
from nixwarden.audit.model import CutKind, Finding, Rule, Severity
from nixwarden.audit.sshd import MAX_EVALUATIONS

FAMILY = "audit"
MAX_PER_FILE = 100

INPUT_CUT = Rule(
    "audit-input-cut",
    Severity.HIGH,
    "the audit stopped reading at a size or count limit, so part of the configuration "
    "was not checked",
    "What was not read may hold any setting, so no finding there means nothing, and a "
    "configuration this large is more than anyone reviews reliably.",
    "# shrink or split what is named; nothing past the limit was audited",
    FAMILY,
)
GLOB_CUT = Rule(
    "audit-glob-cut",
    Severity.HIGH,
    "an Include glob matches or walks more than the audit follows",
    "sshd reads every file the glob matches, so the files the audit did not expand are in "
    "force but unchecked, and a glob through a link loop also stalls sshd itself.",
    "Include /etc/ssh/sshd_config.d/*.conf   # one directory, no links that loop",
    FAMILY,
)
FINDINGS_CUT = Rule(
    "audit-findings-cut",
    Severity.INFO,
    "more findings of one rule in one file than the report lists",
    f"The report lists the first {MAX_PER_FILE} findings of a rule in a file so it stays "
    "readable; this one counts the rest and carries the worst severity among them.",
    "# fix the findings listed, then run the audit again",
    FAMILY,
)

RULES = (INPUT_CUT, GLOB_CUT, FINDINGS_CUT)


def check(facts: Facts) -> list[Finding]:
    """Runs after every other family (catalog.FAMILIES ends with this one), so it also
    sees the bounds the other rules reached while they ran."""
    findings = []
    for cut in facts.cuts:
        rule = GLOB_CUT if cut.kind is CutKind.GLOB else INPUT_CUT
        findings.append(rule.finding(evidence=cut.detail, file=cut.file, line=cut.line))
    if facts.sshd is not None and facts.sshd.evaluations_exhausted:
        findings.append(
            INPUT_CUT.finding(
                evidence=f"more than {MAX_EVALUATIONS} Match blocks evaluated for users: the "
                "rest were counted as applying to some connections and not to all",
                file=facts.sshd_path,
            )
        )
    return findings


def capped(findings: Sequence[Finding]) -> list[Finding]:
    """At most MAX_PER_FILE findings of a rule per file (sorted), plus one that counts the rest."""
    kept: list[Finding] = []
    dropped: dict[tuple[str, str | None], list[Finding]] = {}
    shown: dict[tuple[str, str | None], int] = {}
    for finding in findings:
        key = (finding.rule, finding.file)
        shown[key] = shown.get(key, 0) + 1
        if shown[key] <= MAX_PER_FILE:
            kept.append(finding)
        else:
            dropped.setdefault(key, []).append(finding)
    for (rule, file), rest in dropped.items():
        worst = max(finding.severity for finding in rest)
        kept.append(
            FINDINGS_CUT.finding(
                evidence=f"{len(rest)} more {rule} findings in this file (the worst: "
                f"{worst.value}) are counted, not listed",
                file=file,
                severity=worst,
            )
        )
    return kept
