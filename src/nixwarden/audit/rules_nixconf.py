"""Rules on the effective Nix configuration (settings documented in Nix's globals.hh and
the Lix/Nix manuals' conf-file pages; trust model: Lix manual, installation/multi-user)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from nixwarden.audit.facts import Facts
from nixwarden.audit.model import Finding, Rule, Severity
from nixwarden.audit.nixconf import ProblemKind, Setting

FAMILY = "nix.conf"

TRUSTED_USERS = Rule(
    "nix-trusted-users",
    Severity.HIGH,
    "trusted-users grants root-equivalent access beyond root",
    "A trusted user may set build hooks, disable the sandbox and import unsigned store paths "
    "that root later runs, so it is root.",
    "trusted-users = root",
    FAMILY,
)
REQUIRE_SIGS_OFF = Rule(
    "nix-require-sigs-off",
    Severity.CRITICAL,
    "require-sigs = false accepts unsigned store paths",
    "Without signature checks any substituter, mirror or man in the middle can put arbitrary "
    "store paths on the machine.",
    "require-sigs = true",
    FAMILY,
)
SUBSTITUTER_TRUSTED = Rule(
    "nix-substituter-trusted-flag",
    Severity.CRITICAL,
    "a substituter is marked trusted=1 and bypasses signature checks",
    "A store URL with trusted=1 is exempt from require-sigs, so whoever controls that cache "
    "or its transport controls the store.",
    "substituters = https://cache.example.org   # no ?trusted=1; add its key to "
    "trusted-public-keys",
    FAMILY,
)
BUILD_USERS_GROUP_EMPTY = Rule(
    "nix-build-users-group-empty",
    Severity.CRITICAL,
    "build-users-group is empty while the daemon runs as root",
    "With no build users every build runs as root on the host.",
    "build-users-group = nixbld",
    FAMILY,
)
SANDBOX_DISABLED = Rule(
    "nix-sandbox-disabled",
    Severity.HIGH,
    "the build sandbox is disabled or relaxed",
    "Without the sandbox a build sees the host's file system and network, and with relaxed "
    "any derivation asking for __noChroot escapes it.",
    "sandbox = true",
    FAMILY,
)
SANDBOX_FALLBACK = Rule(
    "nix-sandbox-fallback",
    Severity.MEDIUM,
    "sandbox-fallback silently builds unsandboxed when the sandbox cannot start",
    "If the kernel refuses namespaces Nix builds without any sandbox instead of failing.",
    "sandbox-fallback = false",
    FAMILY,
)
FILTER_SYSCALLS_OFF = Rule(
    "nix-filter-syscalls-off",
    Severity.HIGH,
    "filter-syscalls = false lets builds create setuid files and set ACLs/xattrs",
    "Builders can then leave setuid programs or extended attributes in their outputs.",
    "filter-syscalls = true",
    FAMILY,
)
ALLOW_NEW_PRIVILEGES = Rule(
    "nix-allow-new-privileges",
    Severity.HIGH,
    "allow-new-privileges = true lets builds gain privileges through setuid programs",
    "A build can then run setuid binaries inside the sandbox and gain privileges there.",
    "allow-new-privileges = false",
    FAMILY,
)
ACCEPT_FLAKE_CONFIG = Rule(
    "nix-accept-flake-config",
    Severity.HIGH,
    "accept-flake-config = true applies any flake's nixConfig without asking",
    "Evaluating a hostile flake as a trusted user then changes settings such as substituters "
    "or hooks, which is root for trusted users.",
    "accept-flake-config = false",
    FAMILY,
)
UNSAFE_NATIVE = Rule(
    "nix-unsafe-native-code",
    Severity.CRITICAL,
    "allow-unsafe-native-code-during-evaluation runs native code while evaluating",
    "Any Nix expression the machine evaluates can then execute programs as the evaluating "
    "user, outside any sandbox.",
    "allow-unsafe-native-code-during-evaluation = false",
    FAMILY,
)
RISKY_FEATURES = Rule(
    "nix-experimental-risky",
    Severity.MEDIUM,
    "a risky experimental feature is enabled",
    "These features weaken isolation between builds, clients and the host (recursive Nix, "
    "impure derivations, trust overrides, external builders, alternative stores).",
    "experimental-features = nix-command flakes",
    FAMILY,
)
TRUSTED_SUBSTITUTER_HTTP = Rule(
    "nix-trusted-substituter-http",
    Severity.MEDIUM,
    "a trusted substituter is reached over plain http",
    "Any untrusted user may opt into a trusted substituter, and plain http lets the network "
    "see and delay what is fetched.",
    "trusted-substituters = https://cache.example.org",
    FAMILY,
)
ALLOWED_USERS_EVERYONE = Rule(
    "nix-allowed-users-everyone",
    Severity.MEDIUM,
    "allowed-users lets every local user talk to the daemon",
    "Every daemon vulnerability is then reachable from any local account.",
    "allowed-users = @nix-users",
    FAMILY,
)
SANDBOX_PATHS = Rule(
    "nix-sandbox-paths-sensitive",
    Severity.HIGH,
    "sandbox paths expose secrets, devices, sockets or home directories to builds",
    "Every derivation, including ones untrusted users submit, can read what is mounted into "
    "its sandbox.",
    "extra-sandbox-paths = /bin/sh=/nix/store/…-busybox/bin/busybox",
    FAMILY,
)
INVALID = Rule(
    "nixconf-invalid",
    Severity.MEDIUM,
    "Nix rejects a line of its configuration",
    "Nix refuses to start with an illegal line or value, so the configuration in force is not "
    "the one on disk.",
    "name = value   # exactly one '=' surrounded by spaces",
    FAMILY,
)
INCLUDE_MISSING = Rule(
    "nixconf-include-missing",
    Severity.MEDIUM,
    "an `include` names a file that does not exist",
    "Nix refuses the whole configuration when an `include` target is missing.",
    "!include /etc/nix/local.conf   # or create the file",
    FAMILY,
)
OPTIONAL_INCLUDE_MISSING = Rule(
    "nixconf-include-optional-missing",
    Severity.INFO,
    "an `!include` names a file that does not exist",
    "Nix skips it silently, so settings you expect from it are not in force.",
    "!include /etc/nix/local.conf",
    FAMILY,
)
INCLUDE_UNREADABLE = Rule(
    "nixconf-include-unreadable",
    Severity.MEDIUM,
    "an included file exists but cannot be read",
    "Nix silently skips an unreadable include, so the configuration in force is incomplete.",
    "chmod 0644 FILE   # or 0600 owned by root for secrets",
    FAMILY,
)
INCLUDE_CYCLE = Rule(
    "nixconf-include-cycle",
    Severity.MEDIUM,
    "configuration files include each other in a cycle",
    "Nix has no cycle detection and recurses until it crashes.",
    "# remove the include line that closes the cycle",
    FAMILY,
)
UNKNOWN_SETTING = Rule(
    "nixconf-unknown-setting",
    Severity.INFO,
    "a setting is not known to Nix or Lix",
    "Nix only warns about unknown settings, so a typo silently leaves the default in force.",
    "# correct the name (see `nix config show`) or remove the line",
    FAMILY,
)
MAIN_MISSING = Rule(
    "nixconf-missing",
    Severity.INFO,
    "there is no nix.conf; Nix's defaults are in force",
    "Defaults are audited instead, which may not be what the machine runs with.",
    "# create /etc/nix/nix.conf with the settings you intend",
    FAMILY,
)
DAEMON_CONF_DIR = Rule(
    "nix-daemon-env-config",
    Severity.INFO,
    "the running nix-daemon reads its configuration from elsewhere",
    "NIX_CONF_DIR, NIX_CONFIG or NIX_USER_CONF_FILES in the daemon's environment add "
    "configuration this audit did not read.",
    "nixwarden audit --nix-conf $NIX_CONF_DIR/nix.conf",
    FAMILY,
)

RULES = (
    TRUSTED_USERS,
    REQUIRE_SIGS_OFF,
    SUBSTITUTER_TRUSTED,
    BUILD_USERS_GROUP_EMPTY,
    SANDBOX_DISABLED,
    SANDBOX_FALLBACK,
    FILTER_SYSCALLS_OFF,
    ALLOW_NEW_PRIVILEGES,
    ACCEPT_FLAKE_CONFIG,
    UNSAFE_NATIVE,
    RISKY_FEATURES,
    TRUSTED_SUBSTITUTER_HTTP,
    ALLOWED_USERS_EVERYONE,
    SANDBOX_PATHS,
    INVALID,
    INCLUDE_MISSING,
    OPTIONAL_INCLUDE_MISSING,
    INCLUDE_UNREADABLE,
    INCLUDE_CYCLE,
    UNKNOWN_SETTING,
    MAIN_MISSING,
    DAEMON_CONF_DIR,
)

RISKY = {
    "recursive-nix": "builds can run Nix and add to the store from inside the sandbox",
    "impure-derivations": "derivations may have network access and unhashed outputs",
    "configurable-impure-env": "impure-env passes host environment into fixed-output builds",
    "daemon-trust-override": "nix-daemon --force-trusted can make a client trusted",
    "external-builders": "the daemon runs external programs to build",
    "mounted-ssh-store": "a remote store is mounted and trusted locally",
    "local-overlay-store": "the store layers over another store's files",
}

# Sources in sandbox-paths that builds should never see. Prefix match on whole components.
SENSITIVE_PREFIXES = (
    ("/dev", "a device"),
    ("/home", "home directories"),
    ("/root", "root's home directory"),
    ("/run/secrets", "secrets"),
    ("/run/keys", "secrets"),
    ("/run/credentials", "service credentials"),
    ("/var/lib/secrets", "secrets"),
    ("/etc/ssh", "SSH host keys"),
    ("/etc/shadow", "password hashes"),
    ("/etc/gshadow", "password hashes"),
    ("/etc/sudoers", "sudo policy"),
    ("/etc/nix", "Nix configuration, signing keys and netrc"),
    ("/etc/nixwarden", "nixwarden's policy"),
    ("/nix/var/nix", "the daemon socket and store database"),
    ("/run/user", "user session sockets"),
    ("/run/docker.sock", "the Docker socket"),
    ("/var/run/docker.sock", "the Docker socket"),
    ("/run/podman", "the Podman socket"),
    ("/run/dbus", "the system bus"),
    ("/proc", "the host's /proc"),
    ("/sys", "the host's /sys"),
)
WHOLE_TREES = ("/", "/etc", "/var", "/run", "/tmp", "/nix")  # noqa: S108 - paths we flag
SECRET_SUFFIXES = (".sock", ".key", ".pem", "/.ssh", "/.gnupg", "/.aws", "/.netrc")


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def sandbox_path_exposure(entry: str) -> str | None:
    """Why a sandbox-paths entry (`target=source`, `path`, optional trailing `?`) is risky."""
    text = entry[:-1] if entry.endswith("?") else entry
    source = text.split("=", 1)[1] if "=" in text else text
    source = source.rstrip("/") or "/"
    if source in WHOLE_TREES:
        return f"all of {source}"
    for prefix, what in SENSITIVE_PREFIXES:
        if _under(source, prefix):
            return what
    for suffix in SECRET_SUFFIXES:
        if source.endswith(suffix) or f"{suffix}/" in source:
            return "a secret or socket"
    return None


def _file(setting: Setting | None, facts: Facts) -> str:
    return facts.nix_conf_path if setting is None else setting.file


def _line(setting: Setting | None) -> int | None:
    return None if setting is None else setting.line


def _shown(setting: Setting) -> str:
    return f"{setting.written} = {setting.value}".strip()


def _boolean_rule(facts: Facts, rule: Rule, name: str, default: bool, bad: bool) -> list[Finding]:
    value, setting = facts.nix_conf.boolean(name, default)
    if value != bad:
        return []
    evidence = _shown(setting) if setting else f"{name} is not set; the default is {bad}"
    return [
        rule.finding(
            evidence=evidence, setting=name, file=_file(setting, facts), line=_line(setting)
        )
    ]


def _trusted_users(facts: Facts) -> list[Finding]:
    findings = []
    for entry, setting in facts.nix_conf.items("trusted-users"):
        if entry == "root":
            continue
        if entry == "*":
            evidence = "trusted-users contains '*': every user that can reach the daemon"
        elif entry.startswith("@"):
            members = facts.accounts.group_members(entry[1:])
            if members is None:
                evidence = f"trusted-users contains {entry} (no such group in /etc/group)"
            else:
                shown = ", ".join(members) if members else "no members now"
                evidence = f"trusted-users contains {entry} ({shown})"
        else:
            evidence = f"trusted-users contains {entry}"
        findings.append(
            TRUSTED_USERS.finding(
                evidence=evidence,
                setting="trusted-users",
                file=setting.file,
                line=setting.line,
                fix="trusted-users = root   # give builder keys a nixwarden gate instead",
            )
        )
    return findings


def _substituters(facts: Facts) -> list[Finding]:
    findings = []
    for name in ("substituters", "trusted-substituters"):
        for url, setting in facts.nix_conf.items(name):
            try:
                query = dict(parse_qsl(urlsplit(url).query))
            except ValueError:
                continue
            if query.get("trusted") in ("1", "true"):
                findings.append(
                    SUBSTITUTER_TRUSTED.finding(
                        evidence=f"{setting.written} contains {url}",
                        setting=name,
                        file=setting.file,
                        line=setting.line,
                    )
                )
            if name == "trusted-substituters" and url.lower().startswith("http://"):
                findings.append(
                    TRUSTED_SUBSTITUTER_HTTP.finding(
                        evidence=f"{setting.written} contains {url}",
                        setting=name,
                        file=setting.file,
                        line=setting.line,
                        fix=f"trusted-substituters = https://{url[7:]}",
                    )
                )
    return findings


def _build_users_group(facts: Facts) -> list[Finding]:
    setting = facts.nix_conf.last("build-users-group")
    if setting is None or setting.value != "":
        return []
    if facts.daemon_uid not in (None, 0):
        return []
    auto, _ = facts.nix_conf.boolean("auto-allocate-uids", False)
    if auto:
        return []
    who = "root" if facts.daemon_uid == 0 else "root (assumed)"
    return [
        BUILD_USERS_GROUP_EMPTY.finding(
            evidence=f"{_shown(setting)} and the daemon runs as {who}",
            setting="build-users-group",
            file=setting.file,
            line=setting.line,
        )
    ]


def _sandbox(facts: Facts) -> list[Finding]:
    setting = facts.nix_conf.last("sandbox")
    mode = setting.value if setting else "true"
    if mode in ("false", "relaxed"):
        assert setting is not None
        return [
            SANDBOX_DISABLED.finding(
                evidence=_shown(setting),
                setting="sandbox",
                file=setting.file,
                line=setting.line,
            )
        ]
    if mode != "true":
        return []  # an invalid value: reported as nixconf-invalid
    fallback, fallback_setting = facts.nix_conf.boolean("sandbox-fallback", True)
    if not fallback:
        return []
    evidence = (
        _shown(fallback_setting)
        if fallback_setting
        else "sandbox-fallback is not set; the default is true"
    )
    return [
        SANDBOX_FALLBACK.finding(
            evidence=evidence,
            setting="sandbox-fallback",
            file=_file(fallback_setting, facts),
            line=_line(fallback_setting),
        )
    ]


def _features(facts: Facts) -> list[Finding]:
    findings = []
    for feature, setting in facts.nix_conf.items("experimental-features"):
        if feature in RISKY:
            findings.append(
                RISKY_FEATURES.finding(
                    evidence=f"{setting.written} contains {feature}: {RISKY[feature]}",
                    setting="experimental-features",
                    file=setting.file,
                    line=setting.line,
                )
            )
    return findings


def _socket_note(facts: Facts) -> str:
    """The daemon socket's directory may already narrow who connects: say so."""
    info = facts.stat(facts.socket_dir_path)
    if info is None or info.mode & 0o001:
        return ""
    group = facts.accounts.group_name(info.gid)
    if info.mode & 0o010:
        return f" (the socket directory admits only root and group {group})"
    return " (the socket directory admits only its owner)"


def _allowed_users(facts: Facts) -> list[Finding]:
    items = facts.nix_conf.items("allowed-users")
    note = _socket_note(facts)
    if facts.nix_conf.last("allowed-users") is None and not items:
        return [
            ALLOWED_USERS_EVERYONE.finding(
                evidence="allowed-users is not set; the default is *" + note,
                setting="allowed-users",
                file=facts.nix_conf_path,
            )
        ]
    return [
        ALLOWED_USERS_EVERYONE.finding(
            evidence=f"{setting.written} contains *" + note,
            setting="allowed-users",
            file=setting.file,
            line=setting.line,
        )
        for item, setting in items
        if item == "*"
    ][:1]


def _sandbox_paths(facts: Facts) -> list[Finding]:
    findings = []
    for entry, setting in facts.nix_conf.items("sandbox-paths"):
        exposure = sandbox_path_exposure(entry)
        if exposure:
            findings.append(
                SANDBOX_PATHS.finding(
                    evidence=f"{setting.written} contains {entry}: {exposure}",
                    setting="sandbox-paths",
                    file=setting.file,
                    line=setting.line,
                )
            )
    return findings


MAX_INVALID_PER_FILE = 3


def _problems(facts: Facts) -> list[Finding]:
    findings = []
    invalid_count: dict[str, int] = {}
    for problem in facts.nix_conf.problems:
        file, line = problem.file, problem.line
        match problem.kind:
            case ProblemKind.ILLEGAL_LINE | ProblemKind.BAD_VALUE:
                count = invalid_count.get(problem.file, 0) + 1
                invalid_count[problem.file] = count
                if count <= MAX_INVALID_PER_FILE:
                    what = "illegal line" if problem.kind is ProblemKind.ILLEGAL_LINE else "value"
                    findings.append(
                        INVALID.finding(
                            evidence=f"{what}: {problem.detail!r}",
                            setting=problem.setting,
                            file=file,
                            line=line,
                        )
                    )
            case ProblemKind.INCLUDE_MISSING:
                findings.append(
                    INCLUDE_MISSING.finding(
                        evidence=f"include {problem.detail}: no such file",
                        fix=f"!include {problem.detail}   # or create the file",
                        file=file,
                        line=line,
                    )
                )
            case ProblemKind.OPTIONAL_INCLUDE_MISSING:
                findings.append(
                    OPTIONAL_INCLUDE_MISSING.finding(
                        evidence=f"!include {problem.detail}: no such file",
                        fix=f"# create {problem.detail}, or remove the !include",
                        file=file,
                        line=line,
                    )
                )
            case ProblemKind.INCLUDE_UNREADABLE:
                findings.append(
                    INCLUDE_UNREADABLE.finding(evidence=problem.detail, file=file, line=line)
                )
            case ProblemKind.INCLUDE_CYCLE | ProblemKind.INCLUDE_TOO_DEEP:
                detail = (
                    f"cycle: {problem.detail}"
                    if problem.kind is ProblemKind.INCLUDE_CYCLE
                    else f"includes nested too deeply at {problem.detail}"
                )
                findings.append(INCLUDE_CYCLE.finding(evidence=detail, file=file, line=line))
            case ProblemKind.UNKNOWN_SETTING:
                findings.append(
                    UNKNOWN_SETTING.finding(
                        evidence=f"unknown setting {problem.detail!r}",
                        setting=problem.setting,
                        file=file,
                        line=line,
                    )
                )
    for file, count in invalid_count.items():
        if count > MAX_INVALID_PER_FILE:
            findings.append(
                INVALID.finding(
                    evidence=f"{count - MAX_INVALID_PER_FILE} more rejected lines in this file",
                    file=file,
                )
            )
    return findings


def _daemon_env(facts: Facts) -> list[Finding]:
    if not facts.daemon_env:
        return []
    findings = []
    for name, value in sorted(facts.daemon_env.items()):
        if name == "NIX_CONF_DIR" and value.rstrip("/") + "/nix.conf" == facts.nix_conf_path:
            continue
        findings.append(
            DAEMON_CONF_DIR.finding(
                evidence=f"the running nix-daemon has {name}={value[:200]}",
                fix=(
                    f"nixwarden audit --nix-conf {value.rstrip('/')}/nix.conf"
                    if name == "NIX_CONF_DIR"
                    else f"# remove {name} from the nix-daemon's environment"
                ),
            )
        )
    return findings


def check(facts: Facts) -> list[Finding]:
    findings: list[Finding] = []
    if facts.nix_conf_missing:
        findings.append(MAIN_MISSING.finding(evidence=f"{facts.nix_conf_path} does not exist"))
    findings += _trusted_users(facts)
    findings += _boolean_rule(facts, REQUIRE_SIGS_OFF, "require-sigs", True, False)
    findings += _substituters(facts)
    findings += _build_users_group(facts)
    findings += _sandbox(facts)
    findings += _boolean_rule(facts, FILTER_SYSCALLS_OFF, "filter-syscalls", True, False)
    findings += _boolean_rule(facts, ALLOW_NEW_PRIVILEGES, "allow-new-privileges", False, True)
    findings += _boolean_rule(facts, ACCEPT_FLAKE_CONFIG, "accept-flake-config", False, True)
    findings += _boolean_rule(
        facts, UNSAFE_NATIVE, "allow-unsafe-native-code-during-evaluation", False, True
    )
    findings += _features(facts)
    findings += _allowed_users(facts)
    findings += _sandbox_paths(facts)
    findings += _problems(facts)
    findings += _daemon_env(facts)
    return findings
