"""The imperative shell: reads the machine (or a tree under --root) into `Facts`.

Every path is a path of the audited system; `System` (system.py) resolves it inside
the root, never following a link out of it, and bounds every read; what a bound stops
comes back as a `Cut`. The one program run is `nix --version`, and only for the live
system (never a binary from an image).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from nixwarden import config as nw_config
from nixwarden.audit import authorized_keys, gatecmd, machines, nixconf, sshd
from nixwarden.audit.accounts import Accounts
from nixwarden.audit.facts import Facts, KeyFile, NixwardenFacts
from nixwarden.audit.model import Cut, CutKind, LimitReached
from nixwarden.audit.system import MAX_PATH, System
from nixwarden.display import escape
from nixwarden.errors import InvalidInput, NixwardenError
from nixwarden.nix import commands
from nixwarden.nix.programs import find_nix_program
from nixwarden.tenants import limits

__all__ = ["Options", "System", "gather", "load_config"]

DEFAULT_NIX_CONF_DIR = "/etc/nix"
DEFAULT_SSHD_CONFIG = "/etc/ssh/sshd_config"
SOCKET_DIR = "/nix/var/nix/daemon-socket"
DAEMON_ENV = ("NIX_CONF_DIR", "NIX_CONFIG", "NIX_USER_CONF_FILES")
MAX_GATE_CONFIGS = 64
_STORE_NAME = re.compile(r"/nix/store/[0-9a-z]{32}-(nix|lix)-(\d+\.\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class Options:
    root: str | None = None
    nix_conf: str | None = None
    machines: str | None = None
    sshd_config: str | None = None
    config: str | None = None


def _cannot_read(path: str, error: OSError) -> InvalidInput:
    return InvalidInput(f"{escape(path)}: cannot read: {error.strerror or error}")


def _must_read(system: System, path: str, what: str) -> bytes:
    try:
        return system.read(path)
    except OSError as error:
        where = path if system.live else f"{path} (under {system.root})"
        message = f"{what} {escape(where)}: cannot read: {error.strerror or error}"
        raise InvalidInput(message) from None


def _nix_conf(
    system: System, options: Options, env: Mapping[str, str], accounts: Accounts
) -> tuple[str, nixconf.NixConf, bool]:
    if options.nix_conf:
        main = options.nix_conf
        _must_read(system, main, "--nix-conf")
    else:
        conf_dir = env.get("NIX_CONF_DIR") if system.live else None
        main = posixpath.join(conf_dir or DEFAULT_NIX_CONF_DIR, "nix.conf")
        try:
            system.read(main)
        except (FileNotFoundError, LimitReached):
            pass  # absent: Nix's defaults (reported); too large: reported as cut
        except OSError as error:
            raise _cannot_read(main, error) from None
    # The daemon (root) also reads root's user configuration, XDG system dirs first.
    root_home = accounts.users["root"].home if "root" in accounts.users else "/root"
    layers = [main, "/etc/xdg/nix/nix.conf", posixpath.join(root_home, ".config/nix/nix.conf")]
    conf, missing = nixconf.load(layers, system.read, system.identity)
    return main, conf, main in missing


def _machines(
    system: System, options: Options, conf: nixconf.NixConf, main: str
) -> machines.Machines:
    if options.machines:
        data = _must_read(system, options.machines, "--machines")
        return machines.parse(data, options.machines, system.read, system.identity)
    setting = conf.last("builders")
    if setting is None:
        default = "@" + posixpath.join(posixpath.dirname(main), "machines")
        return machines.parse_builders(default, main, 0, system.read, system.identity)
    return machines.parse_builders(
        setting.value, setting.file, setting.line, system.read, system.identity
    )


def _sshd(system: System, options: Options) -> tuple[str, sshd.SshdConfig | None]:
    path = options.sshd_config or DEFAULT_SSHD_CONFIG
    if options.sshd_config:
        data = _must_read(system, path, "--sshd-config")
    else:
        try:
            data = system.read(path)
        except (FileNotFoundError, LimitReached):
            return path, None
        except OSError as error:
            raise _cannot_read(path, error) from None
    return path, sshd.parse(data, path, system.read, system.glob, system.identity)


_TOKEN = re.compile(r"%(.)", re.DOTALL)
MAX_KEY_FILE_PATTERNS = 32  # AuthorizedKeysFile names per user; real ones have one or two


def _expand(pattern: str, user: str, uid: int, home: str) -> str | None:
    """sshd's percent_expand of an AuthorizedKeysFile pattern; None if it cannot name a file
    (longer than PATH_MAX even after `%%` halves it)."""
    if len(pattern) > 2 * MAX_PATH:
        return None
    values = {"h": home, "u": user, "U": str(uid), "%": "%"}
    text = _TOKEN.sub(lambda token: values.get(token[1], token[0]), pattern)
    text = text if text.startswith("/") else posixpath.join(home, text)
    return text if len(text) <= MAX_PATH else None


def _key_files(
    system: System, accounts: Accounts, config: sshd.SshdConfig | None
) -> tuple[tuple[KeyFile, ...], list[Cut]]:
    result = []
    cuts = []
    patterns_cut = False
    for user in sorted(accounts.users.values(), key=lambda u: u.name):
        patterns: list[str] = []
        groups = accounts.groups_of(user.name)
        deciding: sshd.Line | None = None
        for unknown in (False, True):
            line = (
                config.decide("authorizedkeysfile", user.name, groups, unknown_matches=unknown)
                if config
                else None
            )
            deciding = deciding or line
            value = " ".join(line.args) if line else sshd.DEFAULTS["authorizedkeysfile"]
            patterns += [p for p in value.split() if p.lower() != "none"]
        distinct = list(dict.fromkeys(patterns))
        if len(distinct) > MAX_KEY_FILE_PATTERNS and not patterns_cut and deciding:
            patterns_cut = True
            detail = (
                f"AuthorizedKeysFile names {len(distinct)} files; the audit reads the first "
                f"{MAX_KEY_FILE_PATTERNS} for each user"
            )
            cuts.append(Cut(CutKind.INPUT, deciding.file, deciding.line, detail))
        for pattern in distinct[:MAX_KEY_FILE_PATTERNS]:
            if not user.home and not pattern.startswith("/"):
                continue
            path = _expand(pattern, user.name, user.uid, user.home)
            if path is None:
                continue
            data = system.read_optional(path)
            if data is None:
                continue
            parsed = authorized_keys.parse_file(data)
            if parsed.cut_at is not None:
                detail = (
                    f"more than {authorized_keys.MAX_KEYS} keys: the rest of the file was not read"
                )
                cuts.append(Cut(CutKind.INPUT, path, parsed.cut_at, detail))
            result.append(KeyFile(user.name, path, parsed.keys, parsed.problems))
    return tuple(result), cuts


def _daemon_processes() -> tuple[int | None, dict[str, str] | None]:
    """uid the nix-daemon runs as (0 if any instance is root) and its config environment."""
    uids: list[int] = []
    env: dict[str, str] = {}
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return None, None
    for pid in pids:
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/comm", "rb") as handle:
                if handle.read().strip() != b"nix-daemon":
                    continue
            with open(f"/proc/{pid}/status", "rb") as handle:
                for line in handle.read().decode("ascii", "replace").splitlines():
                    if line.startswith("Uid:"):
                        uids.append(int(line.split()[2]))
            with open(f"/proc/{pid}/environ", "rb") as handle:
                for item in handle.read().split(b"\0"):
                    name, _, value = item.decode("utf-8", "replace").partition("=")
                    if name in DAEMON_ENV:
                        env.setdefault(name, value)
    if not uids:
        return None, None
    return (0 if 0 in uids else uids[0]), env


def _version(system: System) -> tuple[str | None, str]:
    if system.live:
        program = find_nix_program("nix")
        try:
            text = commands.version(env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, nix=program)
        except NixwardenError as error:
            return None, f"{program} --version: {error}"
        return text, f"{program} --version"
    # An image: never run its binaries. Read the store path the profile points at, or dpkg.
    for link in (
        "/run/current-system/sw/bin/nix",
        "/nix/var/nix/profiles/default/bin/nix",
        "/root/.nix-profile/bin/nix",
    ):
        target = system.resolve(link)
        if target is not None:
            match = _STORE_NAME.search(target)
            if match:
                product = "Lix, like Nix" if match[1] == "lix" else "Nix"
                return f"nix ({product}) {match[2]}", f"store path of {link}"
    status = system.read_optional("/var/lib/dpkg/status")
    if status:
        for block in status.decode("utf-8", "replace").split("\n\n"):
            if re.search(r"^Package: nix-bin$", block, re.MULTILINE) and "installed" in block:
                found = re.search(r"^Version: (?:\d+:)?(\d+\.\d+(?:\.\d+)?)", block, re.MULTILINE)
                if found:
                    return f"nix (Nix) {found[1]}", "dpkg status of nix-bin"
    return None, "no nix binary or package found in the tree"


def load_config(data: bytes, path: str, system: System | None = None) -> NixwardenFacts:
    """nixwarden's configuration from bytes: loaded, or the reason it does not load.

    Whatever the parser raises becomes that reason, never a crash of the audit: a
    ConfigError names the key; a nesting too deep for the TOML parser (RecursionError),
    a document too large (MemoryError) or any other failure says so in one line."""
    try:
        config = nw_config.Config.from_toml(data, path)
    except NixwardenError as error:
        return NixwardenFacts(path=path, error=str(error), text=data)
    except RecursionError:
        return NixwardenFacts(path=path, error=f"{path}: nested too deeply to parse", text=data)
    except MemoryError:
        return NixwardenFacts(path=path, error=f"{path}: too large to parse", text=data)
    except Exception as error:  # the parser's failure is the finding, not the audit's end
        reason = f"cannot be parsed ({type(error).__name__})"
        return NixwardenFacts(path=path, error=f"{path}: {reason}", text=data)
    unenforceable = _unenforceable(config, system) if system is not None else {}
    return NixwardenFacts(path=path, config=config, text=data, unenforceable=unenforceable)


def _unenforceable(config: nw_config.Config, system: System) -> dict[str, str]:
    """principal → why its memory/cpu/tasks limits cannot be enforced on the audited system
    (its cgroup hierarchies: the live host's, or those inside --root), or its disk quota
    is not held while a session runs (no [tenants] disk_images)."""
    inside = system.resolve(config.tenants.cgroup_root)
    host = os.path.join(system.root, inside.lstrip("/")) if inside else "/nonexistent"
    tenants = replace(config.tenants, cgroup_root=host)
    found: dict[str, str] = {}
    for name, principal in config.principals.items():
        why = limits.unenforced(tenants, principal)
        if principal.store == "tenant" and why is not None:
            found[name] = escape(why.replace(host, config.tenants.cgroup_root))
    return found


def _nixwarden(system: System, options: Options, env: Mapping[str, str]) -> NixwardenFacts | None:
    if options.config:
        path = options.config
        data = _must_read(system, path, "--config")
    else:
        path = (env.get(nw_config.CONFIG_ENV) if system.live else None) or (
            nw_config.DEFAULT_CONFIG_PATH
        )
        try:
            data = system.read(path)
        except FileNotFoundError:
            return None
        except LimitReached:
            return NixwardenFacts(path=path, unread=True)
        except OSError as error:
            raise _cannot_read(path, error) from None
    return load_config(data, path, system)


def _absolute(path: str | None) -> bool:
    return path is None or path.startswith("/")


def _named_config(system: System, path: str) -> NixwardenFacts:
    try:
        data = system.read(path)
    except LimitReached:
        return NixwardenFacts(path=path, unread=True)
    except OSError as error:
        return NixwardenFacts(path=path, error=f"{path}: cannot read: {error.strerror or error}")
    return load_config(data, path, system)


def _gate_configs(
    system: System,
    accounts: Accounts,
    key_files: tuple[KeyFile, ...],
    sshd_config: sshd.SshdConfig | None,
    main: NixwardenFacts | None,
) -> tuple[dict[str, NixwardenFacts], list[Cut]]:
    """Every configuration a gate line names, read inside the root (at most 64)."""
    wanted: dict[str, tuple[str, int]] = {}  # path → the first line naming it
    for key_file in key_files:
        home = accounts.users[key_file.user].home if key_file.user in accounts.users else "/"
        for key in key_file.keys:
            gate = gatecmd.parse(key.command) if key.command is not None else None
            if gate is not None and gate.principal is not None:
                path = gatecmd.config_path(gate, home)
                wanted.setdefault(path, (key_file.path, key.line))
    if sshd_config is not None:
        for forced in sshd_config.lines:
            if forced.keyword != "forcecommand":
                continue
            gate = gatecmd.parse(" ".join(forced.args))
            # A relative --config depends on each user's home: left to the gate's refusal.
            if gate is not None and gate.principal is not None and _absolute(gate.config):
                wanted.setdefault(gatecmd.config_path(gate, "/"), (forced.file, forced.line))
    configs: dict[str, NixwardenFacts] = {}
    cuts = []
    for path, (file, line) in wanted.items():
        if main is not None and path == posixpath.normpath(main.path):
            configs[path] = main
        elif len(configs) >= MAX_GATE_CONFIGS:
            detail = f"gate lines name more than {MAX_GATE_CONFIGS} configurations: {path} not read"
            cuts.append(Cut(CutKind.INPUT, file, line, detail))
        else:
            configs[path] = _named_config(system, path)
    return configs, cuts


def gather(options: Options, env: Mapping[str, str]) -> Facts:
    root = options.root or "/"
    if root != "/":
        if not os.path.isdir(root):
            raise InvalidInput(f"--root {escape(root)}: not a directory")
        root = os.path.abspath(root)
    system = System(root)
    accounts = Accounts.parse(
        system.read_optional("/etc/passwd") or b"", system.read_optional("/etc/group") or b""
    )
    main, conf, missing = _nix_conf(system, options, env, accounts)
    sshd_path, sshd_config = _sshd(system, options)
    nixwarden = _nixwarden(system, options, env)
    machines_found = _machines(system, options, conf, main)
    daemon_uid, daemon_env = _daemon_processes() if system.live else (None, None)
    version, version_source = _version(system)
    key_files, key_cuts = _key_files(system, accounts, sshd_config)
    gate_configs, config_cuts = _gate_configs(system, accounts, key_files, sshd_config, nixwarden)
    cuts = (
        *conf.cuts,
        *machines_found.cuts,
        *(sshd_config.cuts if sshd_config else ()),
        *key_cuts,
        *config_cuts,
        *system.cuts(),
    )
    return Facts(
        nix_conf_path=main,
        nix_conf=conf,
        nix_conf_missing=missing,
        machines=machines_found,
        sshd_path=sshd_path,
        sshd=sshd_config,
        accounts=accounts,
        key_files=key_files,
        stat=system.stat,
        socket_dir_path=SOCKET_DIR,
        daemon_uid=daemon_uid,
        daemon_env=daemon_env,
        nix_version=version,
        version_source=version_source,
        nixwarden=nixwarden,
        gate_configs=gate_configs,
        cuts=cuts,
    )
