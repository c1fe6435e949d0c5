"""The imperative shell: reads the machine (or a tree under --root) into `Facts`.

Every path is a path of the audited system; `System` maps it to the host, resolving
symlinks inside the root so an absolute link in an image never escapes to the host.
Only regular files are read, and only up to a size limit, so a configuration pointing at
/dev/zero or a FIFO cannot hang the audit. The one program run is `nix --version`, and
only for the live system (never a binary from an image).
"""

from __future__ import annotations

import contextlib
import glob
import os
import posixpath
import re
import stat as stat_module
from collections.abc import Mapping
from dataclasses import dataclass

from nixwarden import config as nw_config
from nixwarden.audit import authorized_keys, machines, nixconf, sshd
from nixwarden.audit.accounts import Accounts
from nixwarden.audit.facts import Facts, KeyFile, NixwardenFacts
from nixwarden.audit.model import FileStat
from nixwarden.errors import InvalidInput, NixwardenError
from nixwarden.nix import commands
from nixwarden.nix.programs import find_nix_program

MAX_FILE = 8 << 20
MAX_SYMLINKS = 40
DEFAULT_NIX_CONF_DIR = "/etc/nix"
DEFAULT_SSHD_CONFIG = "/etc/ssh/sshd_config"
SOCKET_DIR = "/nix/var/nix/daemon-socket"
DAEMON_ENV = ("NIX_CONF_DIR", "NIX_CONFIG", "NIX_USER_CONF_FILES")
_STORE_NAME = re.compile(r"/nix/store/[0-9a-z]{32}-(nix|lix)-(\d+\.\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class System:
    """The audited file system: `/` for the live machine, or a directory tree."""

    root: str = "/"

    @property
    def live(self) -> bool:
        return self.root == "/"

    def host_path(self, path: str) -> str:
        """Where `path` of the audited system is on the host (symlinks resolved inside root)."""
        if self.live:
            return path
        parts = [p for p in posixpath.normpath("/" + path).split("/") if p]
        resolved: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = os.path.join(self.root, *resolved, part)
            try:
                target = os.readlink(candidate)
            except OSError:
                resolved.append(part)
                continue
            hops += 1
            if hops > MAX_SYMLINKS:
                raise OSError(40, "Too many levels of symbolic links", path)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
        return os.path.join(self.root, *resolved)

    def read(self, path: str) -> bytes:
        host = self.host_path(path)
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(host, flags)
        try:
            info = os.fstat(fd)
            if stat_module.S_ISDIR(info.st_mode):
                raise IsADirectoryError(21, "Is a directory", path)
            if not stat_module.S_ISREG(info.st_mode):
                raise OSError(22, "not a regular file", path)
            chunks = []
            size = 0
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_FILE:
                    raise OSError(27, f"larger than {MAX_FILE >> 20} MiB", path)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def stat(self, path: str) -> FileStat | None:
        try:
            info = os.stat(self.host_path(path))
        except (OSError, ValueError):
            return None
        return FileStat(path, info.st_uid, info.st_gid, info.st_mode)

    def glob(self, pattern: str) -> list[str]:
        if self.live:
            return sorted(glob.glob(pattern))
        prefix = self.root.rstrip("/")
        return sorted(p[len(prefix) :] for p in glob.glob(prefix + pattern))

    def read_optional(self, path: str) -> bytes | None:
        try:
            return self.read(path)
        except OSError:
            return None


@dataclass(frozen=True)
class Options:
    root: str | None = None
    nix_conf: str | None = None
    machines: str | None = None
    sshd_config: str | None = None
    config: str | None = None


def _must_read(system: System, path: str, what: str) -> bytes:
    try:
        return system.read(path)
    except OSError as error:
        where = path if system.live else f"{path} (under {system.root})"
        raise InvalidInput(f"{what} {where}: cannot read: {error.strerror or error}") from None


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
        except FileNotFoundError:
            pass
        except OSError as error:
            raise InvalidInput(f"{main}: cannot read: {error.strerror or error}") from None
    # The daemon (root) also reads root's user configuration, XDG system dirs first.
    root_home = accounts.users["root"].home if "root" in accounts.users else "/root"
    layers = [main, "/etc/xdg/nix/nix.conf", posixpath.join(root_home, ".config/nix/nix.conf")]
    conf, missing = nixconf.load(layers, system.read)
    return main, conf, main in missing


def _machines(
    system: System, options: Options, conf: nixconf.NixConf, main: str
) -> machines.Machines:
    if options.machines:
        data = _must_read(system, options.machines, "--machines")
        return machines.parse(data, options.machines, system.read)
    setting = conf.last("builders")
    if setting is None:
        default = "@" + posixpath.join(posixpath.dirname(main), "machines")
        return machines.parse_builders(default, main, 0, system.read)
    return machines.parse_builders(setting.value, setting.file, setting.line, system.read)


def _sshd(system: System, options: Options) -> tuple[str, sshd.SshdConfig | None]:
    path = options.sshd_config or DEFAULT_SSHD_CONFIG
    if options.sshd_config:
        data = _must_read(system, path, "--sshd-config")
    else:
        try:
            data = system.read(path)
        except FileNotFoundError:
            return path, None
        except OSError as error:
            raise InvalidInput(f"{path}: cannot read: {error.strerror or error}") from None
    return path, sshd.parse(data, path, system.read, system.glob)


def _expand(pattern: str, user: str, uid: int, home: str) -> str:
    out = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "%" and index + 1 < len(pattern):
            token = pattern[index + 1]
            out.append({"h": home, "u": user, "U": str(uid), "%": "%"}.get(token, "%" + token))
            index += 2
            continue
        out.append(char)
        index += 1
    text = "".join(out)
    return text if text.startswith("/") else posixpath.join(home, text)


def _key_files(
    system: System, accounts: Accounts, config: sshd.SshdConfig | None
) -> tuple[KeyFile, ...]:
    result = []
    for user in sorted(accounts.users.values(), key=lambda u: u.name):
        patterns: list[str] = []
        for unknown in (False, True):
            decided = (
                config.effective(user.name, accounts.groups_of(user.name), unknown_matches=unknown)
                if config
                else {}
            )
            value, _ = sshd.value(decided, "authorizedkeysfile")
            patterns += [p for p in value.split() if p.lower() != "none"]
        for pattern in dict.fromkeys(patterns):
            if not user.home and not pattern.startswith("/"):
                continue
            path = _expand(pattern, user.name, user.uid, user.home)
            data = system.read_optional(path)
            if data is None:
                continue
            keys, problems = authorized_keys.parse(data)
            result.append(KeyFile(user.name, path, keys, problems))
    return tuple(result)


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
        with contextlib.suppress(OSError):
            target = system.host_path(link)
            relative = "/" + os.path.relpath(target, system.root)
            match = _STORE_NAME.search(relative)
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
        except OSError as error:
            raise InvalidInput(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        config = nw_config.Config.from_toml(data, path)
    except NixwardenError as error:
        return NixwardenFacts(path=path, error=str(error), text=data)
    return NixwardenFacts(path=path, config=config, text=data)


def gather(options: Options, env: Mapping[str, str]) -> Facts:
    root = options.root or "/"
    if root != "/":
        if not os.path.isdir(root):
            raise InvalidInput(f"--root {root}: not a directory")
        root = os.path.abspath(root)
    system = System(root)
    accounts = Accounts.parse(
        system.read_optional("/etc/passwd") or b"", system.read_optional("/etc/group") or b""
    )
    main, conf, missing = _nix_conf(system, options, env, accounts)
    sshd_path, sshd_config = _sshd(system, options)
    nixwarden = _nixwarden(system, options, env)
    daemon_uid, daemon_env = _daemon_processes() if system.live else (None, None)
    version, version_source = _version(system)
    return Facts(
        nix_conf_path=main,
        nix_conf=conf,
        nix_conf_missing=missing,
        machines=_machines(system, options, conf, main),
        sshd_path=sshd_path,
        sshd=sshd_config,
        accounts=accounts,
        key_files=_key_files(system, accounts, sshd_config),
        stat=system.stat,
        socket_dir_path=SOCKET_DIR,
        daemon_uid=daemon_uid,
        daemon_env=daemon_env,
        nix_version=version,
        version_source=version_source,
        nixwarden=nixwarden,
    )
