"""`confine run`: the imperative shell around `plan` (roots, closure, bubblewrap, signals).

Why bubblewrap runs as our child rather than replacing us (exec): bubblewrap 0.8 does
not forward signals to the program, and it reports a program killed by signal N as
exit status 128+N. As a child, we (1) forward SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1
and SIGUSR2 to the program itself (found through bubblewrap's `--info-fd`), so a
`systemctl stop` or a Ctrl-C reaches the program and it can clean up; and (2) when the
program died of a signal, die of the same signal, so our caller sees what a caller of
the bare program would see. The cost is one waiting Python process.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nixwarden import process
from nixwarden.confine.plan import BIN_SH, Bind, BinSh, Mode, RunSpec, sandbox
from nixwarden.errors import InvalidInput, UsageError
from nixwarden.nix.closure import closure, resolve_root
from nixwarden.nix.storepath import STORE_DIR, in_store, references_in

BWRAP = "/usr/bin/bwrap"
FORWARDED = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
# Signals whose default action ends a process: the ones we can die of in turn.
FATAL = frozenset(
    int(s)
    for s in (
        signal.SIGHUP,
        signal.SIGINT,
        signal.SIGQUIT,
        signal.SIGILL,
        signal.SIGTRAP,
        signal.SIGABRT,
        signal.SIGBUS,
        signal.SIGFPE,
        signal.SIGKILL,
        signal.SIGUSR1,
        signal.SIGSEGV,
        signal.SIGUSR2,
        signal.SIGPIPE,
        signal.SIGALRM,
        signal.SIGTERM,
        signal.SIGXCPU,
        signal.SIGXFSZ,
        signal.SIGVTALRM,
        signal.SIGPROF,
        signal.SIGSYS,
    )
)


@dataclass(frozen=True)
class Request:
    """`confine run`'s command line, parsed."""

    command: tuple[str, ...]
    mode: Mode = Mode.FULL_APIVFS
    packages: tuple[str, ...] = ()
    bin_sh: BinSh | None = None
    binds: tuple[Bind, ...] = ()
    network: bool = False
    env: Mapping[str, str] | None = None
    chdir: str = "/"
    db: str | None = None


def _search_path(name: str, environ: Mapping[str, str]) -> str:
    for directory in environ.get("PATH", "").split(":"):
        if not directory:
            continue
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise UsageError(f"confine run: {name!r} not found in PATH")


def _provided(path: str, request: Request) -> bool:
    """Is `path` something the sandbox provides besides the closure (/bin/sh, a bind)?"""
    if path == BIN_SH and request.bin_sh is not None:
        return True
    return any(path == b.dest or path.startswith(b.dest.rstrip("/") + "/") for b in request.binds)


def resolve_command(request: Request, environ: Mapping[str, str]) -> tuple[str, str | None]:
    """(path to execute inside the sandbox, its store path root or None)."""
    program = request.command[0]
    if _provided(program, request):
        return program, None
    if "/" not in program:
        program = _search_path(program, environ)
    root = resolve_root(program, STORE_DIR)
    if not in_store(root.path):
        raise UsageError(f"confine run: {program!r} is not in the store")
    return root.path, root.top


def roots(request: Request, command_root: str | None) -> list[str]:
    found: list[str] = []
    if command_root is not None:
        found.append(command_root)
    for argument in request.command[1:]:
        found += [p.absolute() for p in references_in(argument)]
    for package in request.packages:
        found.append(resolve_root(package).top)
    if request.bin_sh is not None:
        found += request.bin_sh.store_roots
    return list(dict.fromkeys(found))


def symlinks(paths: frozenset[str]) -> dict[str, str]:
    """Closure members that are themselves symlinks: bubblewrap recreates them as links."""
    return {path: os.readlink(path) for path in paths if os.path.islink(path)}


def prepare(request: Request, environ: Mapping[str, str]) -> tuple[RunSpec, list[str]]:
    """The sandbox description and the command to run in it."""
    executable, command_root = resolve_command(request, environ)
    found = closure(roots(request, command_root), db=request.db, environ=environ)
    spec = RunSpec(
        mode=request.mode,
        closure=found.paths,
        links=symlinks(found.paths),
        bin_sh=request.bin_sh,
        binds=request.binds,
        network=request.network,
        env=dict(request.env or {}),
        chdir=request.chdir,
    )
    return spec, [executable, *request.command[1:]]


def _program_pids(bwrap_pid: int, info: dict[str, int], pid_namespace: bool) -> list[int]:
    child = info.get("child-pid")
    if child is None:
        return []
    if not pid_namespace:
        return [child]  # no init: bubblewrap's child is the program
    # bubblewrap's init is pid 1 in the namespace; the program (and orphans it adopted)
    # are its children. pid 1 would ignore the signal: send it to them.
    with contextlib.suppress(OSError), open(f"/proc/{child}/task/{child}/children") as handle:
        return [int(pid) for pid in handle.read().split()]
    return []


def bwrap_argv(spec: RunSpec, command: Sequence[str], bwrap: str = BWRAP) -> list[str]:
    return sandbox(spec).argv(bwrap, command)


def execute(spec: RunSpec, command: Sequence[str], bwrap: str = BWRAP) -> int:
    """Run and wait; return the program's exit status, or die of its signal."""
    argv = bwrap_argv(spec, command, bwrap)
    read_end, write_end = os.pipe()
    argv = [argv[0], "--info-fd", str(write_end), *argv[1:]]
    info: dict[str, int] = {}
    pid_namespace = "--unshare-pid" in argv

    def started(_pid: int) -> None:
        os.close(write_end)
        data = b""
        with contextlib.suppress(OSError):
            while chunk := os.read(read_end, 4096):
                data += chunk
        os.close(read_end)
        with contextlib.suppress(ValueError):
            parsed = json.loads(data or b"{}")
            if isinstance(parsed, dict) and isinstance(parsed.get("child-pid"), int):
                info["child-pid"] = parsed["child-pid"]

    try:
        status = process.supervise(
            argv,
            env={},
            forward=[int(s) for s in FORWARDED],
            targets=lambda pid: _program_pids(pid, info, pid_namespace),
            pass_fds=[write_end],
            on_start=started,
        )
    except BaseException:
        for fd in (read_end, write_end):
            with contextlib.suppress(OSError):
                os.close(fd)
        raise
    if status < 0:
        die_of(-status)  # bubblewrap itself was killed
    if status > 128 and status - 128 in FATAL:
        die_of(status - 128)  # bubblewrap's report of a program killed by a signal
    return status


def die_of(signum: int) -> None:
    """End this process with `signum` (no core dump of ours); returns if it cannot."""
    if signum not in FATAL:
        return
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if signum != signal.SIGKILL:  # its disposition cannot (and need not) be reset
        signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signum])
    os.kill(os.getpid(), signum)


def validate(request: Request) -> None:
    if not request.command:
        raise UsageError("confine run: no command given (after --)")
    if not request.chdir.startswith("/"):
        raise InvalidInput(f"--chdir {request.chdir!r}: must be absolute")
