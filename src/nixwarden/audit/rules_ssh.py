"""Rules on how builder users log in: their authorized_keys and sshd's settings for them.

A builder user is anyone the daemon or nixwarden gives a role: named (or in a group
named) in trusted-users, the user of a machines entry that exists here, a nixwarden
principal that is also a local user, a user whose authorized_keys run `nixwarden gate`,
or a user an sshd `Match` block forces to a Nix command.
"""

from __future__ import annotations

from nixwarden.audit import gatecmd
from nixwarden.audit.facts import Facts
from nixwarden.audit.model import Finding, Rule, Severity
from nixwarden.audit.sshd import Criterion, Line, value

FAMILY = "ssh"

KEY_UNRESTRICTED = Rule(
    "ssh-key-unrestricted",
    Severity.HIGH,
    "a builder user's key is not pinned to a command with `restrict`",
    "Without `restrict` and a forced command the key can open a shell, forward ports and run "
    "anything as a user the Nix daemon trusts.",
    'restrict,command="/usr/bin/nixwarden gate --principal NAME" ssh-ed25519 AAAA… comment',
    FAMILY,
)
SSHD_FORWARDING = Rule(
    "sshd-builder-forwarding",
    Severity.MEDIUM,
    "sshd lets a builder user have a TTY or forward connections",
    "A key that escapes its forced command (or lacks `restrict`) then gets a terminal or a "
    "tunnel into the network behind the builder.",
    "Match User NAME\n  DisableForwarding yes\n  PermitTTY no\n  PermitTunnel no",
    FAMILY,
)
SSH_INVALID = Rule(
    "ssh-config-invalid",
    Severity.LOW,
    "an sshd configuration or authorized_keys line cannot be used",
    "sshd ignores lines it cannot parse, so a restriction written there is not in force.",
    "# fix or remove the line (sshd -T -C user=NAME shows the effective settings)",
    FAMILY,
)

RULES = (KEY_UNRESTRICTED, SSHD_FORWARDING, SSH_INVALID)

NIX_COMMANDS = ("nix-daemon", "nix-store", "nixwarden")


def runs_gate(command: str | None) -> bool:
    """Whether a command= or ForceCommand runs nixwarden's gate (in any form it is written)."""
    return command is not None and gatecmd.parse(command) is not None


def builder_users(facts: Facts) -> dict[str, str]:
    """user → why they count as a builder user (only users that exist locally)."""
    users = facts.accounts.users
    result: dict[str, str] = {}

    def add(user: str, reason: str) -> None:
        if user in users and user != "root":
            result.setdefault(user, reason)

    for entry, _ in facts.nix_conf.items("trusted-users"):
        if entry.startswith("@"):
            for member in facts.accounts.group_members(entry[1:]) or ():
                add(member, f"member of {entry} in trusted-users")
        elif entry != "*":
            add(entry, "in trusted-users")
    for machine in facts.machines.entries:
        if machine.user:
            add(machine.user, f"user of machines entry {machine.uri}")
    if facts.nixwarden and facts.nixwarden.config:
        for name in facts.nixwarden.config.principals:
            add(name, "a nixwarden principal")
    for key_file in facts.key_files:
        for key in key_file.keys:
            if runs_gate(key.command):
                add(key_file.user, "runs nixwarden gate")
    if facts.sshd:
        forcing: dict[tuple[Criterion, ...], None] = {}
        for line in facts.sshd.lines:
            command = " ".join(line.args)
            if (
                line.keyword == "forcecommand"
                and line.match is not None
                and (runs_gate(command) or any(word in command for word in NIX_COMMANDS))
            ):
                forcing[line.match] = None
        for user in users:
            if not forcing or facts.sshd.evaluations_exhausted:
                break  # reported by rules_limits
            groups = facts.accounts.groups_of(user)
            # Each distinct Match once, however often it repeats.
            if any(facts.sshd.applies(criteria, user, groups) is True for criteria in forcing):
                add(user, "forced to a Nix command by sshd")
    return result


def _decided(facts: Facts, user: str, *, unknown_matches: bool) -> dict[str, Line | None]:
    if facts.sshd is None:
        return {}
    groups = facts.accounts.groups_of(user)
    return facts.sshd.effective(user, groups, unknown_matches=unknown_matches)


def force_command(facts: Facts, user: str) -> str | None:
    """The ForceCommand every connection of `user` gets, if any."""
    if facts.sshd is None:
        return None
    groups = facts.accounts.groups_of(user)
    values = []
    for unknown in (False, True):
        line = facts.sshd.decide("forcecommand", user, groups, unknown_matches=unknown)
        command = " ".join(line.args) if line else ""
        if line is None or not command or command.lower() == "none":
            return None
        values.append(command)
    return values[0]


def _keys(facts: Facts, builders: dict[str, str]) -> list[Finding]:
    findings = []
    for user, reason in sorted(builders.items()):
        forced = force_command(facts, user)
        for key_file in facts.keys_of(user):
            for key in key_file.keys:
                missing = []
                if not key.restricted:
                    missing.append("no `restrict`")
                if key.command is None and forced is None:
                    missing.append("no command= and no sshd ForceCommand")
                reopened = key.reopened
                if reopened:
                    missing.append(f"`restrict` undone by {','.join(reopened)}")
                gate = gatecmd.parse(key.command) if key.command is not None else None
                if gate is not None and gate.shell is not None:
                    missing.append(
                        f"command= runs the gate inside shell syntax ({gate.shell!r}), "
                        "so it can run more than the gate"
                    )
                if not missing:
                    continue
                findings.append(
                    KEY_UNRESTRICTED.finding(
                        evidence=f"{user} ({reason}): {key.short}: {'; '.join(missing)}",
                        file=key_file.path,
                        line=key.line,
                        fix=(
                            f'restrict,command="/usr/bin/nixwarden gate --principal {user}" '
                            f"{key.key_type} {key.key_data[:12]}… {key.comment}".rstrip()
                        ),
                    )
                )
            for problem in key_file.problems:
                findings.append(
                    SSH_INVALID.finding(
                        evidence=f"{user}: {problem.detail}", file=key_file.path, line=problem.line
                    )
                )
    return findings


CAPABILITIES = (
    ("permittty", "PermitTTY", ("yes",), "a TTY"),
    (
        "allowtcpforwarding",
        "AllowTcpForwarding",
        ("yes", "all", "local", "remote"),
        "TCP forwarding",
    ),
    (
        "allowstreamlocalforwarding",
        "AllowStreamLocalForwarding",
        ("yes", "all", "local", "remote"),
        "Unix socket forwarding",
    ),
    ("allowagentforwarding", "AllowAgentForwarding", ("yes",), "agent forwarding"),
    ("x11forwarding", "X11Forwarding", ("yes",), "X11 forwarding"),
    ("permittunnel", "PermitTunnel", ("yes", "point-to-point", "ethernet"), "tunnel devices"),
)
FORWARDING = frozenset(
    {"allowtcpforwarding", "allowstreamlocalforwarding", "allowagentforwarding", "x11forwarding"}
)


def _sshd(facts: Facts, builders: dict[str, str]) -> list[Finding]:
    if facts.sshd is None:
        return []
    findings = []
    for user, reason in sorted(builders.items()):
        allowed: list[str] = []
        first_line: Line | None = None
        for unknown in (False, True):
            decided = _decided(facts, user, unknown_matches=unknown)
            disabled, _ = value(decided, "disableforwarding")
            for keyword, shown, permissive, what in CAPABILITIES:
                if keyword in FORWARDING and disabled.lower() == "yes":
                    continue
                setting, line = value(decided, keyword)
                word = setting.split()[0].lower() if setting else ""
                if word in permissive:
                    label = f"{what} ({shown} {setting}" + (
                        f" at {line.file}:{line.line})" if line else ", the default)"
                    )
                    if label not in allowed:
                        allowed.append(label)
                    if first_line is None and line is not None:
                        first_line = line
        if not allowed:
            continue
        findings.append(
            SSHD_FORWARDING.finding(
                evidence=f"{user} ({reason}) may get " + "; ".join(allowed),
                file=first_line.file if first_line else facts.sshd_path,
                line=first_line.line if first_line else None,
                fix=(
                    f"Match User {user}\n  DisableForwarding yes\n  PermitTTY no\n  PermitTunnel no"
                ),
            )
        )
    for problem in facts.sshd.problems:
        findings.append(
            SSH_INVALID.finding(evidence=problem.detail, file=problem.file, line=problem.line)
        )
    return findings


def check(facts: Facts) -> list[Finding]:
    builders = builder_users(facts)
    return [*_keys(facts, builders), *_sshd(facts, builders)]
