"""The gate as a small supervisor, for a session with limits: it says when one is hit.

The kernel enforces the limits (tenants.limits: the slot's cgroups; tenants.disk: the
tenant's own filesystem); the supervisor only watches them, except a disk quota that
has no filesystem of its own (below). Without a supervisor the
client would only see its build fail ("killed by signal 9", "No space left on
device") and nobody would know why. So, for a principal with limits, the gate does not
exec the session: it starts it as its child (the same argv it would exec) and, while it
runs, reads the counters the kernel keeps for the slot every POLL_SECONDS:

    memory   memory.oom_control, `oom_kill N`: the OOM killer ended a process
    tasks    pids.events, `max N`: a fork or clone failed at pids.max
    disk     statvfs of the tenant's filesystem: (almost) nothing left to write

When a counter grows (each once per session), it writes one line to its stderr, which
sshd sends to the client and Nix prints, and one line to the audit log (decision
"limit").

A disk quota without a filesystem image of its own (no `[tenants] disk_images`) has no
kernel counter: there a `Watchdog` measures the tenant's usage every WATCHDOG_SECONDS
the hardened way (the probe, in the tenant's sandbox, bounded: tenants.usage) and,
past the quota or when the usage cannot be measured, reports and ends the session
(SIGKILL to the child; bubblewrap's pid namespace takes every process of the session).
A session may overshoot by what it writes between two measurements.

It forwards SIGHUP, SIGTERM and SIGINT to the child and exits with the
child's status. Its own footprint counts in the slot's cgroups too; the child starts
with a higher OOM score than the supervisor, so the kernel picks a build, not the one
process that reports.

On the gate's path for limited principals only: os and the C core of signal.
"""

from __future__ import annotations

import os

from nixwarden import process
from nixwarden.tenants.disk import is_full

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
WATCHDOG_SECONDS = 5.0  # between two measurements of a disk quota without an image


class Counter:
    """One kernel counter of the session: `kind` is memory, tasks or disk."""

    ends_session = False

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


class Watchdog:
    """The tenant's disk usage against its quota, measured every `interval` seconds while
    the session runs: `measure` returns bytes, or None when it could not measure."""

    kind = "disk-usage"
    ends_session = True

    def __init__(
        self,
        measure: Callable[[], int | None],
        quota: int,
        limit: str,
        interval: float = WATCHDOG_SECONDS,
        clock: Callable[[], float] | None = None,
    ) -> None:
        import time  # noqa: PLC0415 - a C module, only for a watched disk quota

        self.measure = measure
        self.quota = quota
        self.limit = limit
        self.interval = interval
        self.clock = clock or time.monotonic
        self.next = self.clock() + interval
        self.used: int | None = None
        self.reported = False

    def hit(self) -> bool:
        """Whether the last measurement, if one was due, is at or past the quota or failed."""
        if self.reported or self.clock() < self.next:
            return False
        self.used = self.measure()
        self.next = self.clock() + self.interval
        self.reported = self.used is None or self.used >= self.quota
        return self.reported


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
            return int(is_full(counter.path))
        except OSError:
            return None
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


def message(counter: Counter | Watchdog, principal: str) -> str:
    if isinstance(counter, Watchdog):
        if counter.used is None:
            return (
                f"session of principal {principal} was ended: its disk usage could not be "
                f"measured against its disk quota ({counter.limit})"
            )
        return (
            f"session of principal {principal} was ended: its tenant store passed its disk "
            f"quota ({counter.used / (1 << 20):.1f} MiB used of {counter.limit})"
        )
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
    counters: Sequence[Counter | Watchdog],
    report: Callable[[str], None],
    principal: str,
) -> int:
    """Start argv as our child, watch `counters` while it runs, `report` each limit hit
    (and write it to stderr); return the child's exit status as a shell gives it."""
    previous = _oom_score_adj()

    def started(_pid: int) -> None:
        if previous is not None:
            _set_oom_score_adj(previous)  # ours back; the child keeps the raised one

    def watch(pid: int) -> None:
        for counter in counters:
            if counter.ends_session and not _running(pid):
                continue  # a session that ended by itself is not ended again
            if counter.hit():
                line = message(counter, principal)
                try:  # noqa: SIM105 - no contextlib on the start-up path
                    os.write(2, f"nixwarden: {line}\n".encode("ascii", "replace"))
                except OSError:
                    pass  # the client is gone; the log still says it
                report(line)
                if counter.ends_session:
                    _kill(pid)

    if previous is not None:
        _set_oom_score_adj(max(previous, SESSION_OOM_SCORE_ADJ))
    status = process.supervise(
        argv,
        env=env,
        forward=FORWARDED,
        targets=lambda pid: (pid,),
        pass_fds=None,  # what exec would hand on: the session slot, the principal's lock
        on_start=started,
        watch=watch,
        every=POLL_SECONDS,
    )
    return 128 - status if status < 0 else status


def _running(pid: int) -> bool:
    """Whether our child `pid` has not ended (it is not reaped here)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except ChildProcessError:
        return False


def _kill(pid: int) -> None:
    try:  # noqa: SIM105 - no contextlib on the start-up path
        os.kill(pid, _signal.SIGKILL)
    except ProcessLookupError:
        pass


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
