"""The gate as a small supervisor, for a session with limits: it says when one is hit.

The kernel enforces the limits (tenants.limits: the slot's cgroups; tenants.disk: the
tenant's own filesystem); nothing here enforces anything. Without a supervisor the
client would only see its build fail ("killed by signal 9", "No space left on
device") and nobody would know why. So, for a principal with limits, the gate does not
exec the session: it starts it as its child (the same argv it would exec) and, while it
runs, reads the counters the kernel keeps for the slot every POLL_SECONDS:

    memory   memory.oom_control, `oom_kill N`: the OOM killer ended a process
    tasks    pids.events, `max N`: a fork or clone failed at pids.max
    disk     statvfs of the tenant's filesystem: (almost) nothing left to write

When a counter grows (each once per session), it writes one line to its stderr, which
sshd sends to the client and Nix prints, and one line to the audit log (decision
"limit"). It forwards SIGHUP, SIGTERM and SIGINT to the child and exits with the
child's status. Its own footprint counts in the slot's cgroups too; the child starts
with a higher OOM score than the supervisor, so the kernel picks a build, not the one
process that reports.

On the gate's path for limited principals only: os and the C core of signal.
"""

from __future__ import annotations

import os

from nixwarden import process
from nixwarden.tenants.disk import disk_full

TYPE_CHECKING = False  # not typing's: on the gate's start-up path for limited principals
if TYPE_CHECKING:
    import signal as _signal
    from collections.abc import Callable, Mapping, Sequence
else:
    import _signal

POLL_SECONDS = 0.1
# Raised for the session (inherited by everything it starts), the supervisor's own kept:
# a process may raise its OOM score without privileges, and lower it back to where it was.
SESSION_OOM_SCORE_ADJ = 500
MAX_COUNTER_BYTES = 256
FORWARDED = (_signal.SIGHUP, _signal.SIGTERM, _signal.SIGINT)


class Counter:
    """One kernel counter of the session: `kind` is memory, tasks or disk."""

    def __init__(self, kind: str, path: str, limit: str) -> None:
        self.kind = kind
        self.path = path
        self.limit = limit  # as the message shows it: "128 MiB", "64", "64 MiB"
        self.baseline = read(self)
        self.reported = False

    def hit(self) -> bool:
        """Whether the limit was hit since the session started (true once)."""
        if self.reported:
            return False
        now = read(self)
        if now is None:
            return False
        if self.kind == "disk":
            found = now == 1
        else:
            found = self.baseline is not None and now > self.baseline
        self.reported = found
        return found


def parse(kind: str, data: bytes) -> int | None:
    """The count in a counter file's text: `oom_kill N` (memory.oom_control) or `max N`
    (pids.events); None when it is not there."""
    key = b"oom_kill" if kind == "memory" else b"max"
    for line in data.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == key and fields[1].isdigit():
            return int(fields[1])
    return None


def read(counter: Counter) -> int | None:
    if counter.kind == "disk":
        try:
            info = os.statvfs(counter.path)
        except OSError:
            return None
        return int(disk_full(info.f_bavail * info.f_frsize, info.f_blocks * info.f_frsize))
    try:
        fd = os.open(counter.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return parse(counter.kind, os.read(fd, MAX_COUNTER_BYTES))
    except OSError:
        return None
    finally:
        os.close(fd)


def message(counter: Counter, principal: str) -> str:
    match counter.kind:
        case "memory":
            what = f"its memory limit ({counter.limit}): the kernel killed a process of it"
        case "tasks":
            what = f"its tasks limit ({counter.limit}): a new process or thread was refused"
        case _:
            what = (
                f"its disk quota ({counter.limit}): the tenant store is full, and writes "
                "fail with 'No space left on device'"
            )
    return f"session of principal {principal} hit {what}"


def run(
    argv: Sequence[str],
    env: Mapping[str, str],
    counters: Sequence[Counter],
    report: Callable[[str], None],
    principal: str,
) -> int:
    """Start argv as our child, watch `counters` while it runs, `report` each limit hit
    (and write it to stderr); return the child's exit status as a shell gives it."""
    previous = _oom_score_adj()

    def started(_pid: int) -> None:
        if previous is not None:
            _set_oom_score_adj(previous)  # ours back; the child keeps the raised one

    def watch(_pid: int) -> None:
        for counter in counters:
            if counter.hit():
                line = message(counter, principal)
                try:  # noqa: SIM105 - no contextlib on the start-up path
                    os.write(2, f"nixwarden: {line}\n".encode("ascii", "replace"))
                except OSError:
                    pass  # the client is gone; the log still says it
                report(line)

    if previous is not None:
        _set_oom_score_adj(max(previous, SESSION_OOM_SCORE_ADJ))
    status = process.supervise(
        argv,
        env=env,
        forward=FORWARDED,
        targets=lambda pid: (pid,),
        pass_fds=_inheritable_fds(),
        on_start=started,
        watch=watch,
        every=POLL_SECONDS,
    )
    return 128 - status if status < 0 else status


def _inheritable_fds() -> list[int]:
    """What exec would have handed on (the session slot, the principal's lock): the child
    holds them too, so they stay held while the session runs, whatever happens to us."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if fd > 2 and os.get_inheritable(fd):
                found.append(fd)
        except OSError:
            pass  # the listing's own descriptor, closed meanwhile
    return found


def _oom_score_adj() -> int | None:
    try:
        with open("/proc/self/oom_score_adj", "rb") as file:
            return int(file.read(16))
    except (OSError, ValueError):
        return None


def _set_oom_score_adj(value: int) -> None:
    try:
        with open("/proc/self/oom_score_adj", "wb") as file:
            file.write(str(value).encode())
    except OSError:
        pass  # below what we may set: the score stays where it was
