"""What a confined program sees, as values, and the bubblewrap sandbox for it. Pure.

The imperative shell (`confine.run`, `confine.unit`) resolves roots, computes the
closure and finds `/bin/sh`; this module turns those facts into a `Sandbox`.
"""

from __future__ import annotations

import enum
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field

from nixwarden.errors import InvalidInput
from nixwarden.sandbox import bwrap
from nixwarden.sandbox.bwrap import Mount, MountKind, Namespace, Sandbox

BIN_SH = "/bin/sh"


class Mode(enum.Enum):
    """NixOS's `confinement.mode`."""

    FULL_APIVFS = "full-apivfs"  # /proc, /dev, private /tmp and /run, private namespaces
    CHROOT_ONLY = "chroot-only"  # the closure, /bin/sh and explicit binds; nothing else


@dataclass(frozen=True)
class HostFile:
    """A host file bound read-only into the sandbox (a library `/bin/sh` needs)."""

    source: str
    dest: str


@dataclass(frozen=True)
class BinSh:
    """What `/bin/sh` is: a file bound at /bin/sh, plus what it needs to run."""

    source: str  # the file itself (symlinks resolved): in the store, or a host binary
    store_roots: tuple[str, ...] = ()  # store paths whose closure it needs
    host_files: tuple[HostFile, ...] = ()  # for a host binary: its loader and libraries

    @property
    def in_store(self) -> bool:
        return bool(self.store_roots)


@dataclass(frozen=True)
class Bind:
    source: str
    dest: str
    writable: bool = False


def parse_bind(text: str, writable: bool) -> Bind:
    """`SRC[:DST]` (both absolute; DST defaults to SRC). The first ':' splits."""
    source, colon, dest = text.partition(":")
    if not colon:
        dest = source
    option = "--bind" if writable else "--ro-bind"
    for path in (source, dest):
        if not path.startswith("/") or "\0" in path:
            raise InvalidInput(f"{option} {text!r}: paths must be absolute")
        if ".." in path.split("/"):
            raise InvalidInput(f"{option} {text!r}: '..' is not allowed")
    dest = posixpath.normpath(dest)
    if dest == "/":
        raise InvalidInput(f"{option} {text!r}: cannot bind over /")
    return Bind(posixpath.normpath(source), dest, writable)


def parse_setenv(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name or "\0" in text:
        raise InvalidInput(f"--setenv {text!r}: expected NAME=VALUE")
    return name, value


@dataclass(frozen=True)
class RunSpec:
    """Everything `confine run` decided, before it becomes a bubblewrap argv."""

    mode: Mode
    closure: frozenset[str]
    # Closure members that are symlinks (a store path may be one): path -> link text.
    links: Mapping[str, str] = field(default_factory=dict)
    bin_sh: BinSh | None = None
    binds: tuple[Bind, ...] = ()
    network: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    chdir: str = "/"


def namespaces(mode: Mode, network: bool) -> frozenset[Namespace]:
    match mode:
        case Mode.FULL_APIVFS:
            chosen = set(bwrap.ALL_NAMESPACES)
        case Mode.CHROOT_ONLY:
            chosen = {Namespace.NET}  # a mount namespace always; the network unless asked
    if network:
        chosen.discard(Namespace.NET)
    return frozenset(chosen)


def mounts(spec: RunSpec) -> tuple[Mount, ...]:
    """The mounts, in order: later ones may cover earlier ones.

    The closure and /bin/sh first, then (full-apivfs) /proc, /dev, /tmp and /run, then
    the explicit binds, and finally `/` itself read-only: bubblewrap's root is a tmpfs
    where it created the mount points; nothing may be written there afterwards. The
    remount is not recursive, so /tmp, /run and `--bind`s stay writable.
    """
    result: list[Mount] = []
    for path in sorted(spec.closure):
        link = spec.links.get(path)
        result.append(bwrap.symlink(link, path) if link is not None else bwrap.ro_bind(path))
    if spec.bin_sh is not None:
        result.append(bwrap.ro_bind(spec.bin_sh.source, BIN_SH))
        result += [bwrap.ro_bind(f.source, f.dest) for f in spec.bin_sh.host_files]
    match spec.mode:
        case Mode.FULL_APIVFS:
            result += [
                Mount(MountKind.PROC, "/proc"),
                Mount(MountKind.DEV, "/dev"),
                bwrap.tmpfs("/tmp"),  # noqa: S108 - the sandbox's own, fresh tmpfs
                bwrap.tmpfs("/run"),
            ]
        case Mode.CHROOT_ONLY:
            pass
    for item in spec.binds:
        result.append(
            bwrap.bind(item.source, item.dest)
            if item.writable
            else bwrap.ro_bind(item.source, item.dest)
        )
    result.append(Mount(MountKind.REMOUNT_RO, "/"))
    return tuple(result)


def sandbox(spec: RunSpec) -> Sandbox:
    return Sandbox(
        mounts=mounts(spec),
        unshare=namespaces(spec.mode, spec.network),
        env=dict(spec.env),
        chdir=spec.chdir,
        die_with_parent=True,
        new_session=True,
        drop_capabilities=True,
    )
