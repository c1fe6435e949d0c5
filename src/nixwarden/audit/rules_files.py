"""Rules on files the daemon trusts: hooks it runs as root, secrets it reads, the
configuration files themselves, and the daemon socket's directory."""

from __future__ import annotations

import posixpath

from nixwarden.audit.accounts import Accounts
from nixwarden.audit.facts import Facts, Stat
from nixwarden.audit.model import FileStat, Finding, Rule, Severity, octal
from nixwarden.audit.nixconf import Setting

FAMILY = "files"
STORE = "/nix/store"

HOOK_UNSAFE = Rule(
    "nix-hook-unsafe",
    Severity.HIGH,
    "a hook the daemon runs as root can be changed by someone other than root",
    "The daemon runs build, pre-build, post-build and diff hooks as root, so whoever can "
    "replace the program or a directory above it gets root.",
    "post-build-hook = /nix/store/…-upload-paths/bin/upload-paths",
    FAMILY,
)
HOOK_OUTSIDE_STORE = Rule(
    "nix-hook-outside-store",
    Severity.LOW,
    "a hook the daemon runs as root lives outside the Nix store",
    "A program outside the store can change without a trace; a store path is immutable and "
    "names its exact content.",
    "post-build-hook = /nix/store/…-upload-paths/bin/upload-paths",
    FAMILY,
)
SECRET_READABLE = Rule(
    "nix-secret-readable",
    Severity.HIGH,
    "a signing key, netrc or SSH identity file is readable by others",
    "Anyone who can read the signing key can sign store paths this and other machines trust; "
    "netrc and SSH identities give access to caches and builders.",
    "chown root:root FILE && chmod 0600 FILE",
    FAMILY,
)
ACCESS_TOKENS_EXPOSED = Rule(
    "nix-access-tokens-exposed",
    Severity.HIGH,
    "access-tokens are written in a configuration file others can read",
    "Every local user can read the tokens and use them against the forges they unlock.",
    "!include /etc/nix/secrets.conf   # mode 0600, holding access-tokens = …",
    FAMILY,
)
CONFIG_WRITABLE = Rule(
    "nix-config-writable",
    Severity.HIGH,
    "a Nix configuration file can be changed by someone other than root",
    "Whoever can write a file the daemon reads as configuration can set hooks, trusted users "
    "or substituters, and is therefore root.",
    "chown root:root FILE && chmod 0644 FILE",
    FAMILY,
)
SOCKET_ACCESS = Rule(
    "nix-daemon-socket-access",
    Severity.INFO,
    "who can reach the Nix daemon",
    "Everyone who can connect to the daemon socket can build and is exposed to every daemon "
    "vulnerability; allowed-users narrows it further.",
    "chgrp nix-users /nix/var/nix/daemon-socket && chmod 0750 /nix/var/nix/daemon-socket",
    FAMILY,
)
SOCKET_UNSAFE = Rule(
    "nix-daemon-socket-unsafe",
    Severity.HIGH,
    "the daemon socket's directory is world-writable or not owned by root",
    "Whoever can write the directory can replace the socket and impersonate the daemon to "
    "every client, including root's.",
    "chown root:nix-users /nix/var/nix/daemon-socket && chmod 0750 /nix/var/nix/daemon-socket",
    FAMILY,
)

RULES = (
    HOOK_UNSAFE,
    HOOK_OUTSIDE_STORE,
    SECRET_READABLE,
    ACCESS_TOKENS_EXPOSED,
    CONFIG_WRITABLE,
    SOCKET_ACCESS,
    SOCKET_UNSAFE,
)

HOOKS = ("build-hook", "pre-build-hook", "post-build-hook", "diff-hook")


def ancestors(path: str) -> list[str]:
    """path, its parent, …, '/' (normalised)."""
    current = posixpath.normpath(path)
    result = [current]
    while current != "/":
        current = posixpath.dirname(current)
        result.append(current)
    return result


def _members(accounts: Accounts, gid: int) -> str:
    name = accounts.group_name(gid)
    members = accounts.group_members(name)
    if not members:
        return f"group {name}"
    return f"group {name} ({', '.join(members[:8])}{', …' if len(members) > 8 else ''})"


def non_root_writers(path: str, stat: Stat, accounts: Accounts) -> list[str]:
    """Why someone other than root could change `path` (the file or a directory above it).

    A directory with the sticky bit only lets others remove their own entries, so a
    root-owned entry in it stays safe; that case is not reported."""
    reasons: list[str] = []
    for index, candidate in enumerate(ancestors(path)):
        info = stat(candidate)
        if info is None:
            continue
        is_parent = index > 0
        sticky = is_parent and info.is_dir and bool(info.mode & 0o1000)
        if info.uid != 0:
            reasons.append(f"{candidate} is owned by {accounts.user_name(info.uid)}")
        elif info.mode & 0o002 and not sticky:
            reasons.append(f"{candidate} is writable by everyone ({octal(info.mode)})")
        elif info.mode & 0o020 and info.gid != 0 and not sticky:
            reasons.append(
                f"{candidate} is writable by {_members(accounts, info.gid)} ({octal(info.mode)})"
            )
    return reasons


def readable_by_others(info: FileStat, accounts: Accounts) -> str | None:
    if info.uid != 0:
        return f"owned by {accounts.user_name(info.uid)} ({octal(info.mode)})"
    if info.mode & 0o004:
        return f"readable by everyone ({octal(info.mode)})"
    if info.mode & 0o040 and info.gid != 0:
        return f"readable by {_members(accounts, info.gid)} ({octal(info.mode)})"
    return None


def _hook_program(setting: Setting) -> str | None:
    tokens = setting.tokens
    return tokens[0] if tokens else None


def _hooks(facts: Facts) -> list[Finding]:
    findings = []
    for name in HOOKS:
        setting = facts.nix_conf.last(name)
        if setting is None:
            continue
        program = _hook_program(setting)
        if not program or not program.startswith("/"):
            continue
        reasons = non_root_writers(program, facts.stat, facts.accounts)
        if reasons:
            findings.append(
                HOOK_UNSAFE.finding(
                    evidence=f"{name} = {program}: " + "; ".join(reasons),
                    setting=name,
                    file=setting.file,
                    line=setting.line,
                )
            )
        if not program.startswith(STORE + "/"):
            findings.append(
                HOOK_OUTSIDE_STORE.finding(
                    evidence=f"{name} = {program}",
                    setting=name,
                    file=setting.file,
                    line=setting.line,
                )
            )
    return findings


def _secret_files(facts: Facts) -> list[tuple[str, str, str | None, int | None]]:
    """(path, what, file, line) of every secret the daemon uses."""
    conf = facts.nix_conf
    secrets: list[tuple[str, str, str | None, int | None]] = []
    for path, setting in conf.items("secret-key-files"):
        secrets.append((path, "secret-key-files", setting.file, setting.line))
    netrc = conf.last("netrc-file")
    if netrc is not None and netrc.value:
        secrets.append((netrc.value, "netrc-file", netrc.file, netrc.line))
    elif netrc is None:
        default = posixpath.join(posixpath.dirname(facts.nix_conf_path), "netrc")
        secrets.append((default, "netrc-file (default)", None, None))
    for machine in facts.machines.entries:
        if machine.identity_file:
            secrets.append(
                (machine.identity_file, f"identity of {machine.uri}", machine.file, machine.line)
            )
        for key, value in machine.params:
            if key == "ssh-key" and value:
                secrets.append((value, f"ssh-key of {machine.uri}", machine.file, machine.line))
    return secrets


def _secrets(facts: Facts) -> list[Finding]:
    findings = []
    seen: set[str] = set()
    for path, what, file, line in _secret_files(facts):
        if not path.startswith("/") or path in seen:
            continue
        seen.add(path)
        info = facts.stat(path)
        if info is None:
            continue
        problem = readable_by_others(info, facts.accounts)
        if problem:
            findings.append(
                SECRET_READABLE.finding(
                    evidence=f"{what}: {path} is {problem}",
                    setting=what.split(" ")[0] if what.endswith("files") else None,
                    file=file or facts.nix_conf_path,
                    line=line,
                    fix=f"chown root:root {path} && chmod 0600 {path}",
                )
            )
    return findings


def _access_tokens(facts: Facts) -> list[Finding]:
    findings = []
    reported: set[str] = set()
    for setting in facts.nix_conf.settings:
        if setting.name != "access-tokens" or not setting.value or setting.file in reported:
            continue
        info = facts.stat(setting.file)
        if info is None:
            continue
        problem = readable_by_others(info, facts.accounts)
        if problem:
            reported.add(setting.file)
            findings.append(
                ACCESS_TOKENS_EXPOSED.finding(
                    evidence=f"{setting.file} holds access-tokens and is {problem}",
                    setting="access-tokens",
                    file=setting.file,
                    line=setting.line,
                )
            )
    return findings


def _config_files(facts: Facts) -> list[Finding]:
    findings = []
    files = list(dict.fromkeys([*facts.nix_conf.files, *facts.machines.files]))
    for path in files:
        reasons = non_root_writers(path, facts.stat, facts.accounts)
        if reasons:
            findings.append(
                CONFIG_WRITABLE.finding(
                    evidence="; ".join(reasons),
                    file=path,
                    fix=f"chown root:root {path} && chmod 0644 {path}",
                )
            )
    return findings


def _socket(facts: Facts) -> list[Finding]:
    path = facts.socket_dir_path
    info = facts.stat(path)
    if info is None:
        return []
    accounts = facts.accounts
    owner, group = accounts.user_name(info.uid), accounts.group_name(info.gid)
    mode = info.mode
    if mode & 0o001:
        who = "every local user"
    elif mode & 0o010:
        members = accounts.group_members(group) or ()
        listed = ", ".join(members) if members else "no members"
        who = f"{owner} and members of {group} ({listed})"
    else:
        who = f"only {owner}"
    evidence = f"{path} is {owner}:{group} {octal(mode)}: {who} can connect"
    if mode & 0o020 and not mode & 0o1000:
        evidence += f"; members of {group} can also replace the socket"
    findings = [SOCKET_ACCESS.finding(evidence=evidence, file=path)]
    problems = []
    if info.uid != 0:
        problems.append(f"owned by {owner}")
    if mode & 0o002:
        problems.append(f"writable by everyone ({octal(mode)})")
    if problems:
        findings.append(
            SOCKET_UNSAFE.finding(evidence=f"{path} is " + " and ".join(problems), file=path)
        )
    return findings


def check(facts: Facts) -> list[Finding]:
    return [
        *_hooks(facts),
        *_secrets(facts),
        *_access_tokens(facts),
        *_config_files(facts),
        *_socket(facts),
    ]
