"""Session slots: per-principal session limits, held with `flock` on files no one else can reach.

    <state_dir>/sessions/            root's, mode 0711: nobody else may create, rename or list
    <state_dir>/sessions/<user>/     one per unix user a gated key logs in as: owned by it, 0700
        <principal>.<n>.lock         slot n of the principal (0 ≤ n < max_sessions)
        <principal>.lock             tenants: held shared by every session, exclusive while the
                                     tenant's /tmp is cleaned or the tenant is removed

A session holds an exclusive `flock` on one slot file and passes the descriptor on to
the program it execs, so the slot is held exactly as long as that program lives and
is freed by the kernel however it ends. A user's slots sit in a directory only that
user (and root) can enter, so no other unix user can take, hold or break them; files
are opened with O_NOFOLLOW and O_NONBLOCK and their type checked on the descriptor.

The directories are root's to create, since no other user may write beside them: the
`tmpfiles.d` lines in contrib/tmpfiles.d/nixwarden.conf bring them back at every boot
(`/run` is a tmpfs). The gate refuses a missing or unsafe directory and says the fix.

On the gate's start-up path: standard modules that are built in or already loaded only.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from nixwarden.errors import Refused

SESSIONS = "sessions"
TMPFILES = "/etc/tmpfiles.d/nixwarden.conf"
# How many slot files of one principal `hold_all` looks at beyond max_sessions (a
# lowered max_sessions leaves higher slots that a running session may still hold).
MAX_SLOTS = 1024

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PASS_THROUGH = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO planted where a slot belongs must not hang us; O_NOFOLLOW: nor redirect.
_SLOT = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class SessionsFull(Refused):
    """Every session slot of the principal is taken."""


class SessionsBusy(Refused):
    """A session of the principal is running (for actions that need it to have none)."""


class SessionStateError(Refused):
    """The session state cannot be used safely; fail closed. The message says the fix."""


def user_directory(state_dir: str, user: str) -> str:
    return os.path.join(state_dir, SESSIONS, user)


def tmpfiles_line(state_dir: str, user: str, group: str) -> str:
    """The `tmpfiles.d` line that creates (and after a reboot recreates) `user`'s directory."""
    return f"d {user_directory(state_dir, user)} 0700 {user} {group} -"


def acquire(state_dir: str, principal: str, max_sessions: int) -> int:
    """Lock a free slot of this unix user's and return its descriptor (inheritable), or raise
    `SessionsFull`."""
    return acquire_numbered(state_dir, principal, max_sessions)[0]


def acquire_numbered(state_dir: str, principal: str, max_sessions: int) -> tuple[int, int]:
    """`acquire`, with the slot's number (a tenant session's cgroups are per slot)."""
    directory = _own_directory(state_dir)
    try:
        for slot in range(max_sessions):
            fd = _open_slot(directory, f"{principal}.{slot}.lock", create=True)
            if _try_lock(fd, fcntl.LOCK_EX):
                os.set_inheritable(fd, True)
                return fd, slot
            os.close(fd)
    finally:
        os.close(directory)
    raise SessionsFull(f"all {max_sessions} sessions are in use (max_sessions = {max_sessions})")


def principal_lock(state_dir: str, principal: str, *, wait: float) -> tuple[int, bool]:
    """The principal's lock, held by every session of a tenant for its whole life.

    Returns (descriptor, alone). `alone`: no other session holds it, and it is held
    exclusively until `share(descriptor)`, so the caller may clean up between sessions.
    Otherwise it is held shared. Waits up to `wait` seconds while someone holds it
    exclusively (a cleaning or a removal), then refuses. The descriptor is inheritable.
    """
    directory = _own_directory(state_dir)
    try:
        fd = _open_slot(directory, f"{principal}.lock", create=True)
    finally:
        os.close(directory)
    try:
        if _try_lock(fd, fcntl.LOCK_EX):
            alone = True
        else:
            alone = False
            _wait_for_shared(fd, wait)
        os.set_inheritable(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, alone


def share(fd: int) -> None:
    """Turn the exclusive principal lock from `principal_lock` into a shared one.

    Not atomic (flock(2) drops the old lock first): another session may start in the
    gap, which is harmless, since nothing has used the tenant's files yet."""
    fcntl.flock(fd, fcntl.LOCK_SH)


def in_use(state_dir: str, user: str, principal: str, max_sessions: int) -> int:
    """How many of the principal's slots of unix user `user` are held right now."""
    directory = _their_directory(state_dir, user)
    if directory is None:
        return 0
    busy = 0
    try:
        for slot in range(max_sessions):
            try:
                fd = _open_slot(directory, f"{principal}.{slot}.lock", create=False)
            except FileNotFoundError:
                continue
            try:
                if not _try_lock(fd, fcntl.LOCK_SH):
                    busy += 1
            finally:
                os.close(fd)
    finally:
        os.close(directory)
    return busy


def hold_all(state_dir: str, user: str, principal: str, max_sessions: int) -> tuple[int, ...]:
    """As root: lock the principal's lock and every slot of unix user `user` exclusively, so
    that no session runs or starts while the caller works; raises `SessionsBusy` when one
    runs. Close the descriptors to let sessions start again. Files root creates are given
    to the directory's owner, so that its sessions can still open them."""
    directory = _their_directory(state_dir, user)
    if directory is None:
        return ()  # no directory, no session: the gate refuses to start one without it
    held: list[int] = []
    try:
        owner = os.fstat(directory)
        names = [f"{principal}.lock"]
        names += [f"{principal}.{slot}.lock" for slot in range(max_sessions)]
        names += _slots_beyond(directory, principal, max_sessions)
        for name in names:
            fd = _open_slot(directory, name, create=True, owner=(owner.st_uid, owner.st_gid))
            held.append(fd)
            if not _try_lock(fd, fcntl.LOCK_EX):
                raise SessionsBusy(f"principal {principal} has a session running")
    except BaseException:
        for fd in held:
            os.close(fd)
        raise
    finally:
        os.close(directory)
    return tuple(held)


def release(fds: tuple[int, ...]) -> None:
    for fd in fds:
        os.close(fd)


def _slots_beyond(directory: int, principal: str, max_sessions: int) -> list[str]:
    prefix = f"{principal}."
    found = []
    for name in os.listdir(directory)[: MAX_SLOTS * 4]:
        number = name[len(prefix) : -len(".lock")]
        if (
            name.startswith(prefix)
            and name.endswith(".lock")
            and number.isdigit()
            and number.isascii()
            and max_sessions <= int(number) < MAX_SLOTS
        ):
            found.append(name)
    return sorted(found)


def _try_lock(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise SessionStateError(f"session lock: {error.strerror}") from None
    return True


def _wait_for_shared(fd: int, wait: float) -> None:
    import time  # noqa: PLC0415 - only when another session holds the lock

    deadline = time.monotonic() + wait
    while not _try_lock(fd, fcntl.LOCK_SH):
        if time.monotonic() >= deadline:
            raise SessionsBusy(
                f"the tenant was being cleaned or removed for more than {wait:.0f} s; try again"
            )
        time.sleep(0.05)


def _open_slot(
    directory: int, name: str, *, create: bool, owner: tuple[int, int] | None = None
) -> int:
    flags = _SLOT | (os.O_CREAT if create else 0)
    try:
        fd = os.open(name, flags, 0o600, dir_fd=directory)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise SessionStateError(
            f"session slot {name}: {error.strerror} (remove it; the gate recreates it)"
        ) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise SessionStateError(
            f"session slot {name}: not a regular file (remove it; the gate recreates it)"
        )
    if owner is not None and (info.st_uid, info.st_gid) != owner:
        os.fchown(fd, *owner)  # root created it: its sessions must be able to open it
    return fd


def _open_sessions(state_dir: str) -> int:
    """`<state_dir>/sessions`, which only root (or this user, alone on the machine) may write.
    O_PATH: its mode 0711 lets users through it, not read it."""
    base = os.open(state_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = os.open(SESSIONS, _PASS_THROUGH, dir_fd=base)
    finally:
        os.close(base)
    info = os.fstat(fd)
    if info.st_uid not in (0, os.geteuid()) or info.st_mode & 0o022:
        os.close(fd)
        path = os.path.join(state_dir, SESSIONS)
        raise SessionStateError(
            f"session state {path} may be written by others; "
            f"as root: install -d -m 0711 -o root -g root {path}"
        )
    return fd


def _own_directory(state_dir: str) -> int:
    """This unix user's directory of slots, checked: a real directory, its own, private."""
    uid = os.geteuid()
    user = _user_name(uid)
    path = user_directory(state_dir, user)
    try:
        sessions = _open_sessions(state_dir)
    except FileNotFoundError:
        raise SessionStateError(
            f"session state {path} is missing; {_create(state_dir, user)}"
        ) from None
    except OSError as error:
        raise SessionStateError(f"session state {path}: {error.strerror}") from None
    try:
        fd = os.open(user, _DIRECTORY, dir_fd=sessions)
    except FileNotFoundError:
        raise SessionStateError(
            f"session state {path} is missing; {_create(state_dir, user)}"
        ) from None
    except OSError as error:  # a symlink (ELOOP), a file (ENOTDIR), someone else's (EACCES)
        replace = "" if error.errno == errno.EACCES else f"rm -f {path} && "
        raise SessionStateError(
            f"session state {path}: {error.strerror}; as root: {replace}{_install(path, user)}"
        ) from None
    finally:
        os.close(sessions)
    info = os.fstat(fd)
    if info.st_uid != uid or info.st_mode & 0o077:
        os.close(fd)
        raise SessionStateError(
            f"session state {path} must belong to {user} alone (mode 0700); "
            f"as root: {_install(path, user)}"
        )
    return fd


def _their_directory(state_dir: str, user: str) -> int | None:
    """As root: `user`'s directory of slots, or None when it does not exist. Never follows a
    symlink; refuses anything but a directory owned by `user`."""
    import pwd  # noqa: PLC0415 - not on the gate's path

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    try:
        sessions = _open_sessions(state_dir)
    except FileNotFoundError:
        return None
    try:
        fd = os.open(user, _DIRECTORY, dir_fd=sessions)
    except FileNotFoundError:
        return None
    except OSError as error:
        path = user_directory(state_dir, user)
        raise SessionStateError(f"session state {path}: {error.strerror}") from None
    finally:
        os.close(sessions)
    if os.fstat(fd).st_uid != entry.pw_uid:
        os.close(fd)
        path = user_directory(state_dir, user)
        raise SessionStateError(f"session state {path} does not belong to {user}")
    return fd


def _user_name(uid: int) -> str:
    import pwd  # noqa: PLC0415 - built in: importing it reads no file

    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
    if "/" in name or name in ("", ".", ".."):
        raise SessionStateError(f"unix user name {name!r} cannot name a directory")
    return name


def _group_name(user: str) -> str:
    """`user`'s primary group, for the fixes the errors print (off the path of a session)."""
    import grp  # noqa: PLC0415
    import pwd  # noqa: PLC0415

    try:
        return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
    except KeyError:
        return user


def _install(path: str, user: str) -> str:
    return f"install -d -m 0700 -o {user} -g {_group_name(user)} {path}"


def _create(state_dir: str, user: str) -> str:
    """The fix for a missing directory, which also brings it back after every reboot."""
    line = tmpfiles_line(state_dir, user, _group_name(user))
    return f"as root: echo '{line}' >> {TMPFILES} && systemd-tmpfiles --create {TMPFILES}"
