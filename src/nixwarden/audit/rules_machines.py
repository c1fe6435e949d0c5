"""Rules on remote builders: the machines file and the `builders` setting."""

from __future__ import annotations

from nixwarden.audit.facts import Facts
from nixwarden.audit.machines import check_host_key_column
from nixwarden.audit.model import Finding, Rule, Severity

FAMILY = "machines"
SSH_SCHEMES = ("ssh", "ssh-ng")

NO_HOST_KEY = Rule(
    "machines-no-host-key",
    Severity.MEDIUM,
    "a remote builder has no pinned host key",
    "Without the 8th column the daemon trusts whatever root's known_hosts says (or the first "
    "key it sees), and it sends that host the build and its own SSH identity.",
    "ssh-ng://builder@host x86_64-linux /etc/nix/builder_ed25519 4 1 - - "
    "$(base64 -w0 /etc/ssh/ssh_host_ed25519_key.pub)",
    FAMILY,
)
BAD_HOST_KEY = Rule(
    "machines-bad-host-key",
    Severity.MEDIUM,
    "a remote builder's host key column is not a valid public key",
    "Nix refuses or cannot use the entry, and a wrong key means the pin protects nothing.",
    "ssh-ng://builder@host x86_64-linux - 4 1 - - $(base64 -w0 /etc/ssh/ssh_host_ed25519_key.pub)",
    FAMILY,
)
SCHEME = Rule(
    "machines-scheme",
    Severity.MEDIUM,
    "a remote builder is reached by something other than ssh or ssh-ng",
    "Other store types lack SSH's host authentication and the per-key restrictions a gate "
    "relies on.",
    "ssh-ng://builder@host x86_64-linux /etc/nix/builder_ed25519 4 1 - - HOSTKEY",
    FAMILY,
)
INVALID = Rule(
    "machines-invalid",
    Severity.LOW,
    "a machines entry cannot be parsed",
    "Nix rejects malformed entries, so builders you expect are not used.",
    "URI SYSTEMS IDENTITY MAX-JOBS SPEED SUPPORTED MANDATORY HOST-KEY",
    FAMILY,
)

RULES = (NO_HOST_KEY, BAD_HOST_KEY, SCHEME, INVALID)


def check(facts: Facts) -> list[Finding]:
    findings: list[Finding] = []
    for machine in facts.machines.entries:
        if machine.uri in ("localhost", "auto", "daemon", "local"):
            continue
        if machine.scheme not in SSH_SCHEMES:
            findings.append(
                SCHEME.finding(
                    evidence=f"{machine.uri} uses {machine.scheme}://",
                    setting="builders",
                    file=machine.file,
                    line=machine.line,
                )
            )
            continue
        if machine.host_key is None:
            findings.append(
                NO_HOST_KEY.finding(
                    evidence=f"{machine.uri} has no host key column",
                    setting="builders",
                    file=machine.file,
                    line=machine.line,
                )
            )
        else:
            problem = check_host_key_column(machine.host_key)
            if problem:
                findings.append(
                    BAD_HOST_KEY.finding(
                        evidence=f"{machine.uri}: host key column: {problem}",
                        setting="builders",
                        file=machine.file,
                        line=machine.line,
                    )
                )
    for issue in facts.machines.problems:
        findings.append(
            INVALID.finding(
                evidence=issue.detail, setting="builders", file=issue.file, line=issue.line
            )
        )
    return findings
