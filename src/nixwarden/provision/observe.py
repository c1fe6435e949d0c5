"""Reading what the planners need from the machine (reads only; changes nothing)."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import stat
from collections.abc import Iterable

from nixwarden import config as config_module
from nixwarden.audit import nixconf
from nixwarden.display import escape
from nixwarden.errors import InvalidInput
from nixwarden.provision.builder_plan import USER_COMMENT, BuilderWorld, UnixUser
from nixwarden.provision.client_plan import ClientWorld, FileState
from nixwarden.provision.execute import read_file
from nixwarden.provision.layout import BuilderLayout, ClientLayout

MAX_KEYS_FILES = 4096
MAX_KEYS_FILE = 1 << 20


def _owner_names(info: os.stat_result) -> tuple[int, str, str]:
    try:
        owner = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        owner = str(info.st_uid)
    try:
        group = grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        group = str(info.st_gid)
    return stat.S_IMODE(info.st_mode), owner, group


def _existing(path: str) -> tuple[bytes, tuple[int, str, str]] | None:
    """A regular file's bytes and (mode, owner, group); None when there is no file."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        raise InvalidInput(f"{escape(path)}: not a regular file; look at it and remove it")
    data = read_file(path)
    if data is None:
        return None
    return data, _owner_names(info)


def unix_user(name: str) -> UnixUser | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return _from_entry(entry)


def _from_entry(entry: pwd.struct_passwd) -> UnixUser:
    try:
        primary = grp.getgrgid(entry.pw_gid).gr_name
    except KeyError:
        primary = str(entry.pw_gid)
    return UnixUser(entry.pw_name, entry.pw_uid, primary, entry.pw_gecos, entry.pw_shell)


def keys_files(layout: BuilderLayout) -> dict[str, bytes]:
    try:
        names = sorted(os.listdir(layout.keys_dir))[:MAX_KEYS_FILES]
    except FileNotFoundError:
        return {}
    found = {}
    for name in names:
        if name.startswith("."):
            continue  # a temporary file of an interrupted write
        data = read_file(os.path.join(layout.keys_dir, name), MAX_KEYS_FILE)
        if data is not None:
            found[name] = data
    return found


def allowed_users(path: str) -> tuple[str, ...]:
    """The effective `allowed-users` of the daemon's nix.conf (Nix's default: `*`)."""

    def read(name: str) -> bytes:
        data = read_file(name)
        if data is None:
            raise FileNotFoundError(name)
        return data

    conf, _missing = nixconf.load([path], read)
    if not conf.is_set("allowed-users"):
        return ("*",)
    return tuple(token for token, _setting in conf.items("allowed-users"))


def socket_group(directory: str) -> str | None:
    """The group that lets users reach the daemon socket (Debian: nix-users), or None when
    everyone may (or the directory is not there)."""
    try:
        info = os.stat(directory)
    except OSError:
        return None
    if info.st_mode & 0o001 or not info.st_mode & 0o010:
        return None
    try:
        return grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        return None


def builder_world(layout: BuilderLayout, names: Iterable[str] = ()) -> BuilderWorld:
    """The machine as the builder planners see it. `names`: unix users the plan is about;
    every user nixwarden made (its comment says so) is read too."""
    config = _existing(layout.config)
    if config is not None and len(config[0]) > config_module.MAX_CONFIG_BYTES:
        raise InvalidInput(f"{layout.config}: larger than {config_module.MAX_CONFIG_BYTES} bytes")
    tmpfiles = _existing(layout.tmpfiles)
    nix_conf = _existing(layout.nix_conf)
    keys = keys_files(layout)
    users: dict[str, UnixUser | None] = {name: unix_user(name) for name in (*names, *keys)}
    marker = USER_COMMENT.format("")
    for entry in pwd.getpwall():
        if entry.pw_gecos.startswith(marker):
            users[entry.pw_name] = _from_entry(entry)
    return BuilderWorld(
        config=config[0] if config else None,
        config_owner=config[1] if config else None,
        tmpfiles=tmpfiles[0] if tmpfiles else None,
        nix_conf=nix_conf[0] if nix_conf else None,
        nix_conf_owner=nix_conf[1] if nix_conf else None,
        allowed_users=allowed_users(layout.nix_conf),
        keys_files=keys,
        users=users,
        socket_group=socket_group(layout.daemon_socket_dir),
    )


def client_world(layout: ClientLayout) -> ClientWorld:
    states = {}
    for path in (layout.ssh_config, layout.known_hosts, layout.machines):
        found = None
        with contextlib.suppress(FileNotFoundError):
            found = _existing(path)
        states[path] = FileState(found[0], found[1]) if found else FileState(None, None)
    return ClientWorld(states)
