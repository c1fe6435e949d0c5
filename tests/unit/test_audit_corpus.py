"""One positive and one negative tree per rule: tests/corpus/audit/<rule-id>/{positive,negative}.

Each case is a small system tree audited with --root; the positive one must raise the
rule, the negative one (the same setting done right) must not. AUDIT-CASE holds what a
tree cannot (owners and modes, the running daemon's environment).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nixwarden.audit.catalog import RULES
from tests.unit.audit_helpers import CORPUS, audit_case

CASES = sorted((rule.id, kind) for rule in RULES for kind in ("positive", "negative"))


def test_every_rule_has_both_cases() -> None:
    for rule in RULES:
        for kind in ("positive", "negative"):
            assert (CORPUS / rule.id / kind).is_dir(), f"missing corpus case {rule.id}/{kind}"
    listed = {p.name for p in CORPUS.iterdir() if not p.name.startswith("_")}
    assert listed == {rule.id for rule in RULES}


@pytest.mark.parametrize(("rule", "kind"), CASES, ids=[f"{r}/{k}" for r, k in CASES])
def test_corpus_case(rule: str, kind: str, tmp_path: Path) -> None:
    findings = audit_case(CORPUS / rule / kind, tmp_path)
    fired = [f for f in findings if f.rule == rule]
    if kind == "positive":
        assert fired, f"{rule} did not fire; got {[f.rule for f in findings]}"
        for finding in fired:
            assert finding.evidence and finding.why and finding.fix
    else:
        assert not fired, f"{rule} fired on the negative case: {fired}"
