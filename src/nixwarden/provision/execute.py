"""The one place provisioning changes the machine: each step checked, then made true.

A step already true is skipped, so a command run twice changes nothing the second time.
Steps run in the plan's order and each leaves the machine in a state the next run
finishes: files are written whole (temporary file in the same directory, content,
fsync, owner and mode, rename, directory fsync), directories are made with their final
mode or a narrower one, users and groups by the shadow tools, which lock their files.

`hook`, when given, is called with a label at every point between two changes (before
and after each step, and inside each file write); the test suite stops a run there with
SIGKILL and checks what that instant leaves behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import os
import pwd
import signal
import stat
import struct
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO

from nixwarden import config as config_module
from nixwarden import files, process
from nixwarden.display import escape
from nixwarden.errors import CommandFailed, InvalidInput, Refused
from nixwarden.gate import compiled
from nixwarden.provision import steps
from nixwarden.provision.system import run
from nixwarden.tenants import cli as tenants_cli
from nixwarden.tenants import tree

Hook = Callable[[str], None]

# linux/fs.h: the inode flags ioctl (an int, whatever _IOR's size says) and FS_APPEND_FL.
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_APPEND_FL = 0x20
_UNSUPPORTED = (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS)
MAX_COMPARED = 4 << 20  # a file we own is never larger; anything larger differs
NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class Executor:
    def __init__(self, out: TextIO, *, dry_run: bool = False, hook: Hook | None = None) -> None:
        self.out = out
        self.dry_run = dry_run
        self.hook = hook

    def _mark(self, label: str) -> None:
        if self.hook is not None:
            self.hook(label)

    def run(self, plan: Sequence[steps.Step]) -> int:
        """Make every step true; returns how many changed something (0: "nothing to do")."""
        if not self.dry_run:
            for directory, name in sorted(_written(plan)):
                sweep(directory, name)
        changed = 0
        for index, step in enumerate(plan):
            kind = type(step).__name__
            if isinstance(step, steps.CHECKS):
                if not self.dry_run:
                    check(step)
                continue
            if is_done(step):
                continue
            changed += 1
            if self.dry_run:
                print(f"would: {step.describe()}", file=self.out)
                continue
            prefix = f"{index}:{kind}"
            self._mark(f"{prefix}:before")

            def inner(label: str, prefix: str = prefix) -> None:
                self._mark(f"{prefix}:{label}")

            apply(step, inner)
            self._mark(f"{index}:{kind}:after")
            print(f"done: {step.describe()}", file=self.out)
            self.out.flush()
        if not changed:
            print("nothing to do", file=self.out)
        return changed


def _written(plan: Sequence[steps.Step]) -> set[tuple[str, str]]:
    """(directory, name) of every file the plan may write whole."""
    paths: list[str] = []
    for step in plan:
        match step:
            case steps.File(path) | steps.AuditLog(path):
                paths.append(path)
            case steps.Compiled(config):
                paths.append(compiled.path_for(config))
            case steps.SshdReload(stamp=stamp):
                paths.append(stamp)
            case steps.Directory(path):
                paths.append(path)
    return {os.path.split(path) for path in paths}


def sweep(directory: str, name: str) -> None:
    """Remove what a write of `name` that was killed half-way left: its temporary files
    (`files.write_atomic_at` names them `.NAME.` and 12 hex digits). Provisioning holds its
    lock, so no other write of ours is under way."""
    try:
        entries = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return
    prefix = f".{name}."
    for entry in entries:
        suffix = entry[len(prefix) :]
        if (
            entry.startswith(prefix)
            and len(suffix) == 12
            and all(c in "0123456789abcdef" for c in suffix)
        ):
            leftover = os.path.join(directory, entry)
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISDIR(os.lstat(leftover).st_mode):
                    os.rmdir(leftover)  # an empty directory being made (never one with files)
                else:
                    os.unlink(leftover)


@contextlib.contextmanager
def provisioning_lock(path: str, wait: float = 120.0) -> Iterator[None]:
    """One provisioning command at a time on the files around `path`: an exclusive flock on
    the nearest existing directory above it."""
    directory = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(directory):
        directory = os.path.dirname(directory)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Refused(
                        f"another nixwarden provisioning command holds {directory}; try again"
                    ) from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


# --- names -----------------------------------------------------------------------------------


def uid_of(name: str | None) -> int:
    return os.geteuid() if name is None else _lookup(pwd.getpwnam, name, "unix user")


def gid_of(name: str | None) -> int:
    return os.getegid() if name is None else _lookup(grp.getgrnam, name, "group")


def _lookup(
    find: Callable[[str], pwd.struct_passwd | grp.struct_group], name: str, what: str
) -> int:
    try:
        entry = find(name)
    except KeyError:
        raise Refused(f"no {what} {escape(name)}") from None
    return entry.pw_uid if isinstance(entry, pwd.struct_passwd) else entry.gr_gid


def _ids(owner: str | None, group: str | None) -> tuple[int, int] | None:
    """(uid, gid), or None when a name does not exist yet (so the step is not done)."""
    try:
        return uid_of(owner), gid_of(group)
    except Refused:
        return None


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def is_member(user: str, group: str) -> bool:
    try:
        entry = grp.getgrnam(group)
    except KeyError:
        return False
    if user in entry.gr_mem:
        return True
    try:
        return pwd.getpwnam(user).pw_gid == entry.gr_gid
    except KeyError:
        return False


# --- done? -----------------------------------------------------------------------------------


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _attributes_match(info: os.stat_result, mode: int, ids: tuple[int, int] | None) -> bool:
    return (
        ids is not None
        and stat.S_IMODE(info.st_mode) == mode
        and (
            info.st_uid,
            info.st_gid,
        )
        == ids
    )


def read_file(path: str, limit: int = MAX_COMPARED) -> bytes | None:
    """A regular file's bytes (never through a symlink, never blocking on a FIFO), at most
    `limit` + 1 of them; None when there is no such regular file."""
    try:
        fd = os.open(path, NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        if error.errno == errno.ELOOP:
            return None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return files.read_at_most(fd, limit + 1)
    finally:
        os.close(fd)


def _is(
    path: str, kind: Callable[[int], bool], attributes: tuple[int, str | None, str | None] | None
) -> bool:
    """`path` exists as that kind (never followed), with (mode, owner, group) if given."""
    info = _lstat(path)
    if info is None or not kind(info.st_mode):
        return False
    if attributes is None:
        return True
    mode, owner, group = attributes
    return _attributes_match(info, mode, _ids(owner, group))


def is_done(step: steps.Step) -> bool:
    match step:
        case steps.Directory(path, mode, owner, group, exact):
            return _is(path, stat.S_ISDIR, (mode, owner, group) if exact else None)
        case steps.File(path, content, mode, owner, group):
            return (
                _is(path, stat.S_ISREG, (mode, owner, group))
                and read_file(path, len(content)) == content
            )
        case steps.Absent(path):
            return _lstat(path) is None
        case steps.AuditLog(path, group, mode):
            return (
                _is(path, stat.S_ISREG, (mode, steps.ROOT, group))
                and append_only(path) is not False
            )
        case steps.Group(name):
            try:
                grp.getgrnam(name)
            except KeyError:
                return False
            return True
        case steps.User(name):
            return user_exists(name)
        case steps.Membership(user, group, member):
            return is_member(user, group) == member
        case steps.UserAbsent(name):
            return not user_exists(name)
        case steps.TenantDirectory(config_path, principal, user):
            root = config_module.load(config_path, from_environment=False).tenants.root
            info = _lstat(os.path.join(root, principal))
            return (
                info is not None
                and stat.S_ISDIR(info.st_mode)
                and user_exists(user)
                and info.st_uid == uid_of(user)
            )
        case steps.TenantAbsent(config_path, principal):
            root = config_module.load(config_path, from_environment=False).tenants.root
            return _lstat(os.path.join(root, principal)) is None
        case steps.SessionDirectory(_tmpfiles, path, mode, owner, group):
            return _is(path, stat.S_ISDIR, (mode, owner, group))
        case steps.SessionDirectoryAbsent(path):
            return _lstat(path) is None
        case steps.Compiled(path, content):
            return read_file(path, len(content)) == content and compiled.read(path) is not None
        case steps.SshdReload():
            return _sshd_has_read(step)
        case steps.SshdSettingsFor():
            return True
    raise AssertionError(f"unknown step {step!r}")


# --- apply -----------------------------------------------------------------------------------


def apply(step: steps.Step, mark: Hook) -> None:
    match step:
        case steps.Directory(path, mode, owner, group):
            _make_directory(path, mode, (uid_of(owner), gid_of(group)), mark)
        case steps.File(path, content, mode, owner, group, sshd_check):
            if sshd_check is not None:
                check_sshd_candidate(sshd_check, content)
            _write(path, content, mode, (uid_of(owner), gid_of(group)), mark)
        case steps.Absent(path):
            directory, name = os.path.split(path)
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                files.remove_at(fd, name)
            finally:
                os.close(fd)
        case steps.AuditLog(path, group, mode):
            _audit_log(path, (0, gid_of(group)), mode, mark)
        case steps.Group(name):
            run("groupadd", "--system", name, ok=(0, 9))  # 9: it exists (made meanwhile)
        case steps.User(name, comment, shell, groups):
            run(
                "useradd", "--create-home", "--user-group", "--shell", shell,
                "--comment", comment, "--password", "*",
                *(("--groups", ",".join(groups)) if groups else ()), name,
            )  # fmt: skip
        case steps.Membership(user, group, member):
            if member:
                run("usermod", "--append", "--groups", group, user)
            else:
                run("gpasswd", "--delete", user, group, ok=(0, 3))  # 3: not a member
        case steps.UserAbsent(name):
            _remove_user(name)
        case steps.TenantDirectory(config_path, principal, user):
            config = config_module.load(config_path, from_environment=False)
            _remove_interrupted_tenant(config.tenants.root, principal)
            tenants_cli.ensure_tenant(config, principal, user)
        case steps.TenantAbsent(config_path, principal):
            config = config_module.load(config_path, from_environment=False)
            tenants_cli.remove_tenant_directory(config, principal)
        case steps.SessionDirectory(tmpfiles):
            run("systemd-tmpfiles", "--create", tmpfiles)
            if not is_done(step):
                raise CommandFailed(
                    f"systemd-tmpfiles --create {tmpfiles} did not make {step.path}"
                )
        case steps.SessionDirectoryAbsent(path):
            _remove_session_directory(path)
        case steps.Compiled(path):
            compiled.write(config_module.load(path, from_environment=False))
        case steps.SshdReload():
            _reload_sshd(step, mark)
        case steps.SshdSettingsFor():
            check(step)
        case _:
            raise AssertionError(f"unknown step {step!r}")


def _make_directory(path: str, mode: int, ids: tuple[int, int], mark: Hook) -> None:
    """A missing directory is made whole: under a temporary name with its owner and mode,
    then renamed into place, so a run killed half-way never leaves one half-made (with
    a narrower mode, say) for the next run to take as done."""
    parent, name = os.path.split(path)
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o755, exist_ok=True)
    if _lstat(path) is None:
        temporary = os.path.join(parent, f".{name}.{os.urandom(6).hex()}")
        os.mkdir(temporary, 0o700)
        try:
            mark("made")
            _set_directory(temporary, mode, ids)
            mark("ready")
            os.rename(temporary, path)  # fails if it appeared meanwhile: fixed below
        except OSError:
            with contextlib.suppress(OSError):
                os.rmdir(temporary)
        _fsync_directory(parent)
        mark("renamed")
    _set_directory(path, mode, ids)


def _set_directory(path: str, mode: int, ids: tuple[int, int]) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        raise Refused(f"{path}: not a directory ({error.strerror})") from None
    try:
        os.fchown(fd, *ids)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: str, content: bytes, mode: int, ids: tuple[int, int], mark: Hook) -> None:
    directory, name = os.path.split(path)
    info = _lstat(path)
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise Refused(f"{path}: exists and is not a regular file; look at it and remove it")
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        files.write_atomic_at(fd, name, content, mode=mode, owner=ids, hook=mark)
    finally:
        os.close(fd)


# --- the audit log ---------------------------------------------------------------------------


def append_only(path: str) -> bool | None:
    """Whether the file has the append-only attribute; None where the filesystem has none."""
    try:
        fd = os.open(path, NOFOLLOW)
    except OSError:
        return False
    try:
        return _get_append(fd)
    finally:
        os.close(fd)


def _get_append(fd: int) -> bool | None:
    try:
        raw = fcntl.ioctl(fd, FS_IOC_GETFLAGS, bytes(8))
    except OSError as error:
        if error.errno in _UNSUPPORTED:
            return None
        raise
    return bool(struct.unpack_from("=i", raw)[0] & FS_APPEND_FL)


def set_append_only(fd: int, on: bool) -> None:
    """Set or clear the append-only attribute (needs CAP_LINUX_IMMUTABLE); a filesystem
    without the attribute is left as it is."""
    try:
        raw = fcntl.ioctl(fd, FS_IOC_GETFLAGS, bytes(8))
    except OSError as error:
        if error.errno in _UNSUPPORTED:
            return
        raise
    flags = struct.unpack_from("=i", raw)[0]
    wanted = flags | FS_APPEND_FL if on else flags & ~FS_APPEND_FL
    if wanted != flags:
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("=i", wanted) + bytes(4))


def _audit_log(path: str, ids: tuple[int, int], mode: int, mark: Hook) -> None:
    directory, name = os.path.split(path)
    if _lstat(path) is None:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            # replace=False: a log that appears meanwhile is kept, never replaced.
            files.write_atomic_at(dir_fd, name, b"", mode=mode, owner=ids, replace=False, hook=mark)
        except FileExistsError:
            pass
        finally:
            os.close(dir_fd)
    try:
        fd = os.open(path, NOFOLLOW | os.O_APPEND)
    except OSError as error:
        raise Refused(f"{path}: {error.strerror}; it must be a regular file") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Refused(f"{path}: not a regular file; look at it and remove it")
        if not _attributes_match(info, mode, ids):
            set_append_only(fd, False)  # owner and mode cannot change while it is set
            mark("unlocked")
            os.fchown(fd, *ids)
            os.fchmod(fd, mode)
        set_append_only(fd, True)
    finally:
        os.close(fd)


# --- users -----------------------------------------------------------------------------------


def _remove_user(name: str) -> None:
    """No key of the user is left (revoke removes those first), so no session starts anew;
    the running ones are killed, then the user goes with its home. `userdel` refuses a
    user that still has processes, zombies included, which nothing can kill: once every
    live one was, `--force` removes it all the same."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return
    if entry.pw_uid == 0:
        raise Refused(f"unix user {name} is root; not removing it")
    process.kill_all_of(entry.pw_uid)
    run("userdel", "--remove", name, check=False)
    if user_exists(name):  # exit 8: "currently used by a process"
        process.kill_all_of(entry.pw_uid)
        run("userdel", "--force", "--remove", name, ok=(0, 12))  # 12: its home was gone
    if user_exists(name):
        raise CommandFailed(f"userdel --remove {name}: the user is still there")


def _remove_interrupted_tenant(root: str, name: str) -> None:
    """A tenant directory still root's is one whose creation was cut short (root fills it
    privately and gives it away last; nobody else may create entries in the root): it is
    removed and made again, so nothing half-written of it stays."""
    _remove_tree(root, name, only_roots=True)


# --- session state ---------------------------------------------------------------------------


def _remove_session_directory(path: str) -> None:
    """The directory holds what its user made: it is emptied through descriptors, never
    following a name in it (tenants.tree); a file or symlink in its place is unlinked."""
    _remove_tree(*os.path.split(path), only_roots=False)


def _remove_tree(parent_path: str, name: str, *, only_roots: bool) -> None:
    """Remove directory `name` of `parent_path` and all in it, by descriptor. `only_roots`:
    only a directory of root's in a directory of root's, and nothing else in its place."""
    try:
        parent = os.open(parent_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, dir_fd=parent)
        except FileNotFoundError:
            return
        except OSError:  # not a directory: a file or a symlink in its place
            if not only_roots:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=parent)
            return
        try:
            if only_roots and (os.fstat(fd).st_uid != 0 or os.fstat(parent).st_uid != 0):
                return
            tree.remove_contents(fd, deadline=time.monotonic() + 60)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=parent)
    finally:
        os.close(parent)


# --- sshd ------------------------------------------------------------------------------------


def check_sshd_candidate(main_config: str, content: bytes) -> None:
    """`sshd -t` on the main config with the candidate drop-in included first, as it will be,
    before the drop-in is put in place."""
    with tempfile.TemporaryDirectory(prefix="nixwarden-sshd-") as scratch:
        candidate = os.path.join(scratch, "candidate.conf")
        wrapper = os.path.join(scratch, "sshd_config")
        with open(candidate, "wb") as handle:
            handle.write(content)
        with open(wrapper, "w", encoding="utf-8") as handle:
            handle.write(f"Include {candidate}\nInclude {main_config}\n")
        try:
            run("sshd", "-t", "-f", wrapper)
        except CommandFailed as error:
            raise InvalidInput(f"sshd refuses the new drop-in (nothing changed): {error}") from None


def _pid(pid_file: str) -> int | None:
    """sshd's pid, when the pid file names a running sshd."""
    data = read_file(pid_file, 64)
    if data is None or not data.strip().isdigit():
        return None
    pid = int(data.strip())
    try:
        with open(f"/proc/{pid}/comm", "rb") as handle:
            if handle.read().strip() != b"sshd":
                return None
    except OSError:
        return None
    return pid


def _start_time(pid: int) -> float | None:
    """When process `pid` started, in seconds since the epoch."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        with open("/proc/stat", "rb") as handle:
            boot = next(int(line.split()[1]) for line in handle if line.startswith(b"btime "))
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return boot + int(fields[19]) / ticks


def _stamp(pid: int, digest: str) -> bytes:
    return f"{pid} {_start_time(pid)} {digest}\n".encode()


def _sshd_has_read(step: steps.SshdReload) -> bool:
    pid = _pid(step.pid_file)
    if pid is None:
        return True  # not running: it reads the drop-in when it starts
    if read_file(step.stamp, 256) == _stamp(pid, step.digest):
        return True
    started = _start_time(pid)
    info = _lstat(step.dropin)
    return (
        started is not None
        and info is not None
        and info.st_mtime < started - 1  # whole seconds: /proc/stat's btime is rounded
        and read_file(step.dropin, len(step.dropin_content)) == step.dropin_content
    )


def _reload_sshd(step: steps.SshdReload, mark: Hook) -> None:
    pid = _pid(step.pid_file)
    if pid is None:
        return
    os.kill(pid, signal.SIGHUP)  # as `systemctl reload ssh` does, after our `sshd -t`
    mark("signalled")
    _write(step.stamp, _stamp(pid, step.digest), 0o644, (0, 0), mark)


def effective_sshd(sshd_config: str, user: str) -> dict[str, str]:
    """What sshd applies to a connection of `user` (`sshd -T -C`), keyword → value."""
    spec = f"user={user},host=nixwarden-check,addr=127.0.0.1,laddr=127.0.0.1,lport=22"
    output = run("sshd", "-T", "-f", sshd_config, "-C", spec)
    settings: dict[str, str] = {}
    for line in output.decode("utf-8", "replace").splitlines():
        keyword, _, value = line.partition(" ")
        settings.setdefault(keyword.lower(), value)
    return settings


def check(step: steps.SshdSettingsFor) -> None:
    settings = effective_sshd(step.sshd_config, step.user)
    wrong = [
        f"{keyword} is {settings.get(keyword, 'unset')}, not {value}"
        for keyword, value in step.expected
        if settings.get(keyword) != value
    ]
    if wrong:
        raise Refused(
            f"sshd does not give {step.user} nixwarden's settings ({'; '.join(wrong)}): does "
            f"{step.sshd_config} Include the drop-in? Nothing was made live; fix it and run again"
        )
