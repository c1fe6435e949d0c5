"""Running a bubblewrap command line: signals passed on, exit status and death passed back.

Why bubblewrap runs as our child rather than replacing us (exec): bubblewrap 0.8 does
not forward signals to the program, and it reports a program killed by signal N as
exit status 128+N. As a child, we (1) forward SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1
and SIGUSR2 to the program itself (found through bubblewrap's `--info-fd`), so a
`systemctl stop` or a Ctrl-C reaches the program and it can clean up; and (2) when the
program died of a signal, die of the same signal, so our caller sees what a caller of
the bare program would see. The cost is one waiting Python process.

A cached `confine run` imports this and `plans` and little else: no json, no
dataclasses, no `signal` (its C core `_signal` has the same calls without the enums),
no `os` (`posix` has the same calls without `os`'s costly import).
"""

import posix

from nixwarden import process

TYPE_CHECKING = False  # not typing's: this module is on `confine run`'s start-up path
if TYPE_CHECKING:
    import signal as _signal
    from collections.abc import Sequence
else:
    import _signal  # loaded at interpreter start-up

BWRAP = "/usr/bin/bwrap"
FORWARDED = (
    _signal.SIGHUP,
    _signal.SIGINT,
    _signal.SIGQUIT,
    _signal.SIGTERM,
    _signal.SIGUSR1,
    _signal.SIGUSR2,
)
# Signals whose default action ends a process: the ones we can die of in turn.
FATAL = frozenset(
    int(s)
    for s in (
        _signal.SIGHUP,
        _signal.SIGINT,
        _signal.SIGQUIT,
        _signal.SIGILL,
        _signal.SIGTRAP,
        _signal.SIGABRT,
        _signal.SIGBUS,
        _signal.SIGFPE,
        _signal.SIGKILL,
        _signal.SIGUSR1,
        _signal.SIGSEGV,
        _signal.SIGUSR2,
        _signal.SIGPIPE,
        _signal.SIGALRM,
        _signal.SIGTERM,
        _signal.SIGXCPU,
        _signal.SIGXFSZ,
        _signal.SIGVTALRM,
        _signal.SIGPROF,
        _signal.SIGSYS,
    )
)
MAX_INFO = 65536  # bubblewrap's --info-fd report is a few dozen bytes of JSON


def child_pid(info: bytes) -> int | None:
    """The `"child-pid": N` that opens bubblewrap's `--info-fd` JSON object, or None.

    bubblewrap writes `{"child-pid": N` first, then other numbers (namespace ids) and
    `}`; reading that one member needs no JSON parser (nor `re`, which `json` imports).
    """
    head, found, rest = info.partition(b'"child-pid"')
    rest = rest.lstrip()
    if not found or head.strip() != b"{" or not rest.startswith(b":"):
        return None
    digits = rest[1:].split(b",", 1)[0].split(b"}", 1)[0].strip()
    if not digits.isdigit() or len(digits) > 10:
        return None
    return int(digits)


def program_pids(child: int | None, pid_namespace: bool) -> list[int]:
    """Where a forwarded signal goes: the program, not bubblewrap or its init."""
    if child is None:
        return []
    if not pid_namespace:
        return [child]  # no init: bubblewrap's child is the program
    # bubblewrap's init is pid 1 in the namespace; the program (and orphans it adopted)
    # are its children. pid 1 would ignore the signal: send it to them.
    try:
        with open(f"/proc/{child}/task/{child}/children", "rb") as handle:
            return [int(pid) for pid in handle.read().split()]
    except (OSError, ValueError):
        return []


def execute(argv: "Sequence[str]") -> int:
    """Run the bubblewrap command line `argv` and wait; return the program's exit status,
    or die of the signal that killed it."""
    read_end, write_end = posix.pipe()
    still_open = {read_end, write_end}
    argv = [argv[0], "--info-fd", str(write_end), *argv[1:]]
    pid_namespace = "--unshare-pid" in argv
    child: list[int] = []

    def close(fd: int) -> None:
        if fd in still_open:
            still_open.discard(fd)
            posix.close(fd)

    def started(_pid: int) -> None:
        close(write_end)  # bubblewrap has its own copy; ours would keep the pipe open
        data = b""
        try:
            while len(data) < MAX_INFO and (chunk := posix.read(read_end, 4096)):
                data += chunk
        except OSError:
            pass
        close(read_end)
        found = child_pid(data)
        if found is not None:
            child.append(found)

    try:
        status = process.supervise(
            argv,
            env={},
            forward=[int(s) for s in FORWARDED],
            targets=lambda _pid: program_pids(child[0] if child else None, pid_namespace),
            pass_fds=[write_end],
            on_start=started,
        )
    finally:
        for fd in (read_end, write_end):
            close(fd)
    if status < 0:
        die_of(-status)  # bubblewrap itself was killed
    if status > 128 and status - 128 in FATAL:
        die_of(status - 128)  # bubblewrap's report of a program killed by a signal
    return status


def die_of(signum: int) -> None:
    """End this process with `signum` (no core dump of ours); returns if it cannot."""
    if signum not in FATAL:
        return
    import resource  # noqa: PLC0415 - only when dying

    try:  # noqa: SIM105 - no contextlib on the start-up path
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):
        pass
    if signum != _signal.SIGKILL:  # its disposition cannot (and need not) be reset
        _signal.signal(signum, _signal.SIG_DFL)
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, [signum])
    posix.kill(posix.getpid(), signum)
