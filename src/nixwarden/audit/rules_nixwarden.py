"""Rules on nixwarden's own policy (config.toml) and the gate lines that point at it.

Every configuration in force is checked: the audit's own (--config, else the default)
and each one a gate line names with its `--config` (else the gate's default path,
never $NIXWARDEN_CONFIG, which the live gate ignores). A gate line's principal is
looked up in the configuration that line's gate reads.
"""

from __future__ import annotations

import re

from nixwarden.audit import gatecmd
from nixwarden.audit.facts import Facts, NixwardenFacts
from nixwarden.audit.model import Finding, Rule, Severity
from nixwarden.audit.rules_files import non_root_writers

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
GATE_LINE_INVALID = Rule(
    "nixwarden-gate-line-invalid",
    Severity.MEDIUM,
    "a gate line runs the gate with arguments it refuses",
    "The gate refuses every connection of such a key (no --principal, an unknown or repeated "
    "argument, --check or --help), so it grants nothing and hides a mistake.",
    "nixwarden authorized-keys-line --principal NAME --key FILE.pub   # prints a correct line",
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
    "a tenant principal's limits are not held by the kernel on this host",
    'For memory, cpu or tasks, with limits = "enforce" (the default) the gate refuses every '
    'session of the principal, and with "best-effort" its sessions run without the limits '
    "(nixwarden enforces them with cgroup v1 only); a disk_quota without [tenants] "
    "disk_images is measured every 5 s and a session ended past it, so a fast writer "
    "overshoots and may fill the filesystem that holds the tenants (docs/tenants.md, Limits).",
    "mount the cgroup v1 hierarchies and set [tenants] disk_images, or remove the limits, "
    "or accept best effort",
    FAMILY,
)
RULES = (
    HOST_WRITE,
    CONFIG_INVALID,
    UNKNOWN_PRINCIPAL,
    CONFIG_WRITABLE,
    GATE_LINE_INVALID,
    LIMITS_UNENFORCEABLE,
)
_TABLE = re.compile(
    r"""^[ \t]*\[[ \t]*principals\.(?:"([^"\n]*)"|([A-Za-z0-9_-]+))[ \t]*\]""", re.M
)


def _table_lines(text: bytes) -> dict[str, int]:
    """principal → the line of its [principals.NAME] table, in one pass over the file."""
    decoded = text.decode("utf-8", "replace")
    lines: dict[str, int] = {}
    line = 1
    position = 0
    for match in _TABLE.finditer(decoded):
        line += decoded.count("\n", position, match.start())
        position = match.start()
        lines.setdefault(match[1] if match[1] is not None else match[2], line)
    return lines


def _config_findings(facts: Facts, nw: NixwardenFacts, named_by: str) -> list[Finding]:
    findings: list[Finding] = []
    if nw.error is not None:
        findings.append(CONFIG_INVALID.finding(evidence=nw.error + named_by, file=nw.path))
    reasons = non_root_writers(nw.path, facts.stat, facts.accounts)
    if reasons and (nw.config is not None or nw.error is not None):
        findings.append(
            CONFIG_WRITABLE.finding(
                evidence="; ".join(reasons) + named_by,
                file=nw.path,
                fix=f"chown root:root {nw.path} && chmod 0644 {nw.path}",
            )
        )
    if nw.config is None:
        return findings
    table_lines: dict[str, int] | None = None
    for name, principal in sorted(nw.config.principals.items()):
        flagged: list[tuple[Rule, str]] = []
        if principal.store == "host" and principal.write:
            flagged.append((HOST_WRITE, f'principals.{name}: store = "host", write = true'))
        why = nw.unenforceable.get(name)
        if why is not None:
            evidence = f"principals.{name} (limits = {principal.limits}): {why}"
            flagged.append((LIMITS_UNENFORCEABLE, evidence))
        if flagged and table_lines is None:
            table_lines = _table_lines(nw.text)
        findings += [
            rule.finding(
                evidence=evidence,
                setting=f"principals.{name}",
                file=nw.path,
                line=(table_lines or {}).get(name),
            )
            for rule, evidence in flagged
        ]
    return findings


def _gate_lines(facts: Facts) -> list[tuple[str, int, str, str, gatecmd.GateCommand]]:
    """(file, line, who, home, gate) for every key line and ForceCommand that runs the gate."""
    found = []
    for key_file in facts.key_files:
        user = facts.accounts.users.get(key_file.user)
        for key in key_file.keys:
            gate = gatecmd.parse(key.command) if key.command is not None else None
            if gate is not None:
                who = f"{key_file.user}: {key.short}"
                found.append((key_file.path, key.line, who, user.home if user else "/", gate))
    if facts.sshd is not None:
        for line in facts.sshd.lines:
            if line.keyword != "forcecommand":
                continue
            gate = gatecmd.parse(" ".join(line.args))
            if gate is not None:
                found.append((line.file, line.line, "ForceCommand", "/", gate))
    return found


def _absolute(path: str | None) -> bool:
    return path is None or path.startswith("/")


def check(facts: Facts) -> list[Finding]:
    findings: list[Finding] = []
    main = facts.nixwarden
    if main is not None:
        findings += _config_findings(facts, main, "")
    references: dict[str, tuple[str, int]] = {}
    lines = _gate_lines(facts)
    for file, line, who, home, gate in lines:
        if gate.problem is not None:
            findings.append(
                GATE_LINE_INVALID.finding(evidence=f"{who}: {gate.problem}", file=file, line=line)
            )
            continue
        if gate.principal is None or (who == "ForceCommand" and not _absolute(gate.config)):
            continue
        path = gatecmd.config_path(gate, home)
        references.setdefault(path, (file, line))
        nw = facts.gate_configs.get(path)
        if nw is None or nw.config is None:
            continue  # not read (a cut, reported) or does not load (reported below)
        if gate.principal not in nw.config.principals:
            findings.append(
                UNKNOWN_PRINCIPAL.finding(
                    evidence=f"{who}: --principal {gate.principal} (not in {path})",
                    file=file,
                    line=line,
                    fix=f"[principals.{gate.principal}]   # in {path}, or remove the key",
                )
            )
    for path, (file, line) in references.items():
        nw = facts.gate_configs.get(path)
        if nw is None or nw is main:
            continue
        findings += _config_findings(facts, nw, f" (the gate line at {file}:{line} reads it)")
    return findings
