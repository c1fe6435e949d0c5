"""Every rule, in the order reports and docs list them, and the checks that run them."""

from __future__ import annotations

from collections.abc import Callable

from nixwarden.audit import (
    rules_files,
    rules_limits,
    rules_machines,
    rules_nixconf,
    rules_nixwarden,
    rules_ssh,
    rules_version,
)
from nixwarden.audit.facts import Facts
from nixwarden.audit.model import Finding, Rule

# rules_limits comes last: it reports the bounds the others reached while they ran.
FAMILIES = (
    rules_nixconf,
    rules_machines,
    rules_files,
    rules_ssh,
    rules_version,
    rules_nixwarden,
    rules_limits,
)
RULES: tuple[Rule, ...] = tuple(rule for family in FAMILIES for rule in family.RULES)
BY_ID: dict[str, Rule] = {rule.id: rule for rule in RULES}
CHECKS: tuple[Callable[[Facts], list[Finding]], ...] = tuple(f.check for f in FAMILIES)

assert len(BY_ID) == len(RULES), "duplicate rule id"


def run(facts: Facts) -> list[Finding]:
    findings: list[Finding] = []
    for check in CHECKS:
        findings.extend(check(facts))
    return sorted(
        rules_limits.capped(sorted(set(findings), key=Finding.sort_key)), key=Finding.sort_key
    )
