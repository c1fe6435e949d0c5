"""Reports: text for people, JSON for scripts, SARIF 2.1.0 for code-scanning tools.

Findings carry text from the audited machine (file names, configuration lines, key
comments, user names). The text report and SARIF's message (what a person reads) pass
every such string through `nixwarden.display.escape`, so a control character, a line
or paragraph separator or a bidirectional override cannot forge or reorder a line.
JSON and SARIF's structured fields keep the exact text, escaped by JSON itself.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from nixwarden import __version__
from nixwarden.audit.model import SEVERITIES, Finding, Rule, Severity
from nixwarden.display import escape

JSON_VERSION = 1
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"

_COLOURS = {
    Severity.CRITICAL: "\033[1;31m",
    Severity.HIGH: "\033[31m",
    Severity.MEDIUM: "\033[33m",
    Severity.LOW: "\033[36m",
    Severity.INFO: "\033[2m",
}
_RESET = "\033[0m"
_BOLD = "\033[1m"


def failing(findings: Sequence[Finding], fail_on: Severity) -> list[Finding]:
    return [f for f in findings if f.severity >= fail_on]


def summary(findings: Sequence[Finding], fail_on: Severity) -> dict[str, object]:
    counts = {severity.value: 0 for severity in SEVERITIES}
    for finding in findings:
        counts[finding.severity.value] += 1
    return {
        "total": len(findings),
        "by_severity": counts,
        "fail_on": fail_on.value,
        "failed": bool(failing(findings, fail_on)),
    }


def _location(finding: Finding) -> str:
    if finding.file is None:
        return ""
    return f"{finding.file}:{finding.line}" if finding.line else finding.file


def _lines(text: str, indent: str) -> str:
    """Escaped line by line: a fix may span lines (an sshd Match block), nothing else does.

    Its line breaks are the rule's own: the values a rule puts in a fix (user, principal
    and file names, key comments) come from line-based files and cannot hold a `\\n`."""
    return ("\n" + indent).join(escape(line) for line in text.split("\n"))


def text(findings: Sequence[Finding], fail_on: Severity, *, colour: bool) -> str:
    def paint(severity: Severity, value: str) -> str:
        return f"{_COLOURS[severity]}{value}{_RESET}" if colour else value

    lines: list[str] = []
    for severity in SEVERITIES:
        group = [f for f in findings if f.severity is severity]
        if not group:
            continue
        heading = f"{severity.value.upper()} ({len(group)})"
        lines.append(paint(severity, f"{_BOLD if colour else ''}{heading}"))
        for finding in group:
            where = _location(finding)
            lines.append(f"  [{finding.rule}] {escape(finding.title)}")
            if where:
                lines.append(f"    at:   {escape(where)}")
            lines.append(f"    seen: {escape(finding.evidence)}")
            lines.append(f"    why:  {escape(finding.why)}")
            lines.append(f"    fix:  {_lines(finding.fix, '          ')}")
        lines.append("")
    counts = summary(findings, fail_on)["by_severity"]
    assert isinstance(counts, dict)
    shown = ", ".join(f"{count} {name}" for name, count in counts.items() if count)
    verdict = (
        f"fails --fail-on {fail_on.value}"
        if failing(findings, fail_on)
        else f"nothing at or above {fail_on.value}"
    )
    lines.append(f"{len(findings)} findings ({shown or 'none'}); {verdict}")
    return "\n".join(lines) + "\n"


def as_dict(finding: Finding) -> dict[str, object]:
    return {
        "rule": finding.rule,
        "severity": finding.severity.value,
        "title": finding.title,
        "file": finding.file,
        "line": finding.line,
        "setting": finding.setting,
        "evidence": finding.evidence,
        "why": finding.why,
        "fix": finding.fix,
    }


def json_report(findings: Sequence[Finding], fail_on: Severity) -> str:
    document = {
        "version": JSON_VERSION,
        "findings": [as_dict(f) for f in findings],
        "summary": summary(findings, fail_on),
    }
    return json.dumps(document, indent=2) + "\n"


def _level(severity: Severity) -> str:
    match severity:
        case Severity.CRITICAL | Severity.HIGH:
            return "error"
        case Severity.MEDIUM:
            return "warning"
        case Severity.LOW | Severity.INFO:
            return "note"


def _security_severity(severity: Severity) -> str:
    # GitHub code scanning reads this CVSS-like score from a rule's properties.
    match severity:
        case Severity.CRITICAL:
            return "9.5"
        case Severity.HIGH:
            return "8.0"
        case Severity.MEDIUM:
            return "5.5"
        case Severity.LOW:
            return "3.0"
        case Severity.INFO:
            return "0.0"


def _uri(path: str) -> str:
    from urllib.parse import quote  # noqa: PLC0415

    return "file://" + quote(path, safe="/")


def sarif_report(findings: Sequence[Finding], rules: Sequence[Rule]) -> str:
    index = {rule.id: position for position, rule in enumerate(rules)}
    driver_rules = [
        {
            "id": rule.id,
            "name": "".join(part.capitalize() for part in rule.id.split("-")),
            "shortDescription": {"text": rule.title},
            "fullDescription": {"text": rule.why},
            "help": {"text": f"{rule.why}\nFix: {rule.fix}"},
            "defaultConfiguration": {"level": _level(rule.severity)},
            "properties": {
                "tags": ["security", rule.family],
                "severity": rule.severity.value,
                "security-severity": _security_severity(rule.severity),
            },
        }
        for rule in rules
    ]
    results = []
    for finding in findings:
        result: dict[str, object] = {
            "ruleId": finding.rule,
            "level": _level(finding.severity),
            "message": {
                "text": f"{escape(finding.title)}: {escape(finding.evidence)}. "
                f"Fix: {_lines(finding.fix, '')}"
            },
            "properties": {
                "severity": finding.severity.value,
                "setting": finding.setting,
                "evidence": finding.evidence,
                "why": finding.why,
                "fix": finding.fix,
            },
        }
        if finding.rule in index:
            result["ruleIndex"] = index[finding.rule]
        if finding.file:
            physical: dict[str, object] = {"artifactLocation": {"uri": _uri(finding.file)}}
            if finding.line and finding.line >= 1:
                physical["region"] = {"startLine": finding.line}
            result["locations"] = [{"physicalLocation": physical}]
        results.append(result)
    document = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "nixwarden audit",
                        "version": __version__,
                        "rules": driver_rules,
                    }
                },
                "results": results,
            }
        ],
    }
    return json.dumps(document, indent=2) + "\n"
