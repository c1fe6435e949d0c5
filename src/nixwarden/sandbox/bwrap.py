"""bubblewrap argv building: a pure description of a sandbox, turned into an argv list.

Shared by tenant stores and confine. Nothing here starts a program; callers hand
the argv to `nixwarden.process`.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from nixwarden.errors import InvalidInput


class MountKind(enum.Enum):
    RO_BIND = "--ro-bind"
    RO_BIND_TRY = "--ro-bind-try"
    BIND = "--bind"
    DEV_BIND = "--dev-bind"
    TMPFS = "--tmpfs"
    PROC = "--proc"
    DEV = "--dev"
    DIR = "--dir"
    SYMLINK = "--symlink"
    REMOUNT_RO = "--remount-ro"


class Namespace(enum.Enum):
    USER = "--unshare-user"
    PID = "--unshare-pid"
    IPC = "--unshare-ipc"
    UTS = "--unshare-uts"
    CGROUP = "--unshare-cgroup-try"
    NET = "--unshare-net"


@dataclass(frozen=True)
class Mount:
    kind: MountKind
    dest: str
    source: str | None = None  # binds: host path; symlinks: the link target

    def argv(self) -> list[str]:
        match self.kind:
            case (
                MountKind.RO_BIND
                | MountKind.RO_BIND_TRY
                | MountKind.BIND
                | MountKind.DEV_BIND
                | MountKind.SYMLINK
            ):
                if self.source is None:
                    raise InvalidInput(f"{self.kind.value} {self.dest}: needs a source")
                return [self.kind.value, self.source, self.dest]
            case MountKind.TMPFS | MountKind.PROC | MountKind.DEV | MountKind.DIR:
                return [self.kind.value, self.dest]
            case MountKind.REMOUNT_RO:
                return [self.kind.value, self.dest]


def ro_bind(source: str, dest: str | None = None) -> Mount:
    return Mount(MountKind.RO_BIND, dest or source, source)


def ro_bind_try(source: str, dest: str | None = None) -> Mount:
    return Mount(MountKind.RO_BIND_TRY, dest or source, source)


def bind(source: str, dest: str | None = None) -> Mount:
    return Mount(MountKind.BIND, dest or source, source)


def tmpfs(dest: str) -> Mount:
    return Mount(MountKind.TMPFS, dest)


def symlink(target: str, dest: str) -> Mount:
    return Mount(MountKind.SYMLINK, dest, target)


ALL_NAMESPACES = frozenset(Namespace)


@dataclass(frozen=True)
class Sandbox:
    """What a program sees. Order of `mounts` matters: later mounts cover earlier ones."""

    mounts: tuple[Mount, ...] = ()
    unshare: frozenset[Namespace] = ALL_NAMESPACES - {Namespace.NET}
    uid: int | None = None
    gid: int | None = None
    hostname: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    chdir: str | None = None
    die_with_parent: bool = True
    new_session: bool = True
    drop_capabilities: bool = True

    def argv(self, bwrap: str, command: Sequence[str]) -> list[str]:
        if not command:
            raise InvalidInput("sandbox: no command to run")
        if (self.uid is not None or self.gid is not None) and Namespace.USER not in self.unshare:
            raise InvalidInput("sandbox: a uid or gid mapping needs a user namespace")
        if self.hostname is not None and Namespace.UTS not in self.unshare:
            raise InvalidInput("sandbox: a hostname needs a UTS namespace")
        argv = [bwrap]
        # Order the namespaces by the enum, not the set, so the argv is deterministic.
        argv += [namespace.value for namespace in Namespace if namespace in self.unshare]
        if self.uid is not None:
            argv += ["--uid", str(self.uid)]
        if self.gid is not None:
            argv += ["--gid", str(self.gid)]
        if self.hostname is not None:
            argv += ["--hostname", self.hostname]
        if self.die_with_parent:
            argv.append("--die-with-parent")
        if self.new_session:
            argv.append("--new-session")
        if self.drop_capabilities:
            argv += ["--cap-drop", "ALL"]
        argv.append("--clearenv")
        for name, value in sorted(self.env.items()):
            if not name or "=" in name or "\0" in name or "\0" in value:
                raise InvalidInput(f"sandbox: bad environment variable {name!r}")
            argv += ["--setenv", name, value]
        for mount in self.mounts:
            argv += mount.argv()
        if self.chdir is not None:
            argv += ["--chdir", self.chdir]
        argv.append("--")
        argv += list(command)
        return argv


def host_runtime_mounts(
    paths: Iterable[str] = ("/usr", "/bin", "/sbin", "/lib", "/lib64"),
) -> tuple[Mount, ...]:
    """Read-only binds of the host's shared system directories, keeping merged-/usr symlinks."""
    mounts: list[Mount] = []
    for path in paths:
        if os.path.islink(path):
            mounts.append(symlink(os.readlink(path), path))
        elif os.path.isdir(path):
            mounts.append(ro_bind(path))
    return tuple(mounts)
