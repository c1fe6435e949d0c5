"""Restore a NAR into a new directory, all or nothing.

The archive is unpacked into a private scratch directory (mode 0700) beside the
target while it is validated and hashed; only a complete, valid archive is renamed
into place, with `renameat2(RENAME_NOREPLACE)`. Every entry is created relative to a
directory descriptor this module opened itself, with O_EXCL and O_NOFOLLOW, so no
name in the archive can reach outside the target and no symlink the archive created
is ever followed.

However deep the archive, the descriptors open stay few: the target's parent, one
set aside for clean-up, the scratch directory, the directory being filled (and for
a moment the one above it), the small file being written; and the writer thread's:
at most eight large files it is filling, at most 64 directories it still has large
files to create in (`nar.FileExtent`, whose contents the kernel copies from the
archive's file) and the one file it is creating. Going back up a level reopens `..`
and checks it is the directory it should be.

Any failure (a malformed archive, a full disk, no descriptors left, a file-size
limit, a refused `verify`) removes the scratch directory, again with a bounded number
of descriptors, and ends in one error: `FormatError`/`InvalidInput` (exit 2) for bad
input or a bad target, `EnvironmentFailure` (exit 1) when the machine ran out of
something.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat

from nixwarden.display import escape
from nixwarden.errors import EnvironmentFailure, InvalidInput
from nixwarden.trust import nar, pipeline
from nixwarden.trust.failures import from_os_error

TYPE_CHECKING = False  # not typing's: `nar restore` is measured against nix-store
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_ROOT = "root"  # the archive's root inside the scratch directory
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_RENAME_NOREPLACE = 1
# Files at least this large are written by a second thread (see `_unpack`).
_BACKGROUND_WRITE = 64 << 10
Identity = tuple[int, int]  # (st_dev, st_ino)


def restore(
    stream: nar.Readable,
    target: str | os.PathLike[str],
    *,
    verify: Callable[[nar.NarDigest], None] | None = None,
) -> nar.NarDigest:
    """Unpack the NAR read from `stream` as `target`, which must not exist.

    Returns the archive's hash and size. `verify`, when given, sees them before the
    result is moved into place and may raise to refuse it. On any error nothing is
    left at `target` and the scratch directory is removed.
    """
    digest = _restore(stream, target, verify, hashing=True)
    assert digest is not None
    return digest


def unpack(stream: nar.Readable, target: str | os.PathLike[str]) -> None:
    """`restore` for a caller with no hash to compare: the same checks and guarantees,
    without hashing the archive (as `nix-store --restore` does not)."""
    _restore(stream, target, None, hashing=False)


def _restore(
    stream: nar.Readable,
    target: str | os.PathLike[str],
    verify: Callable[[nar.NarDigest], None] | None,
    *,
    hashing: bool,
) -> nar.NarDigest | None:
    target = os.path.abspath(os.fspath(target))
    parent, name = os.path.split(target)
    try:
        # The caller's own path to the parent may pass through symlinks; from here
        # on everything is relative to this descriptor.
        parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise from_os_error(parent, error) from None
    try:
        return _restore_into(parent_fd, name, target, stream, verify, hashing=hashing)
    except OSError as error:
        raise from_os_error(target, error) from None
    finally:
        os.close(parent_fd)


def _restore_into(
    parent_fd: int,
    name: str,
    target: str,
    stream: nar.Readable,
    verify: Callable[[nar.NarDigest], None] | None,
    *,
    hashing: bool,
) -> nar.NarDigest | None:
    if _exists(name, parent_fd):
        raise InvalidInput(f"{escape(target)}: already exists; restore only creates new paths")
    # Set aside before anything is created, so that clean-up has a descriptor to
    # work with even when the archive used up the rest.
    reserve = os.dup(parent_fd)
    try:
        umask = _current_umask()
        # Nix creates directories 0777 less the umask; a umask that takes the owner's
        # own bits would stop us filling them, so then they get their mode once complete.
        final_mode = None if umask & 0o700 == 0 else 0o777 & ~umask
        scratch = _make_scratch(parent_fd, name)
        try:
            scratch_fd = _open_scratch(parent_fd, scratch)
            try:
                if hashing:
                    with pipeline.BackgroundHasher() as hasher:
                        _unpack(stream, scratch_fd, hasher, final_mode)
                        digest: nar.NarDigest | None = nar.NarDigest.sha256(*hasher.result())
                else:
                    _unpack(stream, scratch_fd, None, final_mode)
                    digest = None
            finally:
                os.close(scratch_fd)
            if verify is not None and digest is not None:
                verify(digest)
            root_fd = -1 if final_mode is None else _open_directory(parent_fd, f"{scratch}/{_ROOT}")
            try:
                _rename_noreplace(parent_fd, f"{scratch}/{_ROOT}", name, target)
                if root_fd >= 0 and final_mode is not None:
                    os.fchmod(root_fd, final_mode)
            finally:
                if root_fd >= 0:
                    os.close(root_fd)
            os.rmdir(scratch, dir_fd=parent_fd)
        except BaseException as failure:
            os.close(reserve)
            reserve = -1
            _clean_up(parent_fd, scratch, target, failure)
            raise
    finally:
        if reserve >= 0:
            os.close(reserve)
    return digest


def _clean_up(parent_fd: int, scratch: str, target: str, failure: BaseException) -> None:
    try:
        _remove_tree(parent_fd, scratch)
    except OSError as error:
        shown = escape(os.path.join(os.path.dirname(target), scratch))
        raise EnvironmentFailure(
            f"{escape(target)}: {_reason(failure)}; and {shown} could not be removed: "
            f"{error.strerror or error}"
        ) from failure


def _reason(failure: BaseException) -> str:
    if isinstance(failure, OSError):
        return failure.strerror or str(failure)
    return str(failure) or type(failure).__name__


def _exists(name: str, parent_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _current_umask() -> int:
    """The umask, read without changing it (Linux ≥ 4.7 shows it in /proc)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", "rb") as status:
        for line in status:
            if line.startswith(b"Umask:"):
                return int(line.split()[1], 8)
    # Only reachable without /proc: read it by setting it; briefly stricter, never looser.
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _make_scratch(parent_fd: int, name: str) -> str:
    stem = os.fsencode(name)[:200].decode("utf-8", "surrogateescape")
    while True:
        scratch = f".{stem}.restore-{os.urandom(6).hex()}"
        try:
            os.mkdir(scratch, 0o700, dir_fd=parent_fd)
        except FileExistsError:
            continue
        return scratch


def _open_scratch(parent_fd: int, scratch: str) -> int:
    """The scratch directory, opened for creating entries, mode 0700 whatever the umask."""
    handle = os.open(
        scratch, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd
    )
    try:
        info = os.fstat(handle)
        if info.st_uid != os.geteuid():
            raise InvalidInput(f"{escape(scratch)}: replaced by another user while restoring")
        if stat.S_IMODE(info.st_mode) != 0o700:  # a umask took some of the owner's bits
            os.chmod(f"/proc/self/fd/{handle}", 0o700)
        return os.open(".", _DIR_FLAGS, dir_fd=handle)
    finally:
        os.close(handle)


def _open_directory(dir_fd: int, name: str) -> int:
    """`name` opened if it is a directory (not through a symlink), else -1."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as error:
        if error.errno in (errno.ENOTDIR, errno.ELOOP):
            return -1
        raise


def _identity(fd: int) -> Identity:
    info = os.fstat(fd)
    return info.st_dev, info.st_ino


def _parent(fd: int, expected: Identity) -> int:
    """The directory above `fd`, checked to be the one we came down from."""
    above = os.open("..", _DIR_FLAGS, dir_fd=fd)
    if _identity(above) != expected:
        os.close(above)
        raise OSError(errno.ESTALE, "a directory moved while it was being restored")
    return above


def _unpack(
    stream: nar.Readable, scratch_fd: int, hasher: nar.Updatable | None, final_mode: int | None
) -> None:
    current = scratch_fd  # the directory entries are created in
    shared = False  # whether the writer thread creates files in `current` too
    # Whether the writer thread may still have files to create: in `current` through a
    # descriptor given up on the way down into a subdirectory, as well as through this one.
    handed_over = False
    levels: list[Identity] = []  # identities of the open directories, root first
    file_fd = -1
    new_directory_mode = 0o777 if final_mode is None else 0o700
    # A second thread writes what costs more than handing it over, while parsing goes
    # on here (write(2) and sendfile(2) run without the GIL): large files whose
    # contents the kernel copies from the archive's file (`FileExtent`), and the
    # contents of large files read from a pipe or socket. Small files are written here.
    background = False
    with pipeline.FileWriter() as writer:

        def let_go(directory: int) -> None:
            """Close `directory` (not the scratch one), or have the writer close it."""
            if directory == scratch_fd:
                return
            if shared:
                writer.release(directory)
            else:
                os.close(directory)

        try:
            for event in nar.parse(stream, hasher=hasher, files=True, direct=True):
                match event:
                    case nar.File(path, executable, data):
                        fd = os.open(
                            path[-1] if path else _ROOT,
                            _FILE_FLAGS,
                            0o777 if executable else 0o666,  # the umask trims these, as for Nix
                            dir_fd=current,
                        )
                        try:
                            if data:
                                pipeline.write_all(fd, data)
                        finally:
                            os.close(fd)
                    case nar.FileExtent(path, executable):
                        if not shared and current != scratch_fd:
                            writer.share()  # the thread closes `current` once done with it
                        shared = handed_over = True
                        writer.create(
                            path[-1] if path else _ROOT,
                            _FILE_FLAGS,
                            0o777 if executable else 0o666,
                            event.copy_to,
                            dir_fd=current,
                        )
                    case nar.FileChunk(data):
                        if background:
                            writer.write(file_fd, data)
                        else:
                            pipeline.write_all(file_fd, data)
                    case nar.FileStart(path, executable, size):
                        name = path[-1] if path else _ROOT
                        mode = 0o777 if executable else 0o666  # the umask trims these, as for Nix
                        background = size >= _BACKGROUND_WRITE
                        if background:
                            file_fd = writer.open(name, _FILE_FLAGS, mode, dir_fd=current)
                        else:
                            file_fd = os.open(name, _FILE_FLAGS, mode, dir_fd=current)
                    case nar.FileEnd():
                        fd, file_fd = file_fd, -1
                        if background:
                            writer.close(fd)
                        else:
                            os.close(fd)
                    case nar.DirectoryStart(path):
                        name = path[-1] if path else _ROOT
                        os.mkdir(name, new_directory_mode, dir_fd=current)
                        if final_mode is not None:
                            # The umask took owner bits from the mode just given; put
                            # them back (the name is ours: nobody else can write here).
                            os.chmod(name, 0o700, dir_fd=current)
                        child = os.open(name, _DIR_FLAGS, dir_fd=current)
                        let_go(current)
                        current, shared = child, False
                        levels.append(_identity(child))
                    case nar.DirectoryEnd():
                        levels.pop()
                        # Up first: a final mode may take away the search bit `..` needs.
                        above = _parent(current, levels[-1]) if levels else scratch_fd
                        try:
                            # (The root's mode waits until it is moved into place: moving
                            # a directory needs write permission on it, for its `..`.)
                            if final_mode is not None and levels:
                                if handed_over:  # the files in it first
                                    writer.drain()
                                    handed_over = False
                                os.fchmod(current, final_mode)
                        finally:
                            let_go(current)
                            current, shared = above, False
                    case nar.Symlink(path, target):
                        name = path[-1] if path else _ROOT
                        os.symlink(target, name, dir_fd=current)
            writer.finish()
        except BaseException:
            writer.cancel()  # its backlog would only be removed again
            raise
        finally:
            if file_fd >= 0:
                if background:
                    writer.close(file_fd)
                else:
                    os.close(file_fd)
            let_go(current)


def _remove_tree(parent_fd: int, name: str) -> None:
    """Remove the directory `name` under `parent_fd` and everything in it.

    Holds at most two descriptors of its own however deep the tree is: it goes down
    one directory at a time and back up through `..`, checking each step up lands
    where it came from. Directories whose mode keeps even their owner out (a
    restrictive umask) are opened up first; nothing here follows a symlink.
    """
    try:
        os.rmdir(name, dir_fd=parent_fd)
        return
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    above_top = _identity(parent_fd)
    fd = _open_to_remove(name, parent_fd)
    path = [(name, _identity(fd))]  # from the top directory down to fd's
    while True:
        child = _clear_files(fd)
        if child is not None:
            child_fd = _open_to_remove(child, fd)
            os.close(fd)
            fd = child_fd
            path.append((child, _identity(fd)))
            continue
        done, _ = path.pop()
        try:
            above = _parent(fd, path[-1][1] if path else above_top)
        finally:
            os.close(fd)
        fd = above
        try:
            os.rmdir(done, dir_fd=fd)
        except BaseException:
            os.close(fd)
            raise
        if not path:
            os.close(fd)
            return


def _open_to_remove(name: str, dir_fd: int) -> int:
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        # Our own directory, restored with a mode that keeps us out; the scratch
        # directory is ours alone, so the name is still the directory we made.
        os.chmod(name, 0o700, dir_fd=dir_fd)
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o700 != 0o700:
            os.fchmod(fd, 0o700)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _clear_files(fd: int) -> str | None:
    """Unlink every non-directory in `fd`'s directory; the name of a subdirectory, if any."""
    while True:
        removed = False
        with os.scandir(fd) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    return entry.name
                os.unlink(entry.name, dir_fd=fd)
                removed = True
        if not removed:
            return None


def _rename_noreplace(parent_fd: int, source: str, name: str, target: str) -> None:
    """rename(2) that fails instead of replacing: an empty directory would be replaced."""
    renameat2 = _renameat2()
    if renameat2 is not None:
        result = renameat2(
            parent_fd, os.fsencode(source), parent_fd, os.fsencode(name), _RENAME_NOREPLACE
        )
        if result == 0:
            return
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise InvalidInput(f"{escape(target)}: already exists; restore only creates new paths")
        if code not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(code, os.strerror(code), target)
    # Without renameat2 (old kernel or file system) the check and rename are two steps.
    if _exists(name, parent_fd):
        raise InvalidInput(f"{escape(target)}: already exists; restore only creates new paths")
    os.rename(source, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)


def _renameat2() -> Any:
    # The C library is already loaded into this process: look the symbol up there
    # rather than searching for the library (which runs ldconfig).
    function = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if function is None:
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function
