"""Restore a NAR into a new directory, all or nothing.

The archive is unpacked into a private temporary directory beside the target while
it is validated; only a complete, valid archive is renamed into place. Every entry is
created relative to a directory descriptor this module opened itself, with O_EXCL and
O_NOFOLLOW, so no name in the archive can reach outside the target and no symlink the
archive created is ever followed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from nixwarden.errors import InvalidInput
from nixwarden.trust import nar

_ROOT = "root"  # the archive's root inside the temporary directory
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def restore(
    stream: nar.Readable,
    target: str | os.PathLike[str],
    *,
    verify: Callable[[nar.NarDigest], None] | None = None,
) -> nar.NarDigest:
    """Unpack the NAR read from `stream` as `target`, which must not exist.

    Returns the archive's hash and size. `verify`, when given, sees them before the
    result is moved into place and may raise to refuse it. On any error nothing is
    left at `target` and the temporary directory is removed.
    """
    target = os.path.abspath(os.fspath(target))
    if os.path.lexists(target):
        raise InvalidInput(f"{target}: already exists; restore only creates new paths")
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        raise InvalidInput(f"{parent}: no such directory")
    scratch = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.restore-", dir=parent)
    try:
        digest = _unpack(stream, scratch)
        if verify is not None:
            verify(digest)
        _rename_noreplace(os.path.join(scratch, _ROOT), target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return digest


def _unpack(stream: nar.Readable, scratch: str) -> nar.NarDigest:
    counter = nar.CountingHasher()
    scratch_fd = os.open(scratch, _DIR_FLAGS)
    directories: list[int] = [scratch_fd]  # descriptors of the open directories, innermost last
    file_fd: int | None = None
    try:
        for event in nar.parse(stream, hasher=counter):
            match event:
                case nar.DirectoryStart(path):
                    name = path[-1] if path else _ROOT.encode()
                    os.mkdir(name, 0o777, dir_fd=directories[-1])
                    directories.append(os.open(name, _DIR_FLAGS, dir_fd=directories[-1]))
                case nar.DirectoryEnd():
                    os.close(directories.pop())
                case nar.FileStart(path, executable, _size):
                    name = path[-1] if path else _ROOT.encode()
                    mode = 0o777 if executable else 0o666  # the umask trims these, as for Nix
                    file_fd = os.open(name, _FILE_FLAGS, mode, dir_fd=directories[-1])
                case nar.FileChunk(data):
                    assert file_fd is not None
                    _write_all(file_fd, data)
                case nar.FileEnd():
                    assert file_fd is not None
                    os.close(file_fd)
                    file_fd = None
                case nar.Symlink(path, target):
                    name = path[-1] if path else _ROOT.encode()
                    os.symlink(target, name, dir_fd=directories[-1])
    finally:
        if file_fd is not None:
            os.close(file_fd)
        for fd in directories:
            with contextlib.suppress(OSError):
                os.close(fd)
    return counter.digest()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _rename_noreplace(source: str, target: str) -> None:
    """rename(2) that fails instead of replacing: an empty directory would be replaced."""
    renameat2 = _renameat2()
    if renameat2 is not None:
        result = renameat2(
            _AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE
        )
        if result == 0:
            return
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise InvalidInput(f"{target}: already exists; restore only creates new paths")
        if code not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(code, os.strerror(code), target)
    # Without renameat2 (old kernel or file system) the check and rename are two steps.
    if os.path.lexists(target):
        raise InvalidInput(f"{target}: already exists; restore only creates new paths")
    os.rename(source, target)


def _renameat2() -> Any:
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    libc = ctypes.CDLL(library, use_errno=True)
    function = getattr(libc, "renameat2", None)
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
