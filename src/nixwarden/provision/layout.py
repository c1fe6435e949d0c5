"""Where a builder's and a client's pieces live: every path and group name, overridable.

The defaults are Debian's (sshd reads `/etc/ssh/sshd_config.d/*.conf`, ssh
`/etc/ssh/ssh_config.d/*.conf`, Nix `/etc/nix/machines`). `--root DIR` puts every one
of them under DIR, and the files written there name the paths under DIR too, so the
builder works from there as it is (the test suite runs whole builders that way, beside
the machine's own); each path can also be named on its own.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass

from nixwarden.errors import UsageError

GATE_GROUP = "nixwarden-gate"
LOG_GROUP = "nixwarden-log"
DAEMON_SOCKET_DIR = "/nix/var/nix/daemon-socket"
# A path that goes into sshd_config, an authorized_keys command, a machines line or
# NIX_SSHOPTS, all of which split on spaces and some of which a shell reads.
SAFE_PATH = re.compile(r"/[A-Za-z0-9._/+-]*")
GROUP_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def safe_path(option: str, path: str) -> str:
    if not SAFE_PATH.fullmatch(path) or "/../" in f"{path}/":
        raise UsageError(
            f"{option} {path!r}: an absolute path of letters, digits and ._/+- only "
            "(it is written into files that split on spaces)"
        )
    return os.path.normpath(path)


def _interpreter() -> str:
    """This venv's `python3`, however nixwarden was started (`python`, `python3.11`), so the
    key lines it writes do not depend on that."""
    candidate = os.path.join(os.path.dirname(sys.executable), "python3")
    return candidate if os.access(candidate, os.X_OK) else sys.executable


def _under(root: str, path: str) -> str:
    return path if root == "/" else os.path.join(root, path.lstrip("/"))


@dataclass(frozen=True)
class BuilderLayout:
    root: str = "/"
    config: str = "/etc/nixwarden/config.toml"
    keys_dir: str = "/etc/nixwarden/authorized_keys"
    sshd_config: str = "/etc/ssh/sshd_config"
    sshd_dropin: str = "/etc/ssh/sshd_config.d/nixwarden.conf"
    sshd_pid_file: str = "/run/sshd.pid"
    tmpfiles: str = "/etc/tmpfiles.d/nixwarden.conf"
    nix_conf: str = "/etc/nix/nix.conf"
    daemon_socket_dir: str = DAEMON_SOCKET_DIR
    gate_group: str = GATE_GROUP
    log_group: str = LOG_GROUP
    python: str = _interpreter()
    launcher: str = os.path.join(os.path.dirname(sys.executable), "nixwarden-gate")
    # What a new config file's [gate] and [tenants] name (an existing config decides).
    audit_log: str = "/var/log/nixwarden/audit.jsonl"
    state_dir: str = "/run/nixwarden"
    tenants_root: str = "/var/lib/nixwarden/tenants"

    @classmethod
    def from_options(cls, root: str | None = None, **given: str | None) -> BuilderLayout:
        """Defaults under `root`, then each path given explicitly (None: not given)."""
        base = safe_path("--root", root) if root else "/"
        values: dict[str, str] = {}
        for name in (
            "config", "keys_dir", "sshd_config", "sshd_dropin", "sshd_pid_file",
            "tmpfiles", "nix_conf", "audit_log", "state_dir", "tenants_root",
        ):  # fmt: skip
            default = getattr(cls, name)
            values[name] = _under(base, default)
        for name, value in given.items():
            if value is None:
                continue
            if name in ("gate_group", "log_group"):
                if not GROUP_NAME.fullmatch(value):
                    raise UsageError(f"--{name.replace('_', '-')} {value!r}: not a group name")
                values[name] = value
            else:
                values[name] = safe_path(f"--{name.replace('_', '-')}", value)
        return cls(root=base, **values)

    @property
    def compiled(self) -> str:
        directory, name = os.path.split(self.config)
        return os.path.join(directory, f".{name}.compiled")

    def keys_file(self, user: str) -> str:
        return os.path.join(self.keys_dir, user)

    def gate_command(self) -> list[str]:
        """The interpreter (isolated) and the gate's lean launcher, as key lines run them."""
        return [self.python, "-I", self.launcher]


@dataclass(frozen=True)
class ClientLayout:
    """The three files `client add-builder` edits, and who owns new ones."""

    ssh_config: str
    known_hosts: str
    machines: str
    system: bool  # root's system files (else the user's own)
    uses_default_ssh_config: bool  # False: ssh must be told `-F ssh_config`

    @classmethod
    def from_options(
        cls,
        *,
        root: str | None,
        ssh_config: str | None,
        known_hosts: str | None,
        machines: str | None,
        system: bool,
        home: str,
    ) -> ClientLayout:
        base = safe_path("--root", root) if root else "/"
        if system:
            defaults = (
                _under(base, "/etc/ssh/ssh_config.d/nixwarden.conf"),
                _under(base, "/etc/ssh/ssh_known_hosts"),
                _under(base, "/etc/nix/machines"),
            )
        else:
            home = safe_path("$HOME", home)
            defaults = (
                os.path.join(home, ".ssh", "config"),
                os.path.join(home, ".ssh", "known_hosts"),
                os.path.join(home, ".config", "nix", "machines"),
            )
        chosen = [
            safe_path(option, value) if value else default
            for option, value, default in zip(
                ("--ssh-config", "--known-hosts", "--machines"),
                (ssh_config, known_hosts, machines),
                defaults,
                strict=True,
            )
        ]
        return cls(
            ssh_config=chosen[0],
            known_hosts=chosen[1],
            machines=chosen[2],
            system=system,
            uses_default_ssh_config=base == "/" and not ssh_config,
        )
