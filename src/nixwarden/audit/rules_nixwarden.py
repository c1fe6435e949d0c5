"""Rules on nixwarden's own policy (config.toml) and the gate lines that point at it."""

from __future__ import annotations

import re

from nixwarden.audit.facts import Facts
from nixwarden.audit.model import Finding, Rule, Severity
from nixwarden.audit.rules_files import non_root_writers
from nixwarden.audit.rules_ssh import gate_principal

FAMILY = "nixwarden"

HOST_WRITE = Rule(
    "nixwarden-host-write",
    Severity.HIGH,
    'a principal writes to the host store (store = "host" with write = true)',
    "A host-store principal with write access adds paths to the store root uses, so its key "
    "is only as safe as the signatures the daemon checks.",
    'store = "tenant"   # in [principals.NAME], or write = false',
    FAMILY,
)
CONFIG_INVALID = Rule(
    "nixwarden-config-invalid",
    Severity.MEDIUM,
    "nixwarden's configuration does not load",
    "The gate fails closed, so every key pointing at it is refused until the file is fixed.",
    "nixwarden audit --config /etc/nixwarden/config.toml   # shows the key at fault",
    FAMILY,
)
UNKNOWN_PRINCIPAL = Rule(
    "nixwarden-unknown-principal",
    Severity.MEDIUM,
    "an authorized_keys gate line names a principal the configuration does not define",
    "The key is refused at every connection, which usually means a stale key or a typo that "
    "leaves someone without the access you meant to give.",
    "[principals.NAME]   # in /etc/nixwarden/config.toml, or remove the key",
    FAMILY,
)
CONFIG_WRITABLE = Rule(
    "nixwarden-config-writable",
    Severity.HIGH,
    "nixwarden's configuration can be changed by someone other than root",
    "Whoever can write the policy can grant any key any protocol and store.",
    "chown root:root /etc/nixwarden/config.toml && chmod 0644 /etc/nixwarden/config.toml",
    FAMILY,
)
LIMITS_UNENFORCEABLE = Rule(
    "nixwarden-limits-unenforceable",
    Severity.MEDIUM,
    "a tenant principal's memory, cpu or tasks limits cannot be enforced on this host",
    'With limits = "enforce" (the default) the gate refuses every session of the principal, '
    'and with "best-effort" its sessions run without the limits (nixwarden enforces them '
    "with cgroup v1 only: docs/tenants.md, Limits).",
    "mount the cgroup v1 hierarchies, or remove the limits, or accept best effort",
    FAMILY,
)
RULES = (HOST_WRITE, CONFIG_INVALID, UNKNOWN_PRINCIPAL, CONFIG_WRITABLE, LIMITS_UNENFORCEABLE)


def _line_of(text: bytes, name: str) -> int | None:
    pattern = re.compile(rf"^\s*\[\s*principals\.\"?{re.escape(name)}\"?\s*\]", re.MULTILINE)
    decoded = text.decode("utf-8", "replace")
    match = pattern.search(decoded)
    return decoded.count("\n", 0, match.start()) + 1 if match else None


def check(facts: Facts) -> list[Finding]:
    nw = facts.nixwarden
    if nw is None:
        return []
    findings: list[Finding] = []
    if nw.error is not None:
        findings.append(CONFIG_INVALID.finding(evidence=nw.error, file=nw.path))
    reasons = non_root_writers(nw.path, facts.stat, facts.accounts)
    if reasons and (nw.config is not None or nw.error is not None):
        findings.append(
            CONFIG_WRITABLE.finding(
                evidence="; ".join(reasons),
                file=nw.path,
                fix=f"chown root:root {nw.path} && chmod 0644 {nw.path}",
            )
        )
    if nw.config is None:
        return findings
    flagged: list[tuple[Rule, str, str]] = []
    for name, principal in sorted(nw.config.principals.items()):
        if principal.store == "host" and principal.write:
            flagged.append((HOST_WRITE, name, f'principals.{name}: store = "host", write = true'))
        why = nw.unenforceable.get(name)
        if why is not None:
            flagged.append(
                (
                    LIMITS_UNENFORCEABLE,
                    name,
                    f"principals.{name} (limits = {principal.limits}): {why}",
                )
            )
    findings += [
        rule.finding(
            evidence=evidence,
            setting=f"principals.{name}",
            file=nw.path,
            line=_line_of(nw.text, name),
        )
        for rule, name, evidence in flagged
    ]
    for key_file in facts.key_files:
        for key in key_file.keys:
            named = gate_principal(key.command) if key.command else None
            if named and named not in nw.config.principals:
                findings.append(
                    UNKNOWN_PRINCIPAL.finding(
                        evidence=f"{key_file.user}: {key.short}: --principal {named}",
                        file=key_file.path,
                        line=key.line,
                        fix=f"[principals.{named}]   # in {nw.path}, or remove the key",
                    )
                )
    return findings
