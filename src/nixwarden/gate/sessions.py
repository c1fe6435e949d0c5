"""Per-principal session limits, enforced with lock files the session keeps open.

A session holds an exclusive `flock` on one of `max_sessions` slot files and passes
the descriptor on to the program it execs, so the slot is held exactly as long as the
Nix process lives, and freed by the kernel however it ends. No daemon, nothing to
clean up after a crash.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from nixwarden.errors import Refused


class SessionsFull(Refused):
    """Every session slot of the principal is taken."""


class SessionStateError(Refused):
    """The session state directory cannot be used; fail closed."""


def _sessions_dir(state_dir: str) -> str:
    directory = os.path.join(state_dir, "sessions")
    try:
        os.makedirs(directory, exist_ok=True)
        # Shared by the gate's unix users, like /tmp: sticky so no user removes another's slots.
        if os.stat(directory).st_uid == os.geteuid():
            os.chmod(directory, 0o1777)  # noqa: S103
    except OSError as error:
        raise SessionStateError(
            f"session state {directory}: {error.strerror} "
            f"(create it as root: install -d -m 1777 {directory})"
        ) from None
    return directory


def acquire(state_dir: str, principal: str, max_sessions: int) -> int:
    """Lock a free slot and return its descriptor (inheritable), or raise `SessionsFull`."""
    directory = _sessions_dir(state_dir)
    for slot in range(max_sessions):
        path = os.path.join(directory, f"{principal}.{slot}.lock")
        try:
            # O_NOFOLLOW and O_NONBLOCK: a planted symlink or FIFO must not redirect or hang us.
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as error:
            raise SessionStateError(f"session slot {path}: {error.strerror}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise SessionStateError(f"session slot {path}: not a regular file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                continue
            raise SessionStateError(f"session slot {path}: {error.strerror}") from None
        os.set_inheritable(fd, True)
        return fd
    raise SessionsFull(f"all {max_sessions} sessions are in use (max_sessions = {max_sessions})")


def in_use(state_dir: str, principal: str, max_sessions: int) -> int:
    """How many of the principal's slots are held right now (for status output and tests)."""
    directory = os.path.join(state_dir, "sessions")
    busy = 0
    for slot in range(max_sessions):
        path = os.path.join(directory, f"{principal}.{slot}.lock")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            busy += 1
        finally:
            os.close(fd)
    return busy
