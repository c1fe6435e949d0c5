"""Inside a tenant's sandbox, as the tenant: what its directory holds, and cleaning its /tmp.

Everything under <tenants.root>/<name> is written by the tenant, and may be a FIFO, a
symlink to a host file, or a database whose views never finish. So the host never
reads it: it starts this module (`tenants.usage.measure`) in the tenant's own sandbox,
as the tenant's unix user, under a time limit, where those can reach only what the
sandbox shows. It prints one line, which the host parses as untrusted numbers:

    paths=N nar=N disk=N      (-1 for what was not asked)
    error=KIND                (KIND: one of ERRORS)

`keep PATH… -- COMMAND…` runs COMMAND (`nix-store --gc`) while PATHs are temporary
roots of the tenant's store: the host store paths bound into the sandbox (Nix's own
closure on NixOS) have mount points in the tenant's store, which Nix's garbage
collector would otherwise try, and fail, to delete as invalid paths.

Runs as `python3 -I -S -B -c …` with only the nixwarden package on sys.path: standard
library and nixwarden modules only, imported when needed.
"""

from __future__ import annotations

import os
import stat
import sys
import time

TYPE_CHECKING = False  # not typing's: the probe starts an interpreter per measurement
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    T = TypeVar("T")

# Where the sandbox shows the tenant's whole directory, read-only (tenants.usage binds it).
VIEW = "/run/nixwarden-tenant"
DATABASE = "/nix/var/nix/db/db.sqlite"
TEMPROOTS = "/nix/var/nix/temproots"
TMP = "/tmp"  # noqa: S108 - inside the sandbox: the tenant's own tmp
ERRORS = ("database", "tree", "timeout", "usage")
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _Failed(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def main(argv: list[str]) -> int:
    if argv[:1] == ["keep"]:
        return keep(argv[1:])
    try:
        seconds, clean, disk, paths = _options(argv)
    except _Failed as failure:
        return _report(f"error={failure.kind}")
    _limit_cpu(seconds)
    deadline = time.monotonic() + seconds
    try:
        if clean:
            _clean_tmp(deadline)
        disk_bytes = _disk(deadline) if disk else -1
        path_count, nar_bytes = _store_counts(deadline) if paths else (-1, -1)
    except _Failed as failure:
        return _report(f"error={failure.kind}")
    except OSError:
        return _report("error=tree")
    return _report(f"paths={path_count} nar={nar_bytes} disk={disk_bytes}")


def _options(argv: list[str]) -> tuple[float, bool, bool, bool]:
    if len(argv) < 1 or not argv[0].isdigit() or not argv[0].isascii():
        raise _Failed("usage")
    flags = set(argv[1:])
    if not flags <= {"--clean-tmp", "--disk", "--paths"}:
        raise _Failed("usage")
    return float(argv[0]), "--clean-tmp" in flags, "--disk" in flags, "--paths" in flags


def _report(line: str) -> int:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    return 0 if line.startswith("paths=") else 1


def _limit_cpu(seconds: float) -> None:
    """A database query spinning inside SQLite never returns to check a clock: the kernel
    ends it (SIGXCPU) a little after the deadline, and the host's own time limit too."""
    import resource  # noqa: PLC0415

    limit = int(seconds) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (limit, limit + 1))


def _clean_tmp(deadline: float) -> None:
    from nixwarden.tenants import tree  # noqa: PLC0415

    _walk(TMP, lambda fd: tree.remove_contents(fd, make_writable=True, deadline=deadline))


def _disk(deadline: float) -> int:
    from nixwarden.tenants import tree  # noqa: PLC0415

    return _walk(VIEW, lambda fd: tree.disk_usage(fd, deadline=deadline))


def _walk(directory: str, walk: Callable[[int], T]) -> T:
    """`walk` on the opened `directory`, its failures as the kinds the host knows."""
    from nixwarden.tenants import tree  # noqa: PLC0415

    try:
        fd = os.open(directory, _DIRECTORY)
    except OSError:
        raise _Failed("tree") from None
    try:
        return walk(fd)
    except tree.TimedOut:
        raise _Failed("timeout") from None
    except tree.TreeError:
        raise _Failed("tree") from None
    finally:
        os.close(fd)


def _store_counts(deadline: float) -> tuple[int, int]:
    """(valid paths, their total NAR size) from the tenant's own database; (0, 0) without one."""
    try:
        fd = os.open(DATABASE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0, 0
    except OSError:
        raise _Failed("database") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _Failed("database")
    finally:
        os.close(fd)
    from nixwarden.nix import db  # noqa: PLC0415 - sqlite3 only when asked

    try:
        return db.store_usage(DATABASE, attempts=4, deadline=deadline)
    except Exception:  # whatever a hostile database makes SQLite (or int()) say
        raise _Failed("timeout" if time.monotonic() > deadline else "database") from None


def keep(argv: list[str]) -> int:
    """Hold PATHs as temporary roots (Nix's format: a file named after a pid, each path
    followed by NUL, kept locked by a live process) while COMMAND runs as our child."""
    import fcntl  # noqa: PLC0415

    from nixwarden import process  # noqa: PLC0415

    if "--" not in argv or argv.index("--") == len(argv) - 1:
        return _report("error=usage")
    split = argv.index("--")
    paths, command = argv[:split], argv[split + 1 :]
    os.makedirs(TEMPROOTS, mode=0o755, exist_ok=True)
    roots = os.path.join(TEMPROOTS, str(os.getpid()))
    fd = os.open(roots, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        # Nix (pathlocks.cc: flock) tries a write lock to tell a dead process's file.
        fcntl.flock(fd, fcntl.LOCK_SH)
        os.write(fd, b"".join(path.encode() + b"\0" for path in paths))
        # The sandbox's environment, as bubblewrap set it: nothing of the host's.
        return process.run(command, env=dict(os.environ), check=False, capture=False).returncode
    finally:
        os.unlink(roots)
        os.close(fd)
