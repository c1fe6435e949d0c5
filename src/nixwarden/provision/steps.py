"""The steps of a plan: what one piece of the machine must look like (pure data).

Each step says what must be true when it is done, never how to get there from where
things are: `execute` checks it first (a step already true is skipped, which is what
makes every command idempotent) and makes it true otherwise. Owners are names,
resolved when the step runs (a user may be created by an earlier step of the plan).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

ROOT = "root"


@dataclass(frozen=True)
class Directory:
    path: str
    mode: int
    owner: str | None = ROOT  # None: whoever runs the command (a user's own files)
    group: str | None = ROOT
    # False: a directory others own too (/etc/ssh/sshd_config.d), made when missing and
    # otherwise left as it is.
    exact: bool = True

    def describe(self) -> str:
        return f"directory {self.path} ({self.mode:04o} {_owner(self.owner, self.group)})"


@dataclass(frozen=True)
class File:
    """A whole file: exactly `content`, `mode`, owner and group."""

    path: str
    content: bytes = field(repr=False)
    mode: int = 0o644
    owner: str | None = ROOT
    group: str | None = ROOT
    # The sshd main config to check a candidate drop-in against (`sshd -t`) before it is
    # put in place.
    sshd_check: str | None = None

    def describe(self) -> str:
        return f"write {self.path} ({self.mode:04o} {_owner(self.owner, self.group)})"


@dataclass(frozen=True)
class Absent:
    """No file at `path` (a file of ours: the name is removed, never followed)."""

    path: str

    def describe(self) -> str:
        return f"remove {self.path}"


@dataclass(frozen=True)
class AuditLog:
    """The gate's audit log: created empty when missing, never replaced or truncated;
    root's, appendable by `group`, append-only where the filesystem has the attribute."""

    path: str
    group: str
    mode: int = 0o620

    def describe(self) -> str:
        return f"audit log {self.path} ({self.mode:04o} root:{self.group}, append-only)"


@dataclass(frozen=True)
class Group:
    name: str

    def describe(self) -> str:
        return f"group {self.name}"


@dataclass(frozen=True)
class User:
    """A unix user nixwarden makes for a principal: a real login shell (sshd runs the forced
    command through it), no password that can ever match, so keys are the only way in."""

    name: str
    comment: str
    shell: str = "/bin/sh"
    groups: tuple[str, ...] = ()  # made a member at once (the Membership steps check it)

    def describe(self) -> str:
        return f"unix user {self.name} (shell {self.shell}, no password)"


@dataclass(frozen=True)
class Membership:
    user: str
    group: str
    member: bool = True

    def describe(self) -> str:
        if self.member:
            return f"add {self.user} to group {self.group}"
        return f"remove {self.user} from group {self.group}"


@dataclass(frozen=True)
class UserAbsent:
    """The user gone, its processes killed first and its home removed."""

    name: str

    def describe(self) -> str:
        return f"remove unix user {self.name} (its processes and home)"


@dataclass(frozen=True)
class TenantDirectory:
    config: str
    principal: str
    user: str

    def describe(self) -> str:
        return f"tenant store of {self.principal}, owned by {self.user}"


@dataclass(frozen=True)
class TenantAbsent:
    config: str
    principal: str

    def describe(self) -> str:
        return f"remove the tenant store of {self.principal}"


@dataclass(frozen=True)
class SessionDirectory:
    """What a tmpfiles.d `d` line makes; `systemd-tmpfiles --create` of the file makes it."""

    tmpfiles: str
    path: str
    mode: int
    owner: str
    group: str

    def describe(self) -> str:
        return f"apply {self.tmpfiles}: {self.path} ({self.mode:04o} {self.owner}:{self.group})"


@dataclass(frozen=True)
class SessionDirectoryAbsent:
    path: str

    def describe(self) -> str:
        return f"remove session state {self.path}"


@dataclass(frozen=True)
class Compiled:
    """The gate's compiled policy, current for the config holding exactly `config_content`."""

    config: str
    config_content: bytes = field(repr=False)

    def describe(self) -> str:
        return f"compile the gate's policy for {self.config}"


@dataclass(frozen=True)
class SshdReload:
    """sshd has read the drop-in holding `dropin_content`: it started after the drop-in was
    written, or was sent SIGHUP for this content (recorded in `stamp`). Nothing to do
    while sshd is not running: it reads the drop-in when it starts."""

    pid_file: str
    dropin: str
    dropin_content: bytes = field(repr=False)
    stamp: str = ""

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.dropin_content).hexdigest()

    def describe(self) -> str:
        return f"reload sshd (pid in {self.pid_file})"


@dataclass(frozen=True)
class SshdSettingsFor:
    """A check, changing nothing: sshd (`sshd -T -C user=…`) gives `user` the settings of the
    drop-in. Runs before a key is installed, so no key is live under other settings."""

    sshd_config: str
    user: str
    expected: tuple[tuple[str, str], ...]

    def describe(self) -> str:
        return f"check sshd's settings for {self.user}"


Step = (
    Directory
    | File
    | Absent
    | AuditLog
    | Group
    | User
    | Membership
    | UserAbsent
    | TenantDirectory
    | TenantAbsent
    | SessionDirectory
    | SessionDirectoryAbsent
    | Compiled
    | SshdReload
    | SshdSettingsFor
)
CHECKS = (SshdSettingsFor,)


def _owner(owner: str | None, group: str | None) -> str:
    if owner is None:
        return "yours"
    return f"{owner}:{group}"
