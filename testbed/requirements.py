"""Everything the testbed, the demo, the bench and the system tests need from the machine.

This is the one place a new need is declared. `scripts/bootstrap.sh` installs and creates
each of these (its PACKAGES list and its SYSTEM STATE manifest), and
tests/unit/test_bootstrap_manifest.py fails naming any that the bootstrap does not state,
so the suite cannot pass on a leftover of earlier work. The harness enforces the
declaration at run time: `harness.which` refuses a tool that is not in TOOLS, and
`Users.create` a group that is not in GROUPS.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# Debian's nix-setup-systemd lets only this group reach the daemon socket.
NIX_USERS_GROUP = "nix-users"
# The daemon's build users (`build-users-group` in the harness's nix.conf).
BUILD_USERS_GROUP = "nixbld"
# The harness daemon's `trusted-users`.
TRUSTED_GROUP = "nixwarden-trusted"
# The gate users' group that may append to the audit log (see docs/gate.md).
LOG_GROUP = "nixwarden-log"

GROUPS: Mapping[str, str] = {
    NIX_USERS_GROUP: "the test users that may reach the nix-daemon's socket",
    BUILD_USERS_GROUP: "the nix-daemon's build users",
    TRUSTED_GROUP: "the harness daemon's trusted-users",
    LOG_GROUP: "the gate users that may append to the shared audit log",
}

# The nix-daemon runs builds as these (members of BUILD_USERS_GROUP).
USERS: tuple[str, ...] = tuple(f"{BUILD_USERS_GROUP}{n}" for n in range(1, 11))


@dataclass(frozen=True)
class Directory:
    """A directory that must exist before the harness runs, with its mode and owner."""

    mode: int
    owner: str | None  # "user:group", or None when any owner will do
    why: str


DIRECTORIES: Mapping[str, Directory] = {
    "/nix/var/nix/daemon-socket": Directory(
        0o770, "root:nix-users", "the daemon's socket, reachable by nix-users only"
    ),
    "/run/sshd": Directory(0o755, None, "sshd's privilege-separation directory"),
}

# Started by the harness on the default socket with its own nix.conf (not by systemd:
# containers and CI have none); the bootstrap installs it.
DAEMONS: tuple[str, ...] = ("nix-daemon",)

# Every program the testbed, demo, bench or system tests start (and the provisioning
# commands they drive), and the Debian package that ships it (checked against dpkg by
# tests/system/test_bootstrap_state.py).
TOOLS: Mapping[str, str] = {
    "nix": "nix-bin",
    "nix-build": "nix-bin",
    "nix-daemon": "nix-bin",
    "nix-env": "nix-bin",
    "nix-hash": "nix-bin",
    "nix-instantiate": "nix-bin",
    "nix-store": "nix-bin",
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "ssh-keyscan": "openssh-client",
    "bwrap": "bubblewrap",
    "busybox": "busybox-static",
    "systemd-analyze": "systemd",
    "systemd-tmpfiles": "systemd",
    "setpriv": "util-linux",
    "unshare": "util-linux",
    "mount": "mount",
    "umount": "mount",
    "mkfs.ext4": "e2fsprogs",  # tenant disk images (tenants.disk)
    "groupadd": "passwd",
    "groupdel": "passwd",
    "gpasswd": "passwd",
    "useradd": "passwd",
    "usermod": "passwd",
    "userdel": "passwd",
    "pkill": "procps",
    "pgrep": "procps",
    "time": "time",
    "dpkg-query": "dpkg",
    "cat": "coreutils",
    "chmod": "coreutils",
    "chown": "coreutils",
    "df": "coreutils",
    "du": "coreutils",
    "mv": "coreutils",
    "id": "coreutils",
    "ls": "coreutils",
    "rm": "coreutils",
    "sha256sum": "coreutils",
    # run by the tenant-limit tests' builds, inside the tenant sandbox (from the host's /usr)
    "head": "coreutils",
    "tr": "coreutils",
    "sleep": "coreutils",
    "timeout": "coreutils",
    "true": "coreutils",
}

# Packages that ship no program above but that the bootstrap needs.
OTHER_PACKAGES: Mapping[str, str] = {
    "python3-venv": "the .venv the bootstrap creates with Debian's python3",
    "nix-setup-systemd": "nix-users and the daemon socket's directory, as on a Debian builder",
}

# What the harness checks before every run: the tools the sshd, daemon and builder need.
HARNESS_TOOLS: tuple[str, ...] = (
    "nix",
    "nix-store",
    "nix-daemon",
    "nix-build",
    "sshd",
    "ssh",
    "ssh-keygen",
    "bwrap",
)


def packages() -> frozenset[str]:
    """Every Debian package the bootstrap must install."""
    return frozenset(TOOLS.values()) | frozenset(OTHER_PACKAGES)
